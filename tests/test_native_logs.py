"""twotower/native_logs.py: C++ log lines written straight to file descriptor 2 stay off the terminal, the
project's own lines do not (a subprocess: only there is descriptor 2 its own)."""

import subprocess
import sys

from helpers import ROOT

# The graph optimiser's warning that an attention layer's first run printed in `train` and `export`
PROBE = """
import contextlib, os, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import tensorflow as tf
from twotower.native_logs import native_stderr_to_debug

@tf.function(input_signature=[tf.TensorSpec(None, tf.float32)])
def attend(x):
    return tf.matmul(tf.nn.softmax(x), x)

with native_stderr_to_debug() if sys.argv[1] == "wrapped" else contextlib.nullcontext():
    attend(tf.ones([2, 2]))
    print("a line of our own", file=sys.stderr)
"""


def stderr_of(mode: str) -> list[str]:
    done = subprocess.run([sys.executable, "-c", PROBE, mode], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, check=True)
    return done.stderr.splitlines()


def test_native_warnings_go_to_the_debug_log_and_our_lines_stay():
    from twotower.native_logs import NATIVE_LINE

    bare, wrapped = stderr_of("bare"), stderr_of("wrapped")
    assert any(NATIVE_LINE.match(line) and "Softmax" in line for line in bare), bare   # the probe does provoke it
    assert wrapped == ["a line of our own"]

"""TensorFlow's and ScaNN's C++ log lines, kept off the user's terminal unless they asked for debug output.

Why it exists: building a ScaNN searcher makes its C++ code (absl logging) print a dozen ``I0000 ...
partitioner_factory_base.cc`` lines per configuration tried, and TensorFlow's graph optimiser warns ``W0000 ...
op_level_cost_estimator.cc] Error in PredictCost() for the op: op: "Softmax"`` the first time a function with an
attention layer runs, straight to file descriptor 2, where neither Python's logging nor TF_CPP_MIN_LOG_LEVEL
reaches. A standard-library leaf, so that training and export can both use it. ``native_stderr_to_debug`` points
descriptor 2 at a temporary file for the duration of a block, then passes those native lines to the ``twotower``
debug log (``-v`` shows them) and writes anything else back to stderr unchanged, so no message of the project's own
is lost.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
from collections.abc import Iterator

log = logging.getLogger("twotower.native")
# absl's "I0000 00:00:1796181857.369179   20241 file.cc:58] ..." and TF's "2026-12-02 03:24:17.32: E file.cc:51] ..."
NATIVE_LINE = re.compile(r"^([IWEF]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ \S+:\d+\]|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: "
                         r"[IWEF] \S+:\d+\]|WARNING: All log messages before absl::InitializeLog)")


@contextlib.contextmanager
def native_stderr_to_debug() -> Iterator[None]:
    """Within the block, C++ log lines on stderr go to the debug log; every other line still reaches stderr."""
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:          # no descriptor 2 (a detached process): nothing to keep quiet
        yield
        return
    with tempfile.TemporaryFile(mode="w+b") as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in captured.read().decode("utf-8", "replace").splitlines():
                if NATIVE_LINE.match(line):
                    log.debug("%s", line)
                else:
                    print(line, file=sys.stderr)

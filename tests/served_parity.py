"""The tests' side of served = evaluated (export/parity.py): an export asked in a fresh process.

Why it exists: export/parity.py compares an export's answers with the evaluated model; the tests must get those
answers from a process that never imported the project's code, as a serving process would, and several exports
share one such process (one TensorFlow import for all).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from helpers import ROOT


def probe_versions(jobs: Sequence[tuple[Path, dict]], folder: Path) -> list[dict]:
    """Runs each (version, requests) in ONE fresh process that imports only TensorFlow, TF Text and ScaNN
    (tests/savedmodel_probe.py); returns each version's outputs as {"request/output": array}."""
    arguments, outs = [], []
    for number, (version, requests) in enumerate(jobs):
        spec, out = folder / f"requests-{number}.json", folder / f"out-{number}.npz"
        spec.write_text(json.dumps(requests), encoding="utf-8")
        arguments += [str(version), str(spec), str(out)]
        outs.append(out)
    result = subprocess.run([sys.executable, str(ROOT / "tests" / "savedmodel_probe.py"), *arguments],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    answers = []
    for out in outs:
        with np.load(out, allow_pickle=True) as data:
            answers.append({key: data[key] for key in data.files})
    return answers


def assert_served_equals_evaluated(expected, outputs: dict, k: int) -> None:
    from export.parity import differences

    found = differences(expected, outputs, k)
    assert not found, "\n".join(found[:10])

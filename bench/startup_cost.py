"""What a short run costs before it learns anything: CPU and wall seconds of `train` (one epoch), `export` and
the evaluated sample of a tiny smoke-config run, mostly graph tracing and SavedModel writing.

Usage: python bench/startup_cost.py [--repo PATH] [--work /tmp/startup-cost] [--runs N] [--set KEY=VALUE ...]

Why it exists: the test suite trains and exports about twenty such runs (tests/test_whole_way.py), and a user's
first `train` waits through the same tracing; this is the number that moves when tracing changes. ``--repo``
measures another checkout (e.g. a git worktree of an older commit) with this interpreter, for a before/after in
one sitting. ``--runs N`` trains and exports N identical runs in the one process (the first pays TensorFlow's
first-use costs and fills the text cache; the later ones are what each further run of a session or of the test
suite costs). Prints one line per phase; CPU seconds (every thread of the process) are steadier than wall seconds
on a shared machine.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
FAST = ["training.epochs=1", "training.batch_size=128", "model.max_seq_len=32", "training.early_stopping_patience=10"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=ROOT, help="the checkout to measure (default: this one)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/startup-cost"))
    parser.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE",
                        help="a config override on configs/smoke.yaml (repeatable)")
    parser.add_argument("--runs", type=int, default=1, help="identical runs trained and exported in this process")
    args = parser.parse_args()
    repo = args.repo.resolve()
    sys.path.insert(0, str(repo))
    os.chdir(repo)
    from twotower.cli import main as cli

    shutil.rmtree(args.work, ignore_errors=True)
    world = args.work / "world"
    if cli(["-q", "generate", "--out", str(world), "--users", "200", "--items", "150", "--seed", "3"]):
        sys.exit("generate failed")
    sets = [item for override in [*args.overrides, *FAST] for item in ("--set", override)]
    for number in range(1, args.runs + 1):
        run = args.work / ("run" if args.runs == 1 else f"run-{number}")
        phases = {
            "train": ["-q", "train", "--config", "configs/smoke.yaml", *sets, "--set", f"data.path={world}",
                      "--set", f"training.text_cache_dir={args.work / 'cache'}", "--run-dir", str(run)],
            "export": ["-q", "export", "--run-dir", str(run), "--base-path", str(run.with_name(f"{run.name}-models")),
                       "--index", "brute-force", "--k", "10"],
        }
        for name, argv in phases.items():
            cpu, wall = time.process_time(), time.time()
            if cli(argv):
                sys.exit(f"{name} failed")
            label = name if args.runs == 1 else f"run {number} {name}"
            print(f"{label}: {time.process_time() - cpu:.1f} s CPU, {time.time() - wall:.1f} s wall", flush=True)


if __name__ == "__main__":
    main()

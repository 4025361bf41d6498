"""The ``twotower`` command line: one entry point for every stage.

Bad input (the project's own config, data, export and serving errors, and a path of the user's that cannot be
read or written) ends in one ``error: ...`` line naming the file, row, field or key, and exit status 2. Anything
else is a bug: one ``internal error`` line and exit status 1.
Never a traceback, unless TWOTOWER_DEBUG=1 asks for one.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")


def _library_log_levels(verbose: bool) -> None:
    """TensorFlow's C++ start-up lines (a failed cuInit on a machine without a GPU, oneDNN notes) and
    Transformers' deprecation notice are not for users; ``-v`` shows them. Read by TensorFlow at its first
    import, which every command defers until it runs; a value already in the environment wins. This is the one
    place that sets it: a package that set it on import would hand its value to every subprocess."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0" if verbose else "3")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "info" if verbose else "error")


def _generate(args: argparse.Namespace) -> int:
    from ingest.generate import generate_world

    optional = {key: value for key, value in (("days", args.days), ("chinese_share", args.chinese_share))
                if value is not None}   # unset: the generator's own defaults
    world = generate_world(args.out, users=args.users, items=args.items, seed=args.seed,
                           progress=not args.quiet, **optional)
    print(f"wrote {args.out}: {world['counts']}" if "counts" in world else f"wrote {args.out}")
    return 0


def _train(args: argparse.Namespace) -> int:
    from training.config import load_config
    from training.run import RunDir, RunDirError, setup_logging
    from training.trainer import train

    run = RunDir(args.run_dir)
    overrides = [*args.set, *([f"training.warm_start_from={args.warm_start_from}"] if args.warm_start_from else [])]
    config = load_config(args.config, overrides) if args.config or overrides else None
    if config is None and not run.exists():
        raise RunDirError(f"{run.path} holds no run to resume; give --config")
    created = not run.path.exists()
    setup_logging(run.log, args.verbose)
    train(config, run, progress=not args.quiet, created=created)
    print(f"run written to {run.path} (metrics: {run.metrics})")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from training.run import RunDir, RunDirError, setup_logging
    from training.trainer import evaluate_run

    run = RunDir(args.run_dir)
    if not run.exists():
        raise RunDirError(f"{run.path} is not a run directory (no config.yaml); train one first")
    setup_logging(run.log, args.verbose)
    evaluate_run(run, tuple(args.split), progress=not args.quiet)
    print(f"metrics written to {run.metrics}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from export.writer import export_run
    from training.run import setup_logging

    setup_logging(None, args.verbose)
    print(export_run(args.run_dir, args.base_path, index=args.index, k=args.k, target_recall=args.target_recall))
    return 0


def _encoder_export_hub(args: argparse.Namespace) -> int:
    from towers.text_encoder import write_hub_pair

    print(write_hub_pair(args.encoder, args.out).directory)
    return 0


def _index_add(args: argparse.Namespace) -> int:
    from export.add_items import add_items
    from training.run import setup_logging

    setup_logging(None, args.verbose)
    print(add_items(args.base_path, args.items, target_recall=args.target_recall, progress=not args.quiet))
    return 0


def _inspect(args: argparse.Namespace) -> int:
    from export.inspect import inspect

    print(inspect(args.path, smoke=not args.no_smoke))
    return 0


def _query(args: argparse.Namespace) -> int:
    from serving.query import run

    return run(args)


def _submit(args: argparse.Namespace) -> int:
    from jobs.submit import manage, submit
    from training.run import setup_logging

    setup_logging(None, args.verbose)
    actions = [(name, job_id) for name, job_id in (("status", args.status), ("logs", args.logs),
                                                     ("stop", args.stop)) if job_id]
    if actions:
        return manage(actions[0][0], actions[0][1], args.address)
    if not args.job:
        from training.config import ConfigError

        raise ConfigError("submit: give a job file (JOB.yaml), or --status/--logs/--stop JOB_ID")
    return submit(args.job, args.target, args.workers, args.address, args.out, args.apply, wait=not args.no_wait)


def _prepare_shards(args: argparse.Namespace) -> int:
    from training.config import load_config
    from training.run import setup_logging
    from training.shard_writer import write_shards

    setup_logging(None, args.verbose)
    summary = write_shards(load_config(args.config, args.set), args.out, args.shards, progress=not args.quiet)
    print(f"wrote {summary['shards']} shard(s), {summary['examples']} training examples to {args.out}")
    return 0


def _checked(parse: Callable[[str], float], ok: Callable[[float], bool], what: str) -> Callable[[str], float]:
    """An argparse type: ``parse(text)`` where ``ok`` holds, else a usage error naming the flag and ``what``."""
    def convert(text: str):
        try:
            value = parse(text)
        except ValueError:
            value = None
        if value is None or not ok(value):
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
        return value

    return convert


_positive = _checked(int, lambda value: value >= 1, "a positive integer")
_at_least_ten = _checked(int, lambda value: value >= 10, "an integer of at least 10")   # generate --days
_share = _checked(float, lambda value: 0.0 <= value <= 1.0, "a number from 0 to 1")


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="debug logging")
    common.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="no progress bars")
    parser = argparse.ArgumentParser(prog="twotower", description=__doc__.splitlines()[0], parents=[common])
    commands = parser.add_subparsers(dest="command", required=True)
    add = lambda name, **kw: commands.add_parser(name, parents=[common], **kw)

    generate = add("generate", help="write the embedded synthetic shop (no download)")
    generate.add_argument("--out", required=True, help="directory to write items/users/interactions into")
    generate.add_argument("--users", type=_positive, default=2000)
    generate.add_argument("--items", type=_positive, default=1500)
    generate.add_argument("--seed", type=int, default=0)
    generate.add_argument("--days", type=_at_least_ten, help="length of the world's log in days (default 180)")
    generate.add_argument("--chinese-share", type=_share,
                          help="share of items and users written in Chinese, 0 to 1 (default 0.15)")
    generate.set_defaults(func=_generate)

    train = add("train", help="train (or resume) a run")
    train.add_argument("--config", help="YAML config (configs/*.yaml); omit to resume an existing --run-dir")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config key, e.g. --set training.epochs=3 (repeatable)")
    train.add_argument("--run-dir", required=True, help="where checkpoints, logs and metrics go")
    train.add_argument("--warm-start-from", metavar="RUN",
                       help="start from a finished run's weights (same model shape): ids it knew keep their "
                            "embeddings, new ids start as its unknown-id row (= --set training.warm_start_from=RUN)")
    train.set_defaults(func=_train)

    evaluate = add("evaluate", help="full-catalogue ranking metrics of a run")
    evaluate.add_argument("--run-dir", required=True)
    evaluate.add_argument("--split", choices=("valid", "test"), action="append",
                          help="split(s) to evaluate (default: test)")
    evaluate.set_defaults(func=_evaluate)

    export = add("export", help="write a run as the next TF Serving version (SavedModel + index)")
    export.add_argument("--run-dir", required=True)
    export.add_argument("--base-path", required=True, help="TF Serving base path, e.g. models/shop")
    export.add_argument("--index", choices=("scann", "brute-force"), default="scann",
                        help="scann (default; needs ScaNN ops to load) or brute-force (stock TF Serving loads it)")
    export.add_argument("--k", type=int, default=100, help="items returned per request (default 100)")
    export.add_argument("--target-recall", type=float, default=0.95,
                        help="ScaNN is tuned to this recall@K against brute force on real queries (default 0.95; "
                             "1.0 asks for an exact search)")
    export.set_defaults(func=_export)

    index = add("index", help="change an exported model's catalogue without retraining")
    index_commands = index.add_subparsers(dest="index_command", required=True)
    index_add = index_commands.add_parser("add", parents=[common],
                                          help="embed new items and write the next version with them in the index")
    index_add.add_argument("--base-path", required=True, help="TF Serving base path; its newest version is grown")
    index_add.add_argument("--items", required=True,
                           help="new items: CSV/TSV/Parquet/JSONL with item_id, title [, description, category, "
                                "brand, price]")
    index_add.add_argument("--target-recall", type=float, default=0.95,
                           help="ScaNN is re-tuned to this recall@K against brute force (default 0.95)")
    index_add.set_defaults(func=_index_add)

    encoder = add("encoder", help="text encoders in other formats")
    encoder_commands = encoder.add_subparsers(dest="encoder_command", required=True)
    export_hub = encoder_commands.add_parser("export-hub", parents=[common],
                                             help="write an encoder as a TF Hub BERT pair (preprocess/, encoder/)")
    export_hub.add_argument("--encoder", required=True,
                            help="minilm, a Transformers BERT directory, or a run's tiny encoder (RUN/encoder)")
    export_hub.add_argument("--out", required=True, help="a new directory; use it as model.encoder: hub:DIR")
    export_hub.set_defaults(func=_encoder_export_hub)

    inspect = add("inspect", help="signatures, custom ops, model card and a smoke query of an export")
    inspect.add_argument("path", help="a base path (its newest version) or a version directory")
    inspect.add_argument("--no-smoke", action="store_true", help="skip the smoke query")
    inspect.set_defaults(func=_inspect)

    submit = add("submit", help="run a training job on local workers, a Ray cluster or Kubernetes")
    submit.add_argument("job", nargs="?", help="job file (docs/jobs.md; examples in jobs/examples/)")
    submit.add_argument("--target", choices=("local", "ray", "kubernetes"), default="local")
    submit.add_argument("--workers", type=_positive, help="number of workers (default: the job file's)")
    submit.add_argument("--address", help="ray: the cluster's job server, e.g. http://127.0.0.1:8265 "
                        "(default: RAY_ADDRESS)")
    submit.add_argument("--out", help="kubernetes: directory for the manifests (default: beside the run dir)")
    submit.add_argument("--apply", action="store_true", help="kubernetes: create the TFJob with your kubeconfig")
    submit.add_argument("--no-wait", action="store_true", help="ray: return once the job is submitted")
    manage = submit.add_mutually_exclusive_group()
    manage.add_argument("--status", metavar="JOB_ID", help="ray: the job's status")
    manage.add_argument("--logs", metavar="JOB_ID", help="ray: the job's logs")
    manage.add_argument("--stop", metavar="JOB_ID", help="ray: stop the job")
    submit.set_defaults(func=_submit)

    shards = add("prepare", help="convert a config's data into sharded TFRecords for streaming training")
    shards.add_argument("--config", required=True)
    shards.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    shards.add_argument("--out", required=True, help="directory for the shards, vocabularies and frequencies")
    shards.add_argument("--shards", type=_positive, default=8, help="number of TFRecord files (default 8)")
    shards.set_defaults(func=_prepare_shards)

    from serving.query import add_arguments as query_arguments

    query = add("query", help="ask a running model server for one user's recommendations")
    query_arguments(query)
    query.set_defaults(func=_query)

    serve = commands.add_parser("serve", add_help=False, help="TF-Serving-compatible model server (gRPC + REST); "
                                "`twotower serve --help` lists its flags")
    serve.add_argument("flags", nargs=argparse.REMAINDER, help="tensorflow_model_server-style flags")
    return parser


def _serve(argv: list[str], quiet: bool, verbose: bool) -> int:
    """``serve`` keeps tensorflow_model_server's flag names, so its own parser (serving.server) reads them."""
    from serving.server import main as serve_main

    return serve_main([*argv, *(["--quiet"] if quiet else []), *(["--verbose"] if verbose else [])])


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    _library_log_levels(verbose=bool({"-v", "--verbose"} & set(argv)))
    common = argv[:argv.index("serve")] if "serve" in argv else None
    if common is not None and set(common) <= {"-q", "--quiet", "-v", "--verbose"}:
        return _serve(argv[len(common) + 1:], quiet=bool({"-q", "--quiet"} & set(common)),
                      verbose=bool({"-v", "--verbose"} & set(common)))
    args = build_parser().parse_args(argv)
    args.verbose = getattr(args, "verbose", False)
    args.quiet = getattr(args, "quiet", False)
    if getattr(args, "split", None) is None and args.command == "evaluate":
        args.split = ["test"]
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        if os.environ.get("TWOTOWER_DEBUG"):
            raise
        if isinstance(err, user_errors()):
            print(f"error: {err}", file=sys.stderr)
            return 2
        if isinstance(err, OSError) and err.filename is not None:   # a path of yours: missing, not allowed, full
            print(f"error: {err.filename}: {err.strerror or err}", file=sys.stderr)
            return 2
        summary = (str(err).strip().splitlines() or [""])[0][:300]
        print(f"internal error: {type(err).__name__}{': ' + summary if summary else ''} (a bug in twotower, not in "
              f"your input; run again with TWOTOWER_DEBUG=1 to see the traceback, and report it)", file=sys.stderr)
        return 1


def user_errors() -> tuple[type[BaseException], ...]:
    """The project's own errors about the user's input: printed as one ``error:`` line. Every other exception
    (KeyError, TypeError, ...) is a bug."""
    from export.inspect import InspectError
    from export.trained import ExportError
    from ingest.schema import DataError
    from serving.client import ClientError
    from serving.errors import ServingError
    from towers.config import ConfigError

    return ConfigError, DataError, ExportError, InspectError, ServingError, ClientError


if __name__ == "__main__":
    sys.exit(main())

"""docs/config.md: every configuration key with its type, default and meaning, generated from the schema.

Why it exists: a hand-written list of keys drifts from the code. This renders the run configuration's schema
(training/config.py, with the ``model:`` block from towers/config.py) and the job file's (jobs/spec.py) as one
Markdown reference. It lives here, beside the command line, because only this level may import both the run
schema and the job schema. ``python -m twotower.config_reference`` rewrites docs/config.md; a test checks that the
file matches what this module renders.
"""

from __future__ import annotations

import json
import sys
import types
import typing
from pathlib import Path
from typing import Literal

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from jobs.spec import JobFile
from training.config import RunConfig, Temporal

DOC = Path(__file__).resolve().parents[1] / "docs" / "config.md"
_BOUNDS = ((annotated_types.Gt, ">"), (annotated_types.Ge, "≥"), (annotated_types.Lt, "<"), (annotated_types.Le, "≤"))


def _bounds(metadata: list) -> str:
    parts = [f"{sign} {getattr(m, type(m).__name__.lower())}" for m in metadata for kind, sign in _BOUNDS
             if isinstance(m, kind)]
    parts += [f"length ≥ {m.min_length}" for m in metadata if isinstance(m, annotated_types.MinLen) and m.min_length]
    return ", ".join(parts)


def type_name(annotation, metadata: list = ()) -> str:
    """A field's type as a reader writes it in YAML: ``int > 0``, ``list of int > 0``, ```a` or `b```."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return type_name(args[0], [*metadata, *[m for a in args[1:] for m in getattr(a, "metadata", [a])]])
    bounds = _bounds(list(metadata))
    if origin is Literal:
        return " or ".join(f"`{a}`" for a in args)
    if origin is list:
        return f"list of {type_name(args[0])}" + (f" ({bounds})" if bounds else "")
    if origin in (typing.Union, types.UnionType):
        names = [type_name(a) for a in args if a is not type(None)]
        return " or ".join(dict.fromkeys(names)) + (" or null" if type(None) in args else "") + \
            (f" ({bounds})" if bounds else "")
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "mapping"
    name = {"str": "string", "bool": "true/false", "float": "number", "int": "integer"}.get(
        getattr(annotation, "__name__", str(annotation)), getattr(annotation, "__name__", str(annotation)))
    if not bounds:
        return name
    return f"{name} ({bounds})" if bounds.startswith("length") else f"{name} {bounds}"


def _default(field: FieldInfo) -> str:
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    return f"`{json.dumps(value, ensure_ascii=False)}`"


def _rows(schema: type[BaseModel], prefix: str) -> list[str]:
    rows = []
    for name, field in schema.model_fields.items():
        kind = type_name(field.annotation, field.metadata)
        rows.append(f"| `{prefix}{name}` | {kind} | {_default(field)} | {field.description or ''} |")
    return rows


def _table(title: str, schema: type[BaseModel], prefix: str) -> list[str]:
    note = " ".join((schema.__doc__ or "").split()).replace("``", "`")
    return [f"### {title}", "", *([note, ""] if note else []), "| key | type | default | meaning |",
            "|---|---|---|---|", *_rows(schema, prefix), ""]


def reference() -> str:
    """The whole of docs/config.md."""
    lines = ["# Configuration reference", "",
             "Generated from the schema (training/config.py, towers/config.py, jobs/spec.py) by "
             "`python -m twotower.config_reference`; do not edit by hand. A run's configuration is these defaults, "
             "then the `--config` file, then each `--set key=value` (the value is read as YAML). Every key is "
             "checked, with its type, its range and the rules between keys, before a command writes anything; "
             "an unknown key, or one that has no effect for the chosen `data.format`, is refused by its dotted "
             "name.", "", "## Run configuration (`--config` files, `--set`)", ""]
    for name, field in RunConfig.model_fields.items():
        schema = field.annotation
        lines += _table(f"`{name}:`", schema, f"{name}.")
    lines += _table("`data.split` with `type: temporal`", Temporal, "data.split.")
    lines += ["## Job file (`twotower submit JOB.yaml`)", ""]
    lines += _table("top level", JobFile, "")
    for name, field in JobFile.model_fields.items():
        kinds = typing.get_args(field.annotation) or (field.annotation,)
        block = next((k for k in kinds if isinstance(k, type) and issubclass(k, BaseModel)), None)
        if block is not None:
            lines += _table(f"`{name}:`", block, f"{name}.")
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    """Writes docs/config.md (or the path given)."""
    path = Path((argv if argv is not None else sys.argv[1:])[0]) if (argv or sys.argv[1:]) else DOC
    path.write_text(reference(), encoding="utf-8")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

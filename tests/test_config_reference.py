"""docs/config.md is the schema's own rendering: every key, its type, default and meaning, and nothing stale."""

import json
import re

from jobs.spec import JobFile
from training.config import DEFAULTS
from twotower.config_reference import DOC, reference

ROW = re.compile(r"^\| `([\w.]+)` \| (.*?) \| (.*?) \| (.*) \|$")


def _rows() -> dict[str, tuple[str, str, str]]:
    return {m[1]: (m[2], m[3], m[4]) for line in DOC.read_text(encoding="utf-8").splitlines()
            if (m := ROW.match(line))}


def test_the_reference_is_what_the_schema_renders():
    assert DOC.read_text(encoding="utf-8") == reference(), \
        "docs/config.md is stale: run `python -m twotower.config_reference`"


def test_every_config_key_is_documented_with_the_schemas_default():
    rows = _rows()
    for section, block in DEFAULTS.items():
        for key, default in block.items():
            kind, documented, meaning = rows[f"{section}.{key}"]
            assert json.loads(documented.strip("`")) == default, (section, key)
            assert kind and meaning, (section, key)
    for key, field in JobFile.model_fields.items():
        documented = rows[key][1]
        if field.is_required():
            assert documented == "required", key
        else:
            value = field.get_default(call_default_factory=True)
            value = value.model_dump(mode="json") if hasattr(value, "model_dump") else value
            assert json.loads(documented.strip("`")) == value, key

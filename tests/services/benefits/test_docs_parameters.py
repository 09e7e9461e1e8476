"""The parameter file excerpt in docs/benefits.md is true to the file the suite ships: a reader
who copies its shape, values and citations copies what the rules run on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tests.helpers import code_block

ROOT = Path(__file__).resolve().parents[3]
DOC = ROOT / "docs" / "benefits.md"
PARAMETERS = ROOT / "services" / "benefits" / "parameters"


def documented_excerpt() -> dict[str, Any]:
    excerpt: dict[str, Any] = yaml.safe_load(code_block(DOC.read_text(encoding="utf-8"), "yaml"))
    return excerpt


def test_the_documented_excerpt_matches_the_shipped_file() -> None:
    excerpt = documented_excerpt()
    shipped = yaml.safe_load((PARAMETERS / f"{excerpt['region']}.yaml").read_text("utf-8"))
    assert excerpt["name"] == shipped["name"]
    for source, fields in excerpt["sources"].items():
        assert {k: shipped["sources"][source][k] for k in fields} == fields, source
    assert excerpt["values"], "the excerpt shows some values"
    for key, entries in excerpt["values"].items():
        assert len(entries) <= len(shipped["values"][key]), key
        for shown, kept in zip(entries, shipped["values"][key], strict=False):
            # "..." stands for a clause too long for the page.
            fields = {k: v for k, v in shown.items() if v != "..."}
            assert {k: kept[k] for k in fields} == fields, key

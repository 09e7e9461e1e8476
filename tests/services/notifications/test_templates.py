"""Every template renders, strictly, for every occurrence that uses it; no PII comes out."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from services.notifications.domain.rules import Occurrence, RuleBook, intents, load_rulebook
from services.notifications.templates import Templates
from tests.conftest import plaintext_pii
from tests.services.notifications.samples import SAMPLES

RULES = Path(__file__).parents[3] / "services" / "notifications" / "rules.yaml"
BOOK: RuleBook = load_rulebook(yaml.safe_load(RULES.read_text(encoding="utf-8")))


def _occurrence(short: str) -> Occurrence:
    return Occurrence(
        short,
        "cause",
        "0193a5b2-7c1d-7e00-9f00-1234abcd5678",
        "411302",
        SAMPLES[short],
        "2026-11-23",
    )


def test_every_rule_pattern_has_a_sample_occurrence() -> None:
    from fnmatch import fnmatchcase

    assert all(any(fnmatchcase(s, p) for s in SAMPLES) for p in BOOK.rules)


def test_every_template_a_rule_names_exists_and_every_file_is_used() -> None:
    assert BOOK.templates() == Templates().names()


@pytest.mark.parametrize("short", sorted(SAMPLES))
def test_every_template_renders_for_every_occurrence(short: str) -> None:
    templates = Templates()
    found = intents(BOOK, _occurrence(short), helper_id="H001")
    found += intents(BOOK, _occurrence(short), helper_id=None)  # the unassigned variant
    assert found, f"no rule for {short}"
    for intent in found:
        subject, body = templates.render(intent.template, intent.channel, intent.context)
        assert body and "None" not in body, (intent.template, intent.channel, body)
        assert (subject is not None) == (intent.channel == "email")
        assert plaintext_pii(f"{subject} {body}") == []
        if intent.channel == "sms":
            assert len(body) <= 140  # two SMS segments of 70 Chinese characters at most


def test_a_missing_variable_fails_rather_than_rendering_blank(tmp_path: Path) -> None:
    from jinja2 import UndefinedError

    (tmp_path / "broken.inbox.j2").write_text("{{ data.nothing_here }}", encoding="utf-8")
    with pytest.raises(UndefinedError):
        Templates(tmp_path).render("broken", "inbox", {"data": {}})

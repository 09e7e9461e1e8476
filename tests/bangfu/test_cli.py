"""The `bangfu` command line: tokens, migrations and `events tail` against a real NATS."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

import nats
import pytest
from typer.testing import CliRunner, Result

from bangfu.cli import app
from bangfu.tail import tail_filters
from shared.auth import Principal, TokenVerifier
from shared.db import Database
from shared.events.envelope import CloudEvent, new_event
from shared.events.streams import ensure_stream, service_stream
from shared.migrations import SERVICES, schema_at_head
from shared.natsserver import free_port
from shared.settings import SuiteSettings

ALL_STREAMS = ("REGISTRY", "VERIFICATION", "BENEFITS", "NOTIFICATIONS")


@pytest.fixture(autouse=True)
def home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No BANGFU_* variable of the machine leaks in; BANGFU_HOME is the test's own folder."""
    for name in list(os.environ):
        if name.startswith("BANGFU_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("BANGFU_HOME", str(tmp_path))
    return tmp_path


def bangfu(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


class TestToken:
    async def test_a_token_carries_the_scopes_and_regions_asked_for(self) -> None:
        result = bangfu("token", "--scope", "registry:read pii:read", "--regions", "4113,4101")

        assert result.exit_code == 0, result.output
        verifier = TokenVerifier.from_settings(SuiteSettings())
        principal = await verifier.verify(result.stdout.strip())
        assert principal == Principal(
            client_id="bangfu-dev",
            scopes=frozenset({"registry:read", "pii:read"}),
            regions=("4113", "4101"),
        )

    async def test_regions_may_be_separated_by_spaces_and_are_normalised(self) -> None:
        result = bangfu("token", "--regions", "411300 31", "--client-id", "dept-x")

        principal = await TokenVerifier.from_settings(SuiteSettings()).verify(result.stdout.strip())
        assert (principal.client_id, principal.regions) == ("dept-x", ("4113", "31"))

    def test_a_region_outside_any_province_is_refused(self) -> None:
        result = bangfu("token", "--regions", "99")

        assert result.exit_code == 2
        assert result.stdout == ""
        assert "error:" in result.stderr
        assert "99" in result.stderr

    def test_no_token_is_issued_when_an_identity_provider_is_configured(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("BANGFU_AUTH_JWKS_URL", "https://idp.example.test/jwks")

        result = bangfu("token")

        assert result.exit_code == 2
        assert "BANGFU_AUTH_JWKS_URL" in result.stderr


class TestMigrate:
    def test_an_unknown_service_is_refused_by_name(self, home: Path) -> None:
        result = bangfu("migrate", "nosuch")

        assert result.exit_code == 2
        assert "nosuch" in result.stderr
        assert list(home.iterdir()) == []

    async def test_a_service_is_migrated_to_head_in_sqlite_under_home(self, home: Path) -> None:
        # Off the event loop: Alembic's env runs its own asyncio.run().
        result = await asyncio.to_thread(bangfu, "migrate", "registry")

        assert result.exit_code == 0, result.output
        assert "migrated registry" in result.stdout
        assert (home / "registry.db").is_file()
        assert not (home / "benefits.db").exists()
        db = Database(f"sqlite+aiosqlite:///{home / 'registry.db'}")
        try:
            assert await schema_at_head(db, "registry") is True
        finally:
            await db.dispose()

    def test_migrating_twice_is_harmless(self, home: Path) -> None:
        first = bangfu("migrate", "benefits")
        second = bangfu("migrate", "benefits")

        assert (first.exit_code, second.exit_code) == (0, 0)


class TestTailFilters:
    def test_a_region_selects_its_tokens_on_every_stream(self) -> None:
        assert tail_filters(subject=None, region="4113") == {
            s.upper(): f"bangfu.{s}.*.*.41.13.*" for s in SERVICES
        }

    def test_no_filter_selects_every_event_of_every_stream(self) -> None:
        assert tail_filters(subject=None, region=None) == {
            s.upper(): f"bangfu.{s}.*.*.*.*.*" for s in SERVICES
        }

    def test_a_subject_of_one_service_touches_only_its_stream(self) -> None:
        subject = "bangfu.registry.household.*.41.13.>"

        assert tail_filters(subject=subject, region=None) == {"REGISTRY": subject}

    def test_the_whole_hierarchy_touches_every_stream(self) -> None:
        filters = tail_filters(subject="bangfu.>", region=None)

        assert filters == {s.upper(): f"bangfu.{s}.>" for s in SERVICES}
        assert tuple(filters) == ALL_STREAMS

    def test_a_service_wildcard_is_spread_over_every_stream(self) -> None:
        assert tail_filters(subject="bangfu.*.household.>", region=None) == {
            s.upper(): f"bangfu.{s}.household.>" for s in SERVICES
        }

    def test_a_region_with_trailing_zeros_selects_the_whole_city(self) -> None:
        assert tail_filters(subject=None, region="411300") == tail_filters(
            subject=None, region="4113"
        )

    @pytest.mark.parametrize(
        ("subject", "region"),
        [("x.y", None), ("bangfu", None), ("a", "41"), (None, "4x"), (None, "411"), (None, "99")],
    )
    def test_a_bad_filter_is_refused(self, subject: str | None, region: str | None) -> None:
        with pytest.raises(ValueError):
            tail_filters(subject=subject, region=region)


class TestEventsTail:
    @pytest.mark.parametrize(
        "args",
        [
            ["--subject", "x.y"],
            ["--subject", "a", "--region", "41"],
            ["--region", "4x"],
            ["--since", "yesterday"],
        ],
    )
    def test_a_bad_filter_exits_2_before_connecting(self, args: list[str]) -> None:
        result = bangfu("events", "tail", *args)

        assert result.exit_code == 2
        assert result.stderr.startswith("error: ")

    async def test_events_of_the_region_asked_for_are_printed_as_json(
        self, nats_url: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("BANGFU_NATS_URL", nats_url)
        elsewhere, wanted = _applied("h-shanghai", "310101"), _applied("h-nanyang", "411302")
        nc = await nats.connect(nats_url)
        try:
            js = nc.jetstream()
            name, subjects = service_stream("registry")
            await ensure_stream(js, name=name, subjects=subjects)
            # The other region first: a filter that let it through would print it instead.
            for event in (elsewhere, wanted):
                await js.publish(event.nats_subject, event.to_json())
        finally:
            await nc.close()

        args = ["events", "tail", "--region", "4113", "--since", "1h", "--count", "1"]
        result = await asyncio.wait_for(asyncio.to_thread(bangfu, *args), timeout=30)

        assert result.exit_code == 0, result.output
        lines = result.stdout.splitlines()
        assert len(lines) == 1
        assert CloudEvent.model_validate(json.loads(lines[0])) == wanted

    def test_an_unreachable_nats_exits_1_within_seconds(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        url = f"nats://127.0.0.1:{free_port()}"
        monkeypatch.setenv("BANGFU_NATS_URL", url)

        started = time.monotonic()
        result = bangfu("events", "tail", "--count", "1")
        elapsed = time.monotonic() - started

        assert result.exit_code == 1
        assert f"cannot reach NATS at {url}" in result.stderr
        assert elapsed < 10


def _applied(household: str, region: str) -> CloudEvent:
    return new_event(
        service="registry",
        aggregate="household",
        name="applied",
        subject=household,
        region=region,
        sequence=1,
        data={},
    )

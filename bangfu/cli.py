"""`bangfu`: run the suite, migrate, issue development tokens, watch events."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from shared.settings import SuiteSettings

if TYPE_CHECKING:
    from bangfu.idp import IdpSettings

app = typer.Typer(
    help="Bangfu (帮扶): data sharing for 城镇困难职工/居民解困脱困.",
    no_args_is_help=True,
    add_completion=False,
    # Docstrings are wrapped at 100 columns in the source: let paragraphs reflow in --help.
    rich_markup_mode="markdown",
)
events_app = typer.Typer(help="Watch the suite's CloudEvents.", no_args_is_help=True)
app.add_typer(events_app, name="events")
dlq_app = typer.Typer(help="Dead letters: events a consumer gave up on.", no_args_is_help=True)
app.add_typer(dlq_app, name="dlq")
outbox_app = typer.Typer(help="Each service's transactional outbox.", no_args_is_help=True)
app.add_typer(outbox_app, name="outbox")
audit_app = typer.Typer(help="Each service's hash-chained audit log.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")

ALL_SCOPES = (
    "registry:read registry:write review:community review:street review:county pii:read "
    "verification:request benefits:read benefits:admin notifications:read notifications:admin "
    "dci:search dci:subscribe"
)


def _all_provinces() -> list[str]:
    from shared.regions import FILING_PROVINCES

    return sorted(FILING_PROVINCES)


def _dev_token(
    suite: SuiteSettings, *, scopes: str, regions: list[str], client_id: str, ttl: timedelta
) -> str:
    """A development token, signed with the embedded default's key; while `bangfu up --idp`
    runs (its services accept only the provider's keys), with the provider's own key instead,
    which is on this machine too: the same command works with and without the provider."""
    from bangfu.embedded import running_provider
    from bangfu.idp import signing_key
    from shared.auth import ensure_signing_key, issue_token

    provider = running_provider(suite.home.resolve())
    if provider is not None:
        issuer, keys_file = provider
        key, kid = signing_key(keys_file)
    else:
        ensure_signing_key(suite.signing_key_file, suite.public_key_file)
        issuer, key, kid = suite.auth_issuer, suite.signing_key_file.read_bytes(), None
    return issue_token(
        key,
        client_id=client_id,
        scopes=scopes.split(),
        regions=regions,
        issuer=issuer,
        audience=suite.auth_audience,
        ttl=ttl,
        kid=kid,
    )


@app.command()
def up(
    demo: Annotated[bool, typer.Option(help="Seed a demo city and file households.")] = False,
    idp: Annotated[
        bool,
        typer.Option(
            "--idp",
            help="Also run the suite's OpenID provider (deploy/idp, needs Node.js) on "
            "BANGFU_IDP_PORT (8180): the services accept only its tokens and get their own "
            "from it, as in a deployment.",
        ),
    ] = False,
) -> None:
    """Run the whole suite on this machine: NATS, four services, the department sandbox."""
    from bangfu.embedded import AlreadyRunning, Supervisor, run_until_signalled, service_ports
    from services.console.settings import configured_port as console_port

    suite = SuiteSettings()
    supervisor = Supervisor(suite, say=typer.echo, idp=idp)
    try:
        supervisor.check_not_running()
    except AlreadyRunning as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from exc

    def on_ready() -> None:
        lines = ["", "Bangfu is running (Ctrl-C stops everything):"]
        ports = service_ports()
        for name, port in ports.items():
            docs = "" if name == "sandbox" else f"   API docs http://127.0.0.1:{port}/docs"
            lines.append(f"  {name:<14} http://127.0.0.1:{port}{docs}")
        if supervisor.idp:
            lines.append(f"  {'idp':<14} {supervisor.idp.issuer}")
            lines.append(
                f"  {'console':<14} http://127.0.0.1:{console_port()}"
                "   sign in as one of the demo people below"
            )
        else:
            lines.append(
                f"  {'console':<14} not started: people sign in through the identity provider, "
                "which needs Node.js 20+ (bangfu up --idp)"
            )
        lines += [f"  logs           {supervisor.home / 'logs'}", ""]
        if supervisor.idp:
            lines += _idp_banner(supervisor.idp)
        token = _dev_token(
            suite,
            scopes=ALL_SCOPES,
            regions=_all_provinces(),
            client_id="bangfu-dev",
            ttl=timedelta(days=1),
        )
        lines += [
            "Development token (all scopes, every province, 24 h; `bangfu token` makes others):",
            f"  export BANGFU_TOKEN={token}",
        ]
        if supervisor.idp and demo:
            # The demo files through the provider's own client, as a department system would.
            token = _idp_token(supervisor.idp, DEMO_SEEDER)
        lines.append("Watch events:  bangfu events tail --region 4113")
        if demo:
            from bangfu.demo import seed

            filed = seed(
                f"http://127.0.0.1:{ports['registry']}",
                token,
                verification_url=f"http://127.0.0.1:{ports['verification']}",
            )
            lines.append(f"Demo: filed {filed} households in 南阳市 (region 4113).")
        typer.echo("\n".join(lines))

    try:
        run_until_signalled(supervisor, on_ready=on_ready)
    except RuntimeError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc


def _idp_banner(settings: IdpSettings) -> list[str]:
    """How to get a token from the provider, and who can sign in (development-only secrets)."""
    from bangfu.idp import read_registrations

    registrations = read_registrations(settings.clients)
    lines = [f"Identity provider {settings.issuer} (clients {settings.clients}):"]
    department = registrations.clients.get("dept-4113")
    if department and department.secret:
        lines += [
            "  a department system's token (registry, region 4113):",
            f"  curl -s -u dept-4113:{department.secret} -d grant_type=client_credentials "
            f"{settings.issuer}/token",
        ]
    if registrations.people:
        lines.append("  demo people (console sign-in, development-only passwords):")
        for username, person in registrations.people.items():
            lines.append(
                f"    {person.role or person.name:<8} {username} / {person.secret}"
                f"   regions {' '.join(person.regions)}: {' '.join(person.scopes)}"
            )
    return lines


# The client `bangfu up --idp --demo` files the demo households with (the demo clients file has it).
DEMO_SEEDER = "demo-seeder"


def _idp_token(settings: IdpSettings, client_id: str) -> str:
    """A client-credentials token from the provider for a client of its clients file."""
    import httpx

    from bangfu.idp import read_registrations

    client = read_registrations(settings.clients).clients.get(client_id)
    if client is None:
        raise RuntimeError(f"{settings.clients} has no client {client_id}")
    response = httpx.post(
        f"{settings.issuer}/token",
        data={"grant_type": "client_credentials"},
        auth=(client_id, client.secret or ""),
    )
    if response.status_code != 200:
        raise RuntimeError(f"the identity provider refused {client_id}: {response.text}")
    return str(response.json()["access_token"])


@app.command()
def migrate(
    services: Annotated[
        list[str] | None,
        typer.Argument(help="Services to migrate (default: all four and the console)."),
    ] = None,
    wait: Annotated[
        float,
        typer.Option(
            help="Seconds to keep retrying while the database refuses connections "
            "(it may start after this job); 0 fails on the first refusal."
        ),
    ] = 60,
) -> None:
    """Bring each service's database schema to the newest migration.

    Run it once per release, before the new version serves (compose's `migrate` job, the
    Kubernetes `bangfu-migrate` Job); replicas never migrate and answer 503 on /readyz
    until their schema is at head. Reads BANGFU_DATABASE_URL (or each service's own
    BANGFU_{SERVICE}_DATABASE_URL); safe to run again: an up-to-date schema is left alone.
    A database that is not up yet is waited for (`--wait`), each retry said on the terminal.

    Example: bangfu migrate registry verification
    """
    from bangfu.embedded import DatabaseAway
    from bangfu.embedded import migrate as run
    from shared.migrations import MIGRATED

    unknown = set(services or ()) - set(MIGRATED)
    if unknown:
        typer.echo(
            f"unknown service {', '.join(sorted(unknown))}; choose from {', '.join(MIGRATED)}",
            err=True,
        )
        raise typer.Exit(2)
    try:
        run(tuple(services or MIGRATED), say=typer.echo, wait_seconds=wait)
    except DatabaseAway as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    suite = SuiteSettings()
    if not suite.auth_jwks_url:
        # Created here, once, so that replicas sharing BANGFU_HOME never race to create it.
        from shared.auth import ensure_signing_key

        ensure_signing_key(suite.signing_key_file, suite.public_key_file)


@app.command()
def token(
    scope: Annotated[
        str | None,
        typer.Option(
            help="Space-separated scopes. A development token: every scope by default. From the "
            "identity provider: the client's own scopes by default; a scope it may not have is "
            "an error."
        ),
    ] = None,
    regions: Annotated[
        str | None,
        typer.Option(
            help="Comma- or space-separated GB/T 2260 prefixes, e.g. 4113 (development token; "
            "default 41)."
        ),
    ] = None,
    client_id: Annotated[
        str | None,
        typer.Option(help="The department client's id (development token; default bangfu-dev)."),
    ] = None,
    hours: Annotated[
        float | None, typer.Option(help="Lifetime in hours (development token; default 12).")
    ] = None,
    client: Annotated[
        str | None,
        typer.Option(
            "--client",
            help="Fetch the token from the identity provider as this client (client "
            "credentials) instead of signing a development one.",
        ),
    ] = None,
    secret: Annotated[
        str | None,
        typer.Option(
            "--secret",
            envvar="BANGFU_CLIENT_SECRET",
            show_envvar=True,
            help="The client's secret (the variable keeps it out of the process list).",
        ),
    ] = None,
    issuer: Annotated[
        str | None,
        typer.Option(
            "--issuer",
            help="The provider's issuer URL (default: BANGFU_AUTH_ISSUER when it is a URL, else "
            "the one `bangfu up --idp` runs, http://127.0.0.1:8180).",
        ),
    ] = None,
) -> None:
    """Print an access token: from the identity provider with `--client` and `--secret` (its
    discovery document names the token endpoint), else a development token signed with the
    embedded default's key.

    Only the token goes to standard output: `export BANGFU_TOKEN=$(bangfu token ...)`.

    Example: bangfu token --client dept-4113 --secret "$SECRET" --scope registry:read
    """
    suite = SuiteSettings()
    if client is not None:
        if regions is not None or client_id is not None or hours is not None:
            typer.echo(
                "error: --regions, --client-id and --hours are for development tokens; the "
                "provider's token carries the client's registered regions and lifetime",
                err=True,
            )
            raise typer.Exit(2)
        if not secret:
            typer.echo(
                "error: give the client's secret (--secret or BANGFU_CLIENT_SECRET)", err=True
            )
            raise typer.Exit(2)
        typer.echo(_provider_token(suite, issuer, client, secret, scope))
        return
    if issuer is not None or secret is not None:
        typer.echo("error: --issuer and --secret fetch a client's token: give --client", err=True)
        raise typer.Exit(2)
    if suite.uses_identity_provider:
        typer.echo(
            "error: the services accept only the identity provider's tokens "
            "(BANGFU_AUTH_ISSUER is its URL or BANGFU_AUTH_JWKS_URL is set): fetch one with "
            "--client ID --secret S",
            err=True,
        )
        raise typer.Exit(2)
    prefixes = (regions or "41").replace(",", " ").split()
    try:
        typer.echo(
            _dev_token(
                suite,
                scopes=scope or ALL_SCOPES,
                regions=prefixes,
                client_id=client_id or "bangfu-dev",
                ttl=timedelta(hours=12 if hours is None else hours),
            )
        )
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc


def _provider_token(
    suite: SuiteSettings, issuer: str | None, client: str, secret: str, scope: str | None
) -> str:
    from bangfu.idp import IdpSettings
    from bangfu.provider_token import TokenNotIssued, fetch_client_token
    from shared.settings import is_url

    if issuer is None:
        issuer = suite.auth_issuer if is_url(suite.auth_issuer) else IdpSettings().issuer
    try:
        return asyncio.run(fetch_client_token(issuer, client, secret, scope))
    except TokenNotIssued as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc


@events_app.command("tail")
def tail(
    subject: Annotated[
        str | None,
        typer.Option(help="A NATS subject filter, e.g. 'bangfu.registry.household.*.41.13.>'."),
    ] = None,
    region: Annotated[
        str | None, typer.Option(help="Only this region prefix (2, 4 or 6 digits), e.g. 4113.")
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(
            help="Replay from this ISO time (e.g. 2026-11-01T00:00:00Z) or duration ('1h')."
        ),
    ] = None,
    count: Annotated[int, typer.Option(help="Stop after this many events (0: never).")] = 0,
) -> None:
    """Print CloudEvents from the suite's streams as they arrive, one JSON object a line."""
    from bangfu.tail import tail_events, tail_filters

    try:
        filters = tail_filters(subject=subject, region=region)
        start = _parse_since(since) if since else None
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    try:
        asyncio.run(
            tail_events(
                SuiteSettings().nats_url,
                filters,
                since=start,
                count=count,
                emit=lambda event: typer.echo(json.dumps(event, ensure_ascii=False)),
            )
        )
    except KeyboardInterrupt:
        pass
    except ConnectionError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc


def _parse_since(value: str) -> datetime:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if value[-1:] in units and value[:-1].isdigit():
        return datetime.now(UTC) - timedelta(seconds=int(value[:-1]) * units[value[-1]])
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _print_rows(rows: list[dict[str, object]]) -> None:
    for row in rows:
        typer.echo(json.dumps(row, ensure_ascii=False, default=str))


def _run_ops(coroutine: Any) -> Any:
    try:
        return asyncio.run(coroutine)
    except (OSError, TimeoutError) as exc:
        typer.echo(f"error: cannot reach NATS at {SuiteSettings().nats_url}: {exc}", err=True)
        raise typer.Exit(1) from exc


@app.command()
def streams(
    create: Annotated[
        bool,
        typer.Option(
            "--create",
            help="First create every stream (or update its retention and replicas to the "
            "BANGFU_STREAM_* settings), as a deployment job would before the services start.",
        ),
    ] = False,
) -> None:
    """List the JetStream streams: subjects, messages, size, consumers, retention.

    One JSON object a line, read from the NATS at BANGFU_NATS_URL. Each service creates
    its stream (REGISTRY, VERIFICATION, ...) and the dead-letter stream DLQ when it starts;
    `--create` does it beforehand. Use it to see whether events arrive (messages grow) and
    how many consumers read them.
    """
    from bangfu import ops

    suite = SuiteSettings()
    if create:
        _run_ops(ops.create_streams(suite))
    _print_rows(_run_ops(ops.streams(suite.nats_url)))


@dlq_app.command("list")
def dlq_list(
    limit: Annotated[int, typer.Option(help="At most this many, oldest first.")] = 100,
) -> None:
    """Show dead letters: which consumer gave up, on what, after how many tries, and why.

    A consumer dead-letters an event its handler failed on BANGFU_{SERVICE}_CONSUMER_MAX_DELIVER
    times (or that is not a valid CloudEvent). Read the reason, fix the cause (a bug, a
    missing configuration), then `bangfu dlq replay SEQ`. One JSON object a line.
    """
    from bangfu import ops

    _print_rows(_run_ops(ops.dead_letters(SuiteSettings().nats_url, limit=limit)))


@dlq_app.command("replay")
def dlq_replay(
    seqs: Annotated[
        list[int] | None, typer.Argument(help="DLQ sequence numbers to replay.")
    ] = None,
    all_: Annotated[bool, typer.Option("--all", help="Replay every dead letter.")] = False,
) -> None:
    """Publish dead letters again on their original subjects (after fixing the cause).

    SEQ is the `seq` that `bangfu dlq list` shows. The consumer that gave up receives the
    event again; a consumer that had handled it already ignores it (its inbox remembers).

    Example: bangfu dlq replay 12 13    or    bangfu dlq replay --all
    """
    from bangfu import ops

    url = SuiteSettings().nats_url
    if all_:
        seqs = [row["seq"] for row in _run_ops(ops.dead_letters(url, limit=1_000_000))]
    if not seqs:
        typer.echo(
            "nothing to replay: give sequence numbers (see `bangfu dlq list`) or --all", err=True
        )
        raise typer.Exit(2)
    typer.echo(f"replayed {_run_ops(ops.replay_dead_letters(url, seqs))} dead letters")


@outbox_app.command("status")
def outbox_status() -> None:
    """Per service: events written but not yet published, and how old the oldest is.

    Reads each service's database (BANGFU_DATABASE_URL). A backlog that grows means the
    relay cannot publish: NATS is unreachable or refuses the service's user. Events wait
    safely in the outbox and are published, in order, once NATS is back.
    """
    from bangfu import ops
    from bangfu.embedded import service_settings
    from shared.migrations import SERVICES

    rows = asyncio.run(ops.outbox_status({s: service_settings(s) for s in SERVICES}))
    _print_rows(rows)


@audit_app.command("verify")
def audit_verify(
    services: Annotated[
        list[str] | None, typer.Argument(help="Services to check (default: all four).")
    ] = None,
) -> None:
    """Check each service's audit chain, and its newest records against the signed checkpoint.

    Reads the service's database and its checkpoint file (BANGFU_<SERVICE>_AUDIT_CHECKPOINT_FILE,
    signed with BANGFU_<SERVICE>_AUDIT_CHECKPOINT_KEY). Exits 1 if a record was edited or
    deleted, the newest records are missing, or the checkpoint is missing or does not verify.
    """
    from bangfu import ops
    from bangfu.embedded import service_settings
    from shared.migrations import SERVICES

    unknown = sorted(set(services or ()) - set(SERVICES))
    if unknown:
        typer.echo(f"unknown services {unknown}; known: {', '.join(SERVICES)}", err=True)
        raise typer.Exit(2)
    valid = True
    for service in services or SERVICES:
        report = asyncio.run(ops.verify_audit(service_settings(service)))
        typer.echo("\n".join(report.lines))
        valid = valid and report.valid
    if not valid:
        raise typer.Exit(1)


AUTH_CONF_HEADER = """\
# NATS users of the Bangfu suite: generated by `bangfu nats-user --suite`.
# Passwords come from nats-server's environment (BANGFU_NATS_<USER>_PASSWORD). Add each
# integrator's block (`bangfu nats-user NAME --regions ...`) to the users list, then reload:
# `nats-server --signal reload`.
"""


@app.command("nats-user")
def nats_user(
    name: Annotated[
        str | None,
        typer.Argument(help="The integrator's name: lower-case letters, digits and '-'."),
    ] = None,
    regions: Annotated[
        list[str] | None,
        typer.Option(
            "--regions",
            help="Region prefix it may read (2, 4 or 6 digits); repeat or comma-separate.",
        ),
    ] = None,
    password: Annotated[
        str | None, typer.Option(help="Its password (default: a new random one).")
    ] = None,
    server: Annotated[
        str, typer.Option(help="The NATS URL the integrator connects to.")
    ] = "tls://nats.example.gov.cn:4222",
    suite: Annotated[
        bool,
        typer.Option(
            "--suite", help="Print the suite's own users instead (deploy/nats/auth.conf)."
        ),
    ] = False,
) -> None:
    """Print NATS credentials: an integrator that may read only its regions' events.

    The output is a user block for the server's auth.conf (paste it into the users list,
    then reload nats-server) followed, as comments, by what to send the integrator: its
    URL with password, its inbox prefix, its subjects and its replay consumers.

    Example: bangfu nats-user nanyang-civil-affairs --regions 4113
    """
    from bangfu import natsauth

    if suite:
        typer.echo(AUTH_CONF_HEADER + natsauth.authorization(natsauth.suite_users()), nl=False)
        return
    prefixes = [p for value in regions or [] for p in value.replace(",", " ").split()]
    if not name:
        typer.echo("give the integrator's name, or --suite for the suite's own users", err=True)
        raise typer.Exit(2)
    try:
        user = natsauth.integrator_user(name, prefixes, password)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    instructions = natsauth.integrator_instructions(user, prefixes, server)
    typer.echo(
        "# Add to the users list of the server's auth.conf, then `nats-server --signal reload`:\n"
        + user.block()
        + "\n# Send the integrator, over a secure channel:\n"
        + "".join(f"#   {line}\n" for line in instructions.splitlines()),
        nl=False,
    )


@app.command()
def export(
    out: Annotated[
        Path, typer.Option(help="Where docs/ is: writes openapi/ and asyncapi/ under it.")
    ] = Path("docs"),
    check: Annotated[
        bool,
        typer.Option(
            "--check", help="Write nothing; exit 1 if a committed document is out of date."
        ),
    ] = False,
) -> None:
    """Write each service's OpenAPI and AsyncAPI documents as JSON, for integrators and CI.

    docs/openapi/{service}.json is the REST contract (as served at /openapi.json);
    docs/asyncapi/{service}.json the events (as served at /v1/events/asyncapi.json), for
    the services that publish any. No database or NATS is needed.
    """
    stale = []
    for path, text in _documents().items():
        target = out / path
        if check:
            if not target.exists() or target.read_text() != text:
                stale.append(str(target))
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        typer.echo(f"wrote {target}")
    if stale:
        typer.echo("out of date (run `bangfu export`): " + ", ".join(stale), err=True)
        raise typer.Exit(1)


def _documents() -> dict[str, str]:
    """`openapi/<service>.json` and `asyncapi/<service>.json` -> their JSON text."""
    import importlib
    import tempfile

    from bangfu.embedded import SETTINGS

    documents: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as home:
        # Development keys for the app factories, thrown away: nothing here is served.
        suite = SuiteSettings(
            home=Path(home), auth_jwks_url=None, env="development", log_level="WARNING"
        )
        for service, settings_class in SETTINGS.items():
            factory = importlib.import_module(f"services.{service}.app").create_app
            service_app = factory(settings_class(suite=suite))
            documents[f"openapi/{service}.json"] = _json(service_app.openapi())
            asyncapi = asyncio.run(_get(service_app, "/v1/events/asyncapi.json"))
            if asyncapi is not None:
                documents[f"asyncapi/{service}.json"] = _json(asyncapi)
    return documents


async def _get(service_app: Any, path: str) -> Any:
    """GET from the app in-process, without its lifespan (no database, no NATS); None on 404."""
    import httpx

    transport = httpx.ASGITransport(app=service_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://export") as client:
        response = await client.get(path)
    if response.status_code == 404:
        return None
    response.raise_for_status()
    return response.json()


def _json(document: object) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"

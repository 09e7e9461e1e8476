"""What ops needs when something goes wrong: streams, dead letters, outbox backlogs."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import nats
from nats.js.errors import NotFoundError
from sqlalchemy import func, select

from shared import audit
from shared.db import Database
from shared.events.outbox import backlog
from shared.events.streams import (
    DEAD_LETTER_STREAM,
    ensure_dead_letter_stream,
    ensure_stream,
    nats_servers,
    service_stream,
)
from shared.migrations import SERVICES
from shared.settings import ServiceSettings, SuiteSettings


async def create_streams(suite: SuiteSettings) -> None:
    """Create (or bring to the suite's retention and replicas) every stream the suite uses."""
    nc = await nats.connect(
        nats_servers(suite.nats_url),
        connect_timeout=3,
        max_reconnect_attempts=1,
        tls=suite.nats_tls(),
    )
    try:
        js = nc.jetstream()
        for service in SERVICES:
            name, subjects = service_stream(service)
            await ensure_stream(
                js,
                name=name,
                subjects=subjects,
                max_age_days=suite.stream_max_age_days,
                duplicate_window_seconds=suite.stream_duplicate_window_seconds,
                replicas=suite.stream_replicas,
            )
        await ensure_dead_letter_stream(js, replicas=suite.stream_replicas)
    finally:
        await nc.close()


async def streams(url: str) -> list[dict[str, Any]]:
    """Every stream: subjects, message count, size, first and last message time, consumers."""
    nc = await nats.connect(nats_servers(url), connect_timeout=3, max_reconnect_attempts=1)
    try:
        infos = await nc.jetstream().streams_info()
        return [
            {
                "stream": info.config.name,
                "subjects": info.config.subjects,
                "messages": info.state.messages,
                "bytes": info.state.bytes,
                "first_seq": info.state.first_seq,
                "last_seq": info.state.last_seq,
                "consumers": info.state.consumer_count,
                "max_age_days": (info.config.max_age or 0) / 86400,
            }
            for info in infos
        ]
    finally:
        await nc.close()


async def dead_letters(url: str, *, limit: int = 100) -> list[dict[str, Any]]:
    """The oldest `limit` dead letters, with the consumer, original subject and reason."""
    nc = await nats.connect(nats_servers(url), connect_timeout=3, max_reconnect_attempts=1)
    js = nc.jetstream()
    found: list[dict[str, Any]] = []
    try:
        try:
            info = await js.stream_info(DEAD_LETTER_STREAM)
        except NotFoundError:
            return []
        seq = info.state.first_seq
        while seq and seq <= info.state.last_seq and len(found) < limit:
            try:
                message = await js.get_msg(DEAD_LETTER_STREAM, seq)
            except NotFoundError:  # deleted after a replay
                seq += 1
                continue
            headers = message.headers or {}
            found.append(
                {
                    "seq": seq,
                    "consumer": headers.get("Bangfu-Consumer"),
                    "subject": headers.get("Bangfu-Original-Subject"),
                    "stream": headers.get("Bangfu-Original-Stream"),
                    "original_seq": headers.get("Bangfu-Original-Sequence"),
                    "deliveries": headers.get("Bangfu-Deliveries"),
                    "reason": headers.get("Bangfu-Reason"),
                }
            )
            seq += 1
        return found
    finally:
        await nc.close()


async def replay_dead_letters(url: str, seqs: list[int]) -> int:
    """Publish each dead letter again on its original subject, then remove it from the DLQ.

    Every consumer of that stream sees the event again; the ones that handled it already
    skip it through their inbox, the one that failed gets another chance.
    """
    nc = await nats.connect(nats_servers(url), connect_timeout=3, max_reconnect_attempts=1)
    js = nc.jetstream()
    replayed = 0
    try:
        for seq in seqs:
            message = await js.get_msg(DEAD_LETTER_STREAM, seq)
            headers = message.headers or {}
            subject = headers.get("Bangfu-Original-Subject")
            if not subject:
                continue
            stamp = datetime.now(UTC).isoformat()
            # A fresh Nats-Msg-Id: the original one may still be inside the duplicate window.
            await js.publish(
                subject, message.data or b"", headers={"Nats-Msg-Id": f"replay:{seq}:{stamp}"}
            )
            await js.delete_msg(DEAD_LETTER_STREAM, seq)
            replayed += 1
        return replayed
    finally:
        await nc.close()


async def outbox_status(settings: dict[str, ServiceSettings]) -> list[dict[str, Any]]:
    """Per service: events written but not yet published, and the oldest one's age."""
    rows = []
    for service in SERVICES:
        url, schema = settings[service].database
        db = Database(url, schema=schema)
        try:
            async with db.sessionmaker() as session:
                state = await backlog(session)
            rows.append(
                {
                    "service": service,
                    "unpublished": state.count,
                    "oldest_age_seconds": round(state.oldest_age_seconds, 1),
                }
            )
        except Exception as exc:  # noqa: BLE001 - report each service, whatever fails
            rows.append({"service": service, "error": f"{type(exc).__name__}: {exc}"[:200]})
        finally:
            await db.dispose()
    return rows


@dataclass(frozen=True)
class AuditReport:
    """What `bangfu audit verify` prints for one service, and whether its log is intact."""

    valid: bool
    lines: list[str]


async def verify_audit(settings: ServiceSettings) -> AuditReport:
    """Walk a service's audit chain and check its newest records against the checkpoint."""
    profile = settings.suite.crypto_profile
    path = settings.audit_checkpoint_path
    key = settings.audit_checkpoint_key.get_secret_value().encode()
    problems: list[str] = []
    checkpoint: audit.Checkpoint | None = None
    try:
        checkpoint = audit.read_checkpoint(path, key=key, profile=profile)
        seen = f"checkpoint at seq {checkpoint.seq} ({audit.utc_text(checkpoint.at)})"
    except FileNotFoundError:
        seen = f"no checkpoint at {path}: the newest records cannot be vouched for"
        problems.append(seen)
    except audit.CheckpointError as exc:
        seen = f"checkpoint {exc}"
        problems.append(seen)
    url, schema = settings.database
    db = Database(url, schema=schema)
    try:
        async with db.sessionmaker() as session:
            breaks = await audit.verify(session, profile=profile, checkpoint=checkpoint)
            count, last = (
                await session.execute(
                    select(func.count(), func.coalesce(func.max(audit.audit_log.c.seq), 0))
                )
            ).one()
    finally:
        await db.dispose()
    valid = not breaks and not problems
    head = (
        f"{settings.service}: {'valid' if valid else 'INVALID'}, {count} records up to seq {last}"
    )
    lines = [f"{head}; {seen}{' found' if valid else ''}"]
    lines += [f"  seq {b.seq} {b.kind}: {b.detail}" for b in breaks]
    return AuditReport(valid=valid, lines=lines)

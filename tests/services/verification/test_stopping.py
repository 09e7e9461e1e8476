"""Stopping the verifier ends every task it started, promptly, whatever they were doing: a
service must stop on SIGTERM at any point (a test run's teardown once hung in it)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from services.verification.app import create_app
from services.verification.domain.departments import Department
from services.verification.service import request
from services.verification.settings import VerificationSettings
from services.verification.worker import Verifier
from tests.conftest import running

PROMPTLY = 2.0  # seconds; `Verifier.stop` gives up on a task after 10


async def stopped_within(verifier: Verifier) -> float:
    """How long `stop` took; every task of the verifier has ended by then."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    await verifier.stop()
    took = loop.time() - started
    assert verifier.tasks() == []
    return took


@contextlib.asynccontextmanager
async def silent_registry() -> AsyncIterator[tuple[str, asyncio.Event, asyncio.Event]]:
    """An HTTP server on loopback that reads requests and never answers: its URL, an event set
    once a request arrived, and one set once its client hung up."""
    asked, hung_up = asyncio.Event(), asyncio.Event()
    writers: list[asyncio.StreamWriter] = []

    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        await reader.readuntil(b"\r\n\r\n")
        asked.set()
        await reader.read()  # until the client gives up and closes the connection
        hung_up.set()

    server = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", asked, hung_up
    finally:
        server.close()
        for writer in writers:
            writer.close()
        await server.wait_closed()


class TestStopping:
    async def test_a_wake_in_the_tick_of_stopping_does_not_keep_the_queue_running(
        self, verification_settings: VerificationSettings
    ) -> None:
        # A long poll: the queue loop waits for a wake, as between a batch's commits.
        app = create_app(verification_settings.model_copy(update={"poll_seconds": 60}))
        async with running(app):
            verifier: Verifier = app.state.verifier
            await asyncio.sleep(0.5)  # the queue loop found nothing and waits

            verifier.wake()  # a commit with events, just before the service is told to stop
            took = await stopped_within(verifier)

        assert took < PROMPTLY

    async def test_a_shared_registry_read_in_flight_is_cancelled(
        self, verification_settings: VerificationSettings
    ) -> None:
        async with silent_registry() as (url, asked, hung_up):
            app = create_app(verification_settings.model_copy(update={"registry_url": url}))
            async with running(app):
                verifier: Verifier = app.state.verifier
                async with app.state.runtime.db.unit_of_work() as uow:
                    await request(
                        uow,
                        household_id="hh-never-answered",
                        region="411302",
                        purpose="停止测试",
                        departments=list(Department),
                        trigger="batch",
                        requested_by="test",
                    )
                    await uow.commit()
                await asyncio.wait_for(asked.wait(), 10)  # the claimed row's read is in flight

                took = await stopped_within(verifier)
                # the read itself was cancelled, not only the runs awaiting it
                await asyncio.wait_for(hung_up.wait(), PROMPTLY)

        assert took < PROMPTLY

"""`BANGFU_NATS_URL` names one server or a cluster's nodes separated by commas."""

from __future__ import annotations

import asyncio
import time

from shared.events.streams import BackgroundConnection, connect, nats_servers
from shared.natsserver import NatsServer, free_port


class TestNatsServers:
    def test_a_comma_separated_url_is_each_node_in_order(self) -> None:
        assert nats_servers(" nats://127.0.0.1:1, nats://127.0.0.1:2 ,") == [
            "nats://127.0.0.1:1",
            "nats://127.0.0.1:2",
        ]

    def test_one_url_is_one_server(self) -> None:
        assert nats_servers("tls://user:pw@nats:4222") == ["tls://user:pw@nats:4222"]

    async def test_a_client_reaches_the_node_that_answers_when_the_first_is_down(
        self, nats_server: NatsServer
    ) -> None:
        url = f"nats://127.0.0.1:{free_port()},{nats_server.url}"

        nc = await connect(url, name="two-nodes")
        background = BackgroundConnection(url, name="two-nodes-background")
        await background.start()
        try:
            assert nc.connected_url is not None
            assert nc.connected_url.port == nats_server.port
            # start() returns at the first failure too (the dead node): ready follows it.
            deadline = time.monotonic() + 15
            while background.check() != "ok" and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            assert background.check() == "ok"
        finally:
            await nc.close()
            await background.close()

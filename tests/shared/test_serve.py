"""shared.serve: a served process leaves what its start-up built out of later collections."""

from __future__ import annotations

import gc
import subprocess
import sys
import time

import httpx
from fastapi import FastAPI

from shared.natsserver import die_with_parent, free_port


def create_app() -> FastAPI:
    """The factory the served process builds: it reports the collector's frozen count."""
    app = FastAPI()

    @app.get("/gc")
    def collector() -> dict[str, int]:
        return {"frozen": gc.get_freeze_count()}

    return app


def test_a_served_process_freezes_its_start_up_heap() -> None:
    port = free_port()
    factory = f"{__name__}:create_app"
    code = f"from shared.serve import run; run({factory!r}, host='127.0.0.1', port={port})"
    process = subprocess.Popen([sys.executable, "-c", code], preexec_fn=die_with_parent)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                answer = httpx.get(f"http://127.0.0.1:{port}/gc", timeout=1)
                break
            except httpx.TransportError:
                assert process.poll() is None and time.monotonic() < deadline, "did not start"
                time.sleep(0.1)
    finally:
        process.terminate()
        process.wait(timeout=15)
    # The modules, FastAPI's and uvicorn's included: tens of thousands of objects.
    assert answer.json()["frozen"] > 20_000

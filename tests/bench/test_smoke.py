"""Every bench runs at its smallest and ends with its figures line.

A bench is not run by the suite at its full size (minutes each, on a quiet machine); a smoke
run catches the day it stops running at all (an import moved, a signature changed) instead of
the day someone needs its figures. Nothing here is timed or compared: the figures of so small
a run mean nothing. The six start together, so that their start-ups overlap.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# A figure, or what a bench prints for none: inf is events.py's percentile of nothing acked.
NUMBER = r"(?:-?[0-9]+(?:\.[0-9]+)?|nan|inf|n/a)"

# The smallest run each bench's flags allow; benefits skips OpenFisca, whose environment is
# installed from PyPI on first use (its figures line then says `ratio n/a`).
BENCHES: dict[str, tuple[list[str], str]] = {
    "events": (
        ["--events", "20", "--rate", "20", "--seconds", "1"]
        + ["--writers", "2", "--latency-writers", "2"],
        "ratio {n} events/s {n} p50_ms {n} p99_ms {n} raw_ratio {n}",
    ),
    "registry": (
        ["--database", "sqlite", "--requests", "4", "--concurrency", "2", "--warmup", "2"]
        + ["--households", "0"],
        "ratio {n} creates/s {n} list_p95_ms {n}",
    ),
    "verification": (
        ["--households", "2", "--concurrency", "2", "--latency-ms", "5", "--repeats", "1"],
        "ratio {n} single_ratio {n} households/s {n}",
    ),
    "benefits": (
        ["--households", "100", "--rounds", "1", "--no-openfisca"],
        "ratio {n} card_1m_s {n} whatif_1m_s {n} numpy_ratio {n}",
    ),
    "notifications": (
        ["--events", "2", "--receivers", "2", "--rounds", "1", "--paced-seconds", "1"],
        "ratio {n} deliveries/s {n} p99_ms {n}",
    ),
    "catchup": (
        ["--households", "20", "--baseline-households", "5"],
        "ratio {n} households/s {n} seconds {n}",
    ),
}


@pytest.fixture(scope="module")
def runs(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, tuple[subprocess.Popen[bytes], Path]]]:
    """Every bench started at once, each writing its output to a file of its own."""
    out = tmp_path_factory.mktemp("bench")
    started = {}
    for name, (flags, _) in BENCHES.items():
        log = out / f"{name}.log"
        with log.open("wb") as sink:
            started[name] = (
                subprocess.Popen(
                    [sys.executable, str(ROOT / "bench" / f"{name}.py"), *flags],
                    cwd=ROOT,
                    stdout=sink,
                    stderr=subprocess.STDOUT,
                ),
                log,
            )
    yield started
    for process, _ in started.values():
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.parametrize("name", list(BENCHES))
def test_the_bench_runs_and_ends_with_its_figures_line(
    runs: dict[str, tuple[subprocess.Popen[bytes], Path]], name: str
) -> None:
    process, log = runs[name]
    code = process.wait(180)
    output = log.read_text(encoding="utf-8", errors="replace")
    assert code == 0, output[-3000:]
    last = output.strip().splitlines()[-1]
    figures = BENCHES[name][1].format(n=NUMBER)
    assert re.fullmatch(figures, last), f"{last!r} is not {BENCHES[name][1]!r}"

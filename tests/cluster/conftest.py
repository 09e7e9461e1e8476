"""The cluster test's figures at the end of pytest's output, whether it passed or failed."""

from __future__ import annotations

import pytest

# Lines the cluster test stores (counts, latencies per fault) for the terminal summary.
REPORT: list[str] = []


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if REPORT:
        terminalreporter.write_sep("-", "cluster test: counts and write latencies")
        for line in REPORT:
            terminalreporter.write_line(line)

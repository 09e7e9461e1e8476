"""Benefits engine over 1,000,000 synthetic households (about 2.6 M members), three figures:

1. the full measures card (every category and measure) — goal ≤ 2 s;
2. 低保金 and the 6-consecutive-months 脱困 rule, against the same rules as a careful OpenFisca
   country package (bench/benefits_openfisca, run in its own environment under
   .bangfu/bench-openfisca, created here on first use) and against plain numpy of the same
   formulas — goals ≥ 1.0 × OpenFisca and ≥ 0.7 × numpy (ratios of speed: their time / ours);
3. what-if "the Nanyang standard rises from D" as a diff (who changes band, budget change,
   back-pay) — goal ≤ 1 s.

    .venv/bin/python bench/benefits.py [--households N] [--rounds R]

Each figure is the best of R rounds. Results are checked equal across implementations before
any time is printed. The last line is
`ratio <ours / openfisca> card_1m_s <n> whatif_1m_s <n> numpy_ratio <x>`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from services.benefits.domain import exit as exits  # noqa: E402
from services.benefits.domain import rules, whatif  # noqa: E402
from services.benefits.domain.facts import Columns  # noqa: E402
from services.benefits.domain.parameters import (  # noqa: E402
    DEFAULT_DIRECTORY,
    ROUNDING_CODES,
    Book,
    Rounding,
    Source,
    Value,
    load_book,
)

# Five Nanyang counties (two with their own dated standards, one raised mid-2025), Fengqiu and a
# Qinhuangdao district; the same list, in the same order, as bench/benefits_openfisca.
REGIONS = ["411302", "411303", "411321", "411381", "410727", "130302"]
ON = date(2025, 9, 1)
MONTHS = ["2025-04", "2025-05", "2025-06", "2025-07", "2025-08", "2025-09"]
OPENFISCA_ENV = ROOT / ".bangfu" / "bench-openfisca"


def synthetic(n: int, seed: int = 20261123) -> tuple[Columns, np.ndarray]:
    """Households and members as columns, and a (6, n) monthly income series around the line
    (a row per month: how a monthly series is stored as columns)."""
    rng = np.random.default_rng(seed)
    size = rng.choice(np.arange(1, 6, dtype=np.int64), size=n, p=[0.25, 0.25, 0.25, 0.15, 0.10])
    m = int(size.sum())
    starts = np.zeros(n, dtype=np.int64)
    starts[1:] = np.cumsum(size)[:-1]
    age = rng.integers(0, 90, m, dtype=np.int64)
    stage = np.select(
        [age < 3, age < 6, age < 12, age < 15, age < 18, age < 22], [0, 1, 2, 3, 4, 6], 0
    ).astype(np.int64)
    stage = np.where((stage == 4) & (rng.random(m) < 0.4), 5, stage)
    income = (rng.integers(0, 130_000, n) * size).astype(np.int64)
    cols = Columns(
        region=rng.integers(0, len(REGIONS), n).astype(np.int32),
        regions=REGIONS,
        size=size,
        income=income,
        urban_hukou=rng.random(n) < 0.9,
        assets_ok=rng.random(n) < 0.9,
        tekun=rng.random(n) < 0.03,
        rural_roster=rng.random(n) < 0.05,
        hardship=rng.random(n) < 0.5,
        sudden_spending=np.where(rng.random(n) < 0.1, rng.integers(0, 5_000_000, n), 0),
        no_housing=rng.random(n) < 0.2,
        dibao_months=np.where(rng.random(n) < 0.3, rng.integers(0, 40, n), -1),
        starts=starts,
        m_household=np.repeat(np.arange(n, dtype=np.int64), size),
        m_age=age,
        m_stage=stage,
        m_school_year=np.where(stage > 0, rng.integers(1, 4, m), 0),
        m_boarding=rng.random(m) < 0.3,
        m_disability=np.where(rng.random(m) < 0.05, rng.integers(1, 5, m), 0),
        m_orphan=rng.random(m) < 0.01,
        m_rural=rng.random(m) < 0.2,
        m_union=rng.random(m) < 0.3,
        m_contract_months=rng.choice(np.array([0, 6, 12, 36], dtype=np.int64), m),
        m_layoff=rng.random(m) < 0.02,
        m_graduating=(stage == 6) & (rng.random(m) < 0.25),
        m_business_months=np.where(rng.random(m) < 0.02, rng.integers(0, 40, m), -1),
        m_medical=np.where(rng.random(m) < 0.1, rng.integers(0, 5_000_000, m), 0),
    )
    # Half the households drift just above the line for months on end, half stay around it.
    per_capita = rng.integers(50_000, 80_000, (1, n)) + rng.integers(-3_000, 3_000, (6, n))
    monthly = (per_capita * size).astype(np.int64)
    return cols, monthly


def best_of(rounds: int, run: Callable[[], Any]) -> tuple[float, Any]:
    best, result = float("inf"), None
    for _ in range(rounds):
        t0 = time.perf_counter()
        result = run()
        best = min(best, time.perf_counter() - t0)
    return best, result


# -- 1. the card ---------------------------------------------------------------------------------


def card(book: Book, cols: Columns) -> rules.Result:
    return rules.evaluate(cols, rules.params_for(book, cols, on=ON, keys=rules.ALL_KEYS))


def read_inputs_once(cols: Columns) -> int:
    """Baseline: one pass over every input column (the cost of looking at the data at all)."""
    return sum(
        int(np.asarray(getattr(cols, f)).sum())
        for f in Columns.__dataclass_fields__
        if f != "regions"
    )


# -- 2. 低保金 and 脱困: ours, plain numpy, OpenFisca ---------------------------------------

DIBAO_KEYS = ("dibao.standard_fen", "dibao.rounding", "eligibility.urban_hukou_required")


def ours_dibao_and_exit(book: Book, cols: Columns, monthly: np.ndarray) -> tuple[Any, ...]:
    """The engine's own rules: 低保金 of the month and the 脱困 run up to it."""
    month_cols = dataclasses.replace(cols, income=monthly[-1])
    p = rules.params_for(book, month_cols, on=ON, keys=DIBAO_KEYS)
    allowance = rules.dibao_allowance(month_cols, p, rules.Categories(month_cols, p)).fen
    run, eligible = exits.exit_batch(
        book,
        regions=cols.regions,
        region=cols.region,
        income=monthly,
        size=cols.size,
        months=MONTHS,
        on=ON,
    )
    return allowance, run, eligible


def region_table(book: Book, key: str, on: date) -> np.ndarray:
    found = [book.resolve(r, on).get(key) for r in REGIONS]
    return np.array([v.number if v else 0 for v in found], dtype=np.int64)


def numpy_dibao_and_exit(
    std_now: np.ndarray,
    rounding: np.ndarray,
    required: np.ndarray,
    std_months: np.ndarray,
    cols: Columns,
    monthly: np.ndarray,
) -> tuple[Any, ...]:
    """The same formulas in plain numpy, parameters given as per-region arrays."""
    region, size, income = cols.region, cols.size, monthly[-1]
    std = std_now[region]
    eligible = (income < std * size) & cols.assets_ok & ((required[region] == 0) | cols.urban_hukou)
    gap = np.maximum(std * size - income, 0)
    r = rounding[region]
    rounded = np.select(
        [r == 1, r == 2, r == 3],
        [(gap + 99) // 100 * 100, gap // 100 * 100, (gap + 50) // 100 * 100],
        gap,
    )
    allowance = np.where(eligible, rounded, 0)
    running = np.ones(len(size), dtype=bool)
    run = np.zeros(len(size), dtype=np.int64)
    for t in range(monthly.shape[0] - 1, -1, -1):
        running &= monthly[t] > std_months[region, t] * size
        run += running
    return allowance, run, run >= 6


def ensure_openfisca() -> Path | None:
    """The bench's own environment with openfisca-core, created on first use."""
    python = OPENFISCA_ENV / "bin" / "python"
    if python.exists():
        return python
    print(f"creating {OPENFISCA_ENV} with openfisca-core (once) ...", flush=True)
    try:
        subprocess.run([sys.executable, "-m", "venv", str(OPENFISCA_ENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "openfisca-core"], check=True)
    except (subprocess.CalledProcessError, OSError) as exc:
        print(f"OpenFisca could not be installed: {exc}")
        return None
    return python


def run_openfisca(
    python: Path, n: int, rounds: int, tmp: Path
) -> tuple[dict[str, float], dict[str, np.ndarray]] | None:
    """OpenFisca and ours timed round by round in the OpenFisca environment's process."""
    out = tmp / "openfisca.npz"
    done = subprocess.run(
        [
            str(python),
            str(ROOT / "bench" / "benefits_openfisca" / "run.py"),
            str(n),
            str(rounds),
            str(out),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": ""},
    )
    if done.returncode != 0:
        print(f"OpenFisca run failed:\n{done.stderr[-2000:]}")
        return None
    return json.loads(done.stdout.strip().splitlines()[-1]), dict(np.load(out))


def interleaved(rounds: int, *runs: Callable[[], Any]) -> list[tuple[float, Any]]:
    """Best time of each run, taking turns each round so that all see the same load."""
    best: list[tuple[float, Any]] = [(float("inf"), None)] * len(runs)
    for _ in range(rounds):
        for i, run in enumerate(runs):
            t0 = time.perf_counter()
            result = run()
            took = time.perf_counter() - t0
            if took < best[i][0]:
                best[i] = (took, result)
    return best


# -- 3. what-if -----------------------------------------------------------------------------------


def raised(book: Book, fen: int, start: date) -> Book:
    return book.with_value(
        Value("dibao.standard_fen", fen, start, None, "411300", Source("《假设》"), "一", "bench")
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--households", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--no-openfisca",
        action="store_true",
        help="skip OpenFisca (its environment is installed from PyPI on first use): ratio n/a",
    )
    args = parser.parse_args()
    n, rounds = args.households, args.rounds
    print(f"load average {os.getloadavg()[0]:.2f}, {os.cpu_count()} cores, numpy {np.__version__}")
    book = load_book(DEFAULT_DIRECTORY)
    cols, monthly = synthetic(n)
    print(f"{n:,} households, {len(cols.m_household):,} members, regions {', '.join(REGIONS)}")

    # 1. The full card.
    base_s, _ = best_of(rounds, lambda: read_inputs_once(cols))
    card_s, result = best_of(rounds, lambda: card(book, cols))
    owed = {code: int(np.count_nonzero(a.quantity)) for code, a in result.amounts.items()}
    print(
        f"1. card: {card_s:.3f} s ({n / card_s / 1e6:.2f} M households/s); "
        f"baseline one pass over the inputs {base_s:.3f} s; card / baseline "
        f"{card_s / base_s:.1f} ×"
    )
    print(f"   households owed each measure: {owed}")
    monthly_total = sum(
        int(result.amounts[m.code].fen.sum()) for m in rules.MEASURES if m.period == "month"
    )
    print(f"   monthly cash {monthly_total // 100:,} yuan")

    # 2. 低保金 + 脱困: ours, numpy, OpenFisca — results first checked equal.
    std_now = region_table(book, "dibao.standard_fen", ON)
    rounding = region_table(book, "dibao.rounding", ON)
    required = region_table(book, "eligibility.urban_hukou_required", ON)
    std_months = np.stack(
        [region_table(book, "dibao.standard_fen", date.fromisoformat(m + "-01")) for m in MONTHS],
        axis=1,
    )
    assert rounding.tolist()[:4] == [ROUNDING_CODES[Rounding.UP_YUAN]] * 4
    (ours_s, ours), (numpy_s, plain) = interleaved(
        rounds,
        lambda: ours_dibao_and_exit(book, cols, monthly),
        lambda: numpy_dibao_and_exit(std_now, rounding, required, std_months, cols, monthly),
    )
    for a, b in zip(ours, plain, strict=True):
        assert np.array_equal(a, b), "ours and plain numpy disagree"
    numpy_ratio = numpy_s / ours_s
    print(
        f"2. 低保金 + 6-month 脱困: ours {ours_s:.3f} s ({n / ours_s / 1e6:.1f} M/s), "
        f"plain numpy {numpy_s:.3f} s ({n / numpy_s / 1e6:.1f} M/s), numpy / ours "
        f"{numpy_ratio:.2f} (taking turns, best of {rounds})"
    )
    print(
        f"   households owed 低保金 {int(np.count_nonzero(ours[0])):,}, "
        f"meeting 脱困 {int(np.count_nonzero(ours[2])):,}"
    )
    ratio = "n/a"
    python = None if args.no_openfisca else ensure_openfisca()
    if python is None:
        print("   OpenFisca: skipped or not installed; numpy figures only")
    else:
        with tempfile.TemporaryDirectory() as tmp:
            found = run_openfisca(python, n, rounds, Path(tmp))
        if found:
            times, theirs = found
            assert np.array_equal(theirs["allowance"], ours[0]), "OpenFisca 低保金 differs"
            assert np.array_equal(theirs["months_above"], ours[1]), "OpenFisca 脱困 differs"
            assert np.array_equal(theirs["eligible"], ours[2]), "OpenFisca 脱困 differs"
            of_s = times["dibao"] + times["exit"]
            ratio = f"{of_s / times['ours']:.2f}"
            print(
                f"   OpenFisca (careful, int fen) {of_s:.3f} s ({n / of_s / 1e6:.1f} M/s: "
                f"低保金 {times['dibao']:.3f} s, 脱困 {times['exit']:.3f} s); ours in the same "
                f"process, taking turns {times['ours']:.3f} s; OpenFisca / ours {ratio}"
            )

    # 3. What-if: Nanyang's standard from 630 to 700 yuan from 2025-07-01, priced on 2025-09-01.
    start = date(2025, 7, 1)
    proposed = raised(book, 70000, start)
    whatif_s, diff = best_of(rounds, lambda: whatif.diff(book, proposed, cols, on=start, until=ON))
    print(
        f"3. what-if 630 → 700 yuan from {start}: {whatif_s:.3f} s; what-if / one full card "
        f"{whatif_s / card_s:.2f}"
    )
    print(
        f"   changed band {diff.changed_band:,}, entering {diff.entering}, leaving "
        f"{diff.leaving}; monthly +{diff.monthly_delta_fen // 100:,} yuan, yearly "
        f"+{diff.yearly_delta_fen // 100:,} yuan, back-pay {diff.backpay_fen // 100:,} yuan"
    )
    print(
        f"ratio {ratio} card_1m_s {card_s:.3f} whatif_1m_s {whatif_s:.3f} "
        f"numpy_ratio {numpy_ratio:.2f}"
    )


if __name__ == "__main__":
    main()

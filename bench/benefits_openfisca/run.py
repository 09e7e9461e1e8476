"""Time the OpenFisca package against ours, interleaved round by round in this one process, so
that both see the same load; run by bench/benefits.py in the bench's own environment.

    python run.py <households> <rounds> <out.npz>

It rebuilds the bench's households from the same seed, and imports the engine's pure domain
package (numpy and PyYAML only) to time ours beside OpenFisca. Prints one JSON line of best times.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
from openfisca_core.periods import period as make_period
from openfisca_core.simulations import SimulationBuilder

BENCH = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(BENCH.parent), str(BENCH)]
import benefits as bench  # noqa: E402

from benefits_openfisca import BenefitsTaxBenefitSystem  # noqa: E402
from services.benefits.domain.parameters import DEFAULT_DIRECTORY, load_book  # noqa: E402


def simulation(tbs, cols, monthly):  # type: ignore[no-untyped-def]
    n = cols.households
    builder = SimulationBuilder()
    builder.create_entities(tbs)
    # One person per household: the rules read the household's size as an input, as ours do.
    builder.declare_person_entity("person", np.arange(n))
    households = builder.declare_entity("household", np.arange(n))
    builder.join_with_persons(households, np.arange(n), np.full(n, "member"))
    sim = builder.build(tbs)
    last = make_period(bench.MONTHS[-1])
    months = monthly.shape[0]  # a row per month, oldest first
    for k in range(months):
        p = str(last.offset(k - months + 1, "month"))
        sim.set_input("household_income", p, monthly[k])
        sim.set_input("household_size", p, cols.size)
        sim.set_input("region_number", p, cols.region.astype(np.int64))
        sim.set_input("assets_within_limits", p, cols.assets_ok)
        sim.set_input("urban_hukou", p, cols.urban_hukou)
    return sim


def main() -> None:
    n, rounds, out_file = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    cols, monthly = bench.synthetic(n)
    book = load_book(DEFAULT_DIRECTORY)
    tbs = BenefitsTaxBenefitSystem()
    month = bench.MONTHS[-1]
    best = {"dibao": float("inf"), "exit": float("inf"), "ours": float("inf")}
    for _ in range(rounds):
        sim = simulation(tbs, cols, monthly)
        t0 = time.perf_counter()
        allowance = sim.calculate("dibao_allowance", month)
        best["dibao"] = min(best["dibao"], time.perf_counter() - t0)
        sim = simulation(tbs, cols, monthly)
        t0 = time.perf_counter()
        months_above = sim.calculate("months_above_standard", month)
        eligible = sim.calculate("exit_eligible", month)
        best["exit"] = min(best["exit"], time.perf_counter() - t0)
        t0 = time.perf_counter()
        bench.ours_dibao_and_exit(book, cols, monthly)
        best["ours"] = min(best["ours"], time.perf_counter() - t0)
    np.savez(out_file, allowance=allowance, months_above=months_above, eligible=eligible)
    print(json.dumps(best))


if __name__ == "__main__":
    main()

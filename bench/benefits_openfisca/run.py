"""Time the OpenFisca package on the bench's households; run by bench/benefits.py in its own venv.

    python run.py <data.npz> <out.npz> <month YYYY-MM> <rounds>

Prints one JSON line: the best wall time of each computation over `rounds` fresh simulations.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
from openfisca_core.periods import period as make_period
from openfisca_core.simulations import SimulationBuilder

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benefits_openfisca import BenefitsTaxBenefitSystem  # noqa: E402


def simulation(tbs, data, month):  # type: ignore[no-untyped-def]
    n = len(data["size"])
    builder = SimulationBuilder()
    builder.create_entities(tbs)
    # One person per household: the rules read the household's size as an input, as ours do.
    builder.declare_person_entity("person", np.arange(n))
    households = builder.declare_entity("household", np.arange(n))
    builder.join_with_persons(households, np.arange(n), np.full(n, "member"))
    sim = builder.build(tbs)
    last = make_period(month)
    months = data["income"].shape[0]  # a row per month, oldest first
    for k in range(months):
        p = str(last.offset(k - months + 1, "month"))
        sim.set_input("household_income", p, data["income"][k])
        sim.set_input("household_size", p, data["size"])
        sim.set_input("region_number", p, data["region"])
        sim.set_input("assets_within_limits", p, data["assets_ok"])
        sim.set_input("urban_hukou", p, data["urban_hukou"])
    return sim


def main() -> None:
    data_file, out_file, month, rounds = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    data = dict(np.load(data_file))
    tbs = BenefitsTaxBenefitSystem()
    best = {"dibao": float("inf"), "exit": float("inf")}
    for _ in range(rounds):
        sim = simulation(tbs, data, month)
        t0 = time.perf_counter()
        allowance = sim.calculate("dibao_allowance", month)
        best["dibao"] = min(best["dibao"], time.perf_counter() - t0)
        sim = simulation(tbs, data, month)
        t0 = time.perf_counter()
        months_above = sim.calculate("months_above_standard", month)
        eligible = sim.calculate("exit_eligible", month)
        best["exit"] = min(best["exit"], time.perf_counter() - t0)
    np.savez(out_file, allowance=allowance, months_above=months_above, eligible=eligible)
    print(json.dumps(best))


if __name__ == "__main__":
    main()

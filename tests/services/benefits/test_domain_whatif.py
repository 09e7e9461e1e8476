"""What-if "the Nanyang standard becomes 700元 from 2026-01-01", against hand-computed figures."""

from __future__ import annotations

from datetime import date

from services.benefits.domain import whatif
from services.benefits.domain.facts import columns
from services.benefits.domain.parameters import DEFAULT_DIRECTORY, Source, Value, load_book
from tests.services.benefits.rows import household

BOOK = load_book(DEFAULT_DIRECTORY)
D = date(2026, 1, 1)
RAISED = BOOK.with_value(
    Value("dibao.standard_fen", 70000, D, None, "411300", Source("《假设》"), "一", "test")
)
HOUSEHOLDS = [
    household(income=0),  # 低保 already: 630 → 700元
    household(income=65000),  # above 630, below 700: enters 低保 with 50元
    household(income=95000, hardship=True),  # above 1.5 × 630 = 945, within 1.5 × 700: 边缘
    household("411321", 0),  # 南召县 keeps its own 600元
]


class TestWhatIf:
    def test_who_enters_and_what_it_costs(self) -> None:
        got = whatif.diff(BOOK, RAISED, columns(HOUSEHOLDS, on=D), on=D, until=date(2026, 3, 31))
        assert got.entering == {
            "tekun": 0,
            "dibao": 1,
            "dibao_edge": 1,
            "expenditure": 0,
            "migrant_worker": 0,
            "layoff": 0,
        }
        assert set(got.leaving.values()) == {0}
        assert (got.changed_band, got.changed_amount) == (2, 2)
        before, after = got.by_measure["dibao_allowance"]
        assert (before.monthly_fen, after.monthly_fen) == (63000 + 60000, 70000 + 5000 + 60000)
        assert got.monthly_delta_fen == 12000
        # 12 months of 120元 more, and two newly enrolled people's 30元 accident insurance.
        assert got.yearly_delta_fen == 12000 * 12 + 3000 * 2
        assert got.by_department["民政局"][1].monthly_fen == 135000
        assert got.backpay_fen == 12000 * 3  # January to March

    def test_back_pay_from_mid_month_is_pro_rata(self) -> None:
        start = date(2026, 1, 15)  # 17 of January's 31 days
        got = whatif.diff(
            BOOK, RAISED, columns(HOUSEHOLDS, on=start), on=start, until=date(2026, 2, 28)
        )
        # Household A: 7000 × 17 // 31 = 3838; household B: 5000 × 17 // 31 = 2741.
        assert got.backpay_fen == 3838 + 2741 + 12000

"""The benefits service's REST API: the household's 明白卡 with each measure's clause."""

from __future__ import annotations

from typing import Any

from services.console.registry import Api


class Benefits(Api):
    async def card(self, token: str, household_id: str) -> dict[str, Any]:
        """Today's card: eligibility per category and each measure with its amount, the clause
        it rests on and its explanation in Chinese (decided now, stored as a receipt)."""
        response = await self._call("GET", f"/v1/households/{household_id}/card", token)
        card: dict[str, Any] = response.json()
        return card

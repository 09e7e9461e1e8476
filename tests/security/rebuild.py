"""Trying to rebuild an identity number from what an answer shows without `pii:read`.

An attacker knows the household's region (the first 6 digits of most members' numbers), may
know each member's sex (the parity of the 17th digit), and reads every masked output. The count
of valid GB 11643 numbers that agree with all of it is what stands between them and the number.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from datetime import date, timedelta

from shared.identity import EARLIEST_BIRTH_DATE

_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CHECK = "10X98765432"
# A masked number as the suite prints it: 18 characters, digits (or X last) and asterisks.
MASKED = re.compile(r"(?<![0-9A-Za-z*])[0-9*]{17}[0-9X*](?![0-9A-Za-z*])")


def candidates(
    mask: str,
    *,
    region: str,
    today: date,
    birth_year: int | None = None,
    birth_date: date | None = None,
    birth_dates: Collection[date] | None = None,
    sex: str | None = None,
) -> int:
    """How many valid numbers agree with `mask`, the region, the birth facts and the sex.

    `birth_dates`, when given, are the only days the other facts (an age on a date, a threshold
    met or not) leave possible.
    """
    assert len(mask) == 18 and "*" in mask, mask
    known = {i: c for i, c in enumerate(mask) if c != "*"}
    prefix = "".join(known.get(i, region[i]) for i in range(6))
    if any(known.get(i, prefix[i]) != prefix[i] for i in range(6)):
        return 0
    if birth_date:
        first = last = birth_date
    elif birth_year:
        first, last = date(birth_year, 1, 1), date(birth_year, 12, 31)
    else:
        first, last = EARLIEST_BIRTH_DATE, today
    sequences = [
        f"{n:03d}"
        for n in range(1000)
        if all(known.get(14 + i, d) == d for i, d in enumerate(f"{n:03d}"))
        and (sex is None or (n % 2 == 1) == (sex == "male"))
    ]
    count = 0
    day = first
    while day <= min(last, today):
        digits = f"{day:%Y%m%d}"
        possible = birth_dates is None or day in birth_dates
        if possible and all(known.get(6 + i, d) == d for i, d in enumerate(digits)):
            body = prefix + digits
            partial = sum(int(c) * w for c, w in zip(body, _WEIGHTS, strict=False))
            for seq in sequences:
                total = partial + int(seq[0]) * 10 + int(seq[1]) * 5 + int(seq[2]) * 8
                if known.get(17, _CHECK[total % 11]) == _CHECK[total % 11]:
                    count += 1
        day += timedelta(days=1)
    return count

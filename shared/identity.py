"""Resident identity numbers (公民身份号码) per GB 11643-1999, and masking of personal numbers."""

from __future__ import annotations

import datetime
import hashlib
import hmac
from dataclasses import dataclass
from typing import Literal

from shared.regions import InvalidRegion, parse_region

Reason = Literal["length", "characters", "region", "birth_date", "future_birth_date", "checksum"]
Sex = Literal["male", "female"]

LENGTH = 18
EARLIEST_BIRTH_DATE = datetime.date(1900, 1, 1)
# ISO 7064 MOD 11-2 as GB 11643-1999 specifies it.
_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CHECK_CHARS = "10X98765432"
# Chinese IMEs often type full-width characters, and a number typed two ways must
# canonicalise to one string or the same person slips past the uniqueness index.
_FULL_WIDTH = str.maketrans(
    {**{chr(0xFF10 + digit): str(digit) for digit in range(10)}, "Ｘ": "X", "ｘ": "X", "x": "X"}
)
_ASCII_DIGITS = frozenset("0123456789")


class InvalidIdentityNumber(ValueError):
    """An identity number that GB 11643-1999 does not allow; `reason` says which rule failed."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason: Reason = reason

    @property
    def code(self) -> str:
        """The machine-readable reason, as problem+json bodies carry it."""
        return self.reason


@dataclass(frozen=True)
class IdentityNumber:
    """A valid 18-character identity number and what it encodes."""

    number: str
    region_code: str
    birth_date: datetime.date
    sex: Sex

    def age_on(self, day: datetime.date) -> int:
        """Completed years of age (周岁) on `day`."""
        if day < self.birth_date:
            raise ValueError(f"{day.isoformat()} is before the birth date")
        birthday_passed = (day.month, day.day) >= (self.birth_date.month, self.birth_date.day)
        return day.year - self.birth_date.year - (0 if birthday_passed else 1)


def parse_identity_number(raw: str, *, today: datetime.date) -> IdentityNumber:
    """Normalise and validate an identity number, raising InvalidIdentityNumber on any fault."""
    number = normalize_identity_number(raw)
    _check_length(number)
    _check_characters(number)
    region_code = _check_region(number)
    birth_date = _check_birth_date(number, today=today)
    _check_checksum(number)
    sex: Sex = "male" if int(number[16]) % 2 == 1 else "female"
    return IdentityNumber(number=number, region_code=region_code, birth_date=birth_date, sex=sex)


def is_valid_identity_number(raw: str, *, today: datetime.date) -> bool:
    """Whether `raw` parses as a valid identity number."""
    try:
        parse_identity_number(raw, today=today)
    except InvalidIdentityNumber:
        return False
    return True


def normalize_identity_number(raw: str) -> str:
    """Strip surrounding whitespace and turn full-width digits and x/Ｘ/ｘ into ASCII."""
    return raw.strip().translate(_FULL_WIDTH)


def check_character(first17: str) -> str:
    """The ISO 7064 MOD 11-2 check character for the first 17 digits."""
    total = sum(int(digit) * weight for digit, weight in zip(first17, _WEIGHTS, strict=True))
    return _CHECK_CHARS[total % 11]


def mask_identity_number(number: str) -> str:
    """Keep the region and the check character only: 411302***********X.

    The birth date and the 3-digit sequence stay hidden together. Shown beside a birth date,
    the former mask (first 6 and last 4) was the number itself; with this one, a reader who
    knows the region, the sex and the birth year (what a masked file shows) still has ~16,600
    valid numbers to choose from (tests/security/test_pii_rebuild.py counts them).
    """
    return _mask(number, keep_start=6, keep_end=1)


# How a department's change feed names a person (`bangfu.dept.<code>.changed.…`): HMAC-SHA256
# of the number under a key the department and the broker share. This key is the sandbox's.
DEVELOPMENT_FEED_KEY = "bangfu-sandbox-person-index-development-key"


def feed_index(identity_number: str, *, key: bytes) -> str:
    """The keyed index a change feed names a person by, hex (never the number itself)."""
    return hmac.new(key, identity_number.encode(), hashlib.sha256).hexdigest()


def mask_phone(number: str) -> str:
    """Keep the first 3 and last 4 digits: 138****5678."""
    return _mask(number, keep_start=3, keep_end=4)


def _mask(value: str, *, keep_start: int, keep_end: int) -> str:
    hidden = len(value) - keep_start - keep_end
    if hidden <= 0:
        # Too short to hide anything while showing both ends: show nothing.
        return "*" * len(value)
    return value[:keep_start] + "*" * hidden + value[-keep_end:]


def _check_length(number: str) -> None:
    if len(number) != LENGTH:
        raise InvalidIdentityNumber(
            "length", f"identity number has {len(number)} characters, expected {LENGTH}"
        )


def _check_characters(number: str) -> None:
    for position, char in enumerate(number, start=1):
        allowed = _ASCII_DIGITS | {"X"} if position == LENGTH else _ASCII_DIGITS
        if char not in allowed:
            expected = "a digit or X" if position == LENGTH else "an ASCII digit"
            raise InvalidIdentityNumber(
                "characters",
                f"character {position} is {char!r} (U+{ord(char):04X}), expected {expected}",
            )


def _check_region(number: str) -> str:
    try:
        return parse_region(number[:6]).code
    except InvalidRegion:
        raise InvalidIdentityNumber(
            "region", f"region code starts with {number[:2]}, which is not a province-level code"
        ) from None


def _check_birth_date(number: str, *, today: datetime.date) -> datetime.date:
    digits = number[6:14]
    try:
        birth_date = datetime.date(int(digits[:4]), int(digits[4:6]), int(digits[6:]))
    except ValueError:
        raise InvalidIdentityNumber(
            "birth_date", f"birth date {digits} is not a calendar date"
        ) from None
    if birth_date < EARLIEST_BIRTH_DATE:
        raise InvalidIdentityNumber(
            "birth_date", f"birth date {digits} is before {EARLIEST_BIRTH_DATE.isoformat()}"
        )
    if birth_date > today:
        raise InvalidIdentityNumber(
            "future_birth_date", f"birth date {digits} is after today ({today.isoformat()})"
        )
    return birth_date


def _check_checksum(number: str) -> None:
    expected = check_character(number[:17])
    if number[17] != expected:
        raise InvalidIdentityNumber(
            "checksum", f"check character is {number[17]}, expected {expected}"
        )

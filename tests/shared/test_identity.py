"""Resident identity numbers per GB 11643-1999, and masking."""

from __future__ import annotations

import datetime

import pytest

from shared.identity import (
    IdentityNumber,
    InvalidIdentityNumber,
    is_valid_identity_number,
    mask_identity_number,
    mask_phone,
    parse_identity_number,
)

TODAY = datetime.date(2024, 6, 1)
WEIGHTS = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2]


def with_check(first17: str) -> str:
    """Append the ISO 7064 MOD 11-2 check character, computed independently of the module."""
    remainder = sum(int(d) * w for d, w in zip(first17, WEIGHTS, strict=True)) % 11
    return first17 + "10X98765432"[remainder]


def wrong_check(number: str) -> str:
    """The same number with a check character that is certainly wrong."""
    return number[:17] + ("0" if number[17] != "0" else "1")


VALID = with_check("41130219850315123")  # the 17th digit, 3, is odd: male
VALID_FEMALE = with_check("41130219900101002")


def reason_for(raw: str) -> str:
    with pytest.raises(InvalidIdentityNumber) as caught:
        parse_identity_number(raw, today=TODAY)
    return caught.value.reason


class TestParseIdentityNumber:
    def test_a_valid_number_yields_its_region_birth_date_and_sex(self) -> None:
        parsed = parse_identity_number(VALID, today=TODAY)

        assert parsed == IdentityNumber(
            number=VALID,
            region_code="411302",
            birth_date=datetime.date(1985, 3, 15),
            sex="male",
        )

    def test_a_real_format_number_ending_in_x_is_valid(self) -> None:
        parsed = parse_identity_number("11010519491231002X", today=TODAY)

        assert parsed.number == "11010519491231002X"
        assert parsed.birth_date == datetime.date(1949, 12, 31)
        assert parsed.sex == "female"

    def test_the_standards_own_example_is_refused_for_its_birth_before_1900(self) -> None:
        # 440524188001010014 has a correct check character but was born in 1880.
        assert with_check("44052418800101001") == "440524188001010014"
        assert reason_for("440524188001010014") == "birth_date"

    def test_an_even_seventeenth_digit_means_female(self) -> None:
        assert parse_identity_number(VALID_FEMALE, today=TODAY).sex == "female"

    def test_a_wrong_check_character_is_refused_naming_the_expected_one(self) -> None:
        number = with_check("11010519491231002")[:17] + "5"
        with pytest.raises(InvalidIdentityNumber, match="check character is 5, expected X") as e:
            parse_identity_number(number, today=TODAY)
        assert e.value.reason == "checksum"

    @pytest.mark.parametrize("birth", ["19900230", "19901301", "19900000", "19890229"])
    def test_an_impossible_birth_date_is_refused(self, birth: str) -> None:
        assert reason_for(with_check(f"411302{birth}123")) == "birth_date"

    def test_a_leap_day_birth_date_is_accepted(self) -> None:
        parsed = parse_identity_number(with_check("41130220000229123"), today=TODAY)
        assert parsed.birth_date == datetime.date(2000, 2, 29)

    def test_a_birth_date_after_today_is_refused(self) -> None:
        assert reason_for(with_check("41130220240602123")) == "future_birth_date"

    def test_a_birth_date_of_today_is_accepted(self) -> None:
        parsed = parse_identity_number(with_check("41130220240601123"), today=TODAY)
        assert parsed.birth_date == TODAY

    def test_a_birth_date_before_1900_is_refused_and_1900_itself_is_not(self) -> None:
        assert reason_for(with_check("41130218991231123")) == "birth_date"
        assert is_valid_identity_number(with_check("41130219000101123"), today=TODAY)

    @pytest.mark.parametrize("length", [17, 19, 15, 0])
    def test_any_length_but_18_is_refused(self, length: int) -> None:
        raw = (VALID + "1")[:length]
        with pytest.raises(InvalidIdentityNumber, match=f"has {length} characters") as e:
            parse_identity_number(raw, today=TODAY)
        assert e.value.reason == "length"

    def test_an_old_15_digit_number_is_refused_for_its_length(self) -> None:
        assert reason_for("411302850315123") == "length"

    def test_a_letter_in_the_middle_is_refused(self) -> None:
        raw = VALID[:9] + "A" + VALID[10:]
        with pytest.raises(InvalidIdentityNumber, match="character 10 is 'A'") as e:
            parse_identity_number(raw, today=TODAY)
        assert e.value.reason == "characters"

    def test_an_x_anywhere_but_last_is_refused(self) -> None:
        assert reason_for("X" + VALID[1:]) == "characters"

    def test_full_width_digits_are_accepted_and_canonicalised(self) -> None:
        full_width = "".join(chr(ord(c) - ord("0") + 0xFF10) for c in VALID)

        assert parse_identity_number(full_width, today=TODAY).number == VALID

    def test_a_full_width_x_is_accepted_as_x(self) -> None:
        assert parse_identity_number("11010519491231002Ｘ", today=TODAY).number == (
            "11010519491231002X"
        )
        assert parse_identity_number("11010519491231002ｘ", today=TODAY).number == (
            "11010519491231002X"
        )

    def test_a_lowercase_x_is_canonicalised_to_uppercase(self) -> None:
        assert parse_identity_number("11010519491231002x", today=TODAY).number == (
            "11010519491231002X"
        )

    def test_surrounding_whitespace_including_ideographic_space_is_stripped(self) -> None:
        assert parse_identity_number(f"  {VALID}\t\n", today=TODAY).number == VALID
        assert parse_identity_number(f"\u3000{VALID}\u3000", today=TODAY).number == VALID

    def test_inner_whitespace_is_refused(self) -> None:
        assert reason_for(VALID[:6] + " " + VALID[7:]) == "characters"

    def test_arabic_indic_digits_are_refused(self) -> None:
        arabic = "".join(chr(ord(c) - ord("0") + 0x0660) for c in VALID)
        assert reason_for(arabic) == "characters"

    def test_a_number_outside_a_real_province_is_refused(self) -> None:
        with pytest.raises(InvalidIdentityNumber, match="starts with 99") as e:
            parse_identity_number(with_check("99130219850315123"), today=TODAY)
        assert e.value.reason == "region"

    def test_the_error_is_a_value_error(self) -> None:
        with pytest.raises(ValueError):
            parse_identity_number(wrong_check(VALID), today=TODAY)


class TestAgeOn:
    BORN = parse_identity_number(with_check("41130219850315123"), today=TODAY)

    def test_the_day_before_the_birthday_the_age_is_one_less(self) -> None:
        assert self.BORN.age_on(datetime.date(2024, 3, 14)) == 38

    def test_on_the_birthday_the_age_goes_up(self) -> None:
        assert self.BORN.age_on(datetime.date(2024, 3, 15)) == 39

    def test_on_the_day_of_birth_the_age_is_zero(self) -> None:
        assert self.BORN.age_on(datetime.date(1985, 3, 15)) == 0

    def test_a_leap_day_birthday_is_reached_on_march_1st_in_common_years(self) -> None:
        born = parse_identity_number(with_check("41130220000229123"), today=TODAY)
        assert born.age_on(datetime.date(2023, 2, 28)) == 22
        assert born.age_on(datetime.date(2023, 3, 1)) == 23

    def test_a_day_before_birth_is_refused(self) -> None:
        with pytest.raises(ValueError, match="before the birth date"):
            self.BORN.age_on(datetime.date(1985, 3, 14))


class TestIsValidIdentityNumber:
    def test_a_valid_number_is_valid(self) -> None:
        assert is_valid_identity_number(VALID, today=TODAY) is True

    def test_an_invalid_number_is_not(self) -> None:
        assert is_valid_identity_number(wrong_check(VALID), today=TODAY) is False


class TestMasking:
    def test_an_identity_number_keeps_only_its_region_and_check_character(self) -> None:
        # The birth date and the sequence (with its sex digit) are hidden: with the region known
        # and the birth year shown, ~16,600 valid numbers remain (tests/security).
        assert mask_identity_number("41130219850315123X") == "411302***********X"

    def test_a_phone_number_keeps_its_first_3_and_last_4_digits(self) -> None:
        assert mask_phone("13812345678") == "138****5678"

    def test_a_value_too_short_to_mask_partly_is_masked_entirely(self) -> None:
        assert mask_phone("1234567") == "*******"
        assert mask_identity_number("4113021") == "*******"

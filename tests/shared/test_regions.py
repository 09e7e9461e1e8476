"""GB/T 2260 region codes and prefix confinement."""

from __future__ import annotations

import pytest

from shared.regions import (
    PROVINCE_NAMES,
    InvalidRegion,
    Region,
    normalize_prefix,
    parse_region,
    region_in,
)

REAL_PROVINCES = {
    *(f"{n}" for n in range(11, 16)),
    *(f"{n}" for n in range(21, 24)),
    *(f"{n}" for n in range(31, 38)),
    *(f"{n}" for n in range(41, 47)),
    *(f"{n}" for n in range(50, 55)),
    *(f"{n}" for n in range(61, 66)),
    "71",
    "81",
    "82",
}


class TestParseRegion:
    def test_a_county_code_splits_into_province_city_and_county(self) -> None:
        region = parse_region("411302")

        assert region == Region("411302")
        assert (region.province, region.city, region.county) == ("41", "4113", "411302")
        assert region.tokens == ("41", "13", "02")

    def test_a_province_level_code_is_itself_a_region(self) -> None:
        assert parse_region("410000").tokens == ("41", "00", "00")

    @pytest.mark.parametrize("code", ["41130", "4113021", "", "41a302", " 411302", "411302\n"])
    def test_anything_but_six_ascii_digits_is_refused(self, code: str) -> None:
        with pytest.raises(InvalidRegion, match="not 6 ASCII digits"):
            parse_region(code)

    def test_full_width_and_arabic_indic_digits_are_refused(self) -> None:
        for code in ["４１１３０２", "٤١١٣٠٢"]:
            with pytest.raises(InvalidRegion, match="not 6 ASCII digits"):
                parse_region(code)

    @pytest.mark.parametrize("code", ["991302", "000000", "161302", "701302", "831302"])
    def test_a_code_outside_a_real_province_is_refused(self, code: str) -> None:
        with pytest.raises(InvalidRegion, match=f"starts with {code[:2]}"):
            parse_region(code)


class TestProvinceNames:
    def test_every_real_province_level_code_has_a_chinese_name(self) -> None:
        assert set(PROVINCE_NAMES) == REAL_PROVINCES
        assert PROVINCE_NAMES["41"] == "河南省"
        assert PROVINCE_NAMES["82"] == "澳门特别行政区"


class TestNormalizePrefix:
    @pytest.mark.parametrize(
        ("prefix", "expected"),
        [
            ("41", "41"),
            ("4113", "4113"),
            ("411302", "411302"),
            ("411300", "4113"),
            ("410000", "41"),
            ("4100", "41"),
            ("110100", "1101"),
        ],
    )
    def test_trailing_zero_pairs_are_stripped(self, prefix: str, expected: str) -> None:
        assert normalize_prefix(prefix) == expected

    @pytest.mark.parametrize("prefix", ["", "*", "4", "411", "41130", "4113020", "41*", "４１"])
    def test_a_prefix_of_other_than_2_4_or_6_ascii_digits_is_refused(self, prefix: str) -> None:
        with pytest.raises(InvalidRegion, match="not 2, 4 or 6 ASCII digits"):
            normalize_prefix(prefix)

    @pytest.mark.parametrize("prefix", ["99", "000000", "0000"])
    def test_a_prefix_outside_a_real_province_is_refused(self, prefix: str) -> None:
        with pytest.raises(InvalidRegion, match="not a province-level code"):
            normalize_prefix(prefix)


class TestRegionIn:
    def test_a_code_under_a_province_prefix_matches(self) -> None:
        assert region_in("411302", ["41"]) is True

    def test_a_code_under_a_city_prefix_written_with_zeros_matches(self) -> None:
        assert region_in("411302", ["411300"]) is True

    def test_a_code_in_a_neighbouring_city_does_not_match(self) -> None:
        assert region_in("411402", ["4113"]) is False

    def test_a_province_level_record_is_outside_a_city_prefix(self) -> None:
        assert region_in("410000", ["4113"]) is False

    def test_one_matching_prefix_among_several_is_enough(self) -> None:
        assert region_in("440305", ["11", "4403", "411302"]) is True

    def test_an_exact_county_prefix_matches_only_that_county(self) -> None:
        assert region_in("411302", ["411302"]) is True
        assert region_in("411303", ["411302"]) is False

    def test_no_prefixes_match_nothing(self) -> None:
        assert region_in("411302", []) is False
        assert region_in("411302", iter(())) is False

    @pytest.mark.parametrize("wildcard", ["*", ""])
    def test_a_would_be_wildcard_is_refused_rather_than_matching_everything(
        self, wildcard: str
    ) -> None:
        with pytest.raises(InvalidRegion):
            region_in("411302", [wildcard])

    def test_a_malformed_prefix_is_refused_even_beside_a_matching_one(self) -> None:
        with pytest.raises(InvalidRegion):
            region_in("411302", ["41", "*"])

    def test_an_invalid_code_is_refused(self) -> None:
        with pytest.raises(InvalidRegion):
            region_in("991302", ["99"])

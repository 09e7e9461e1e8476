"""GB/T 2260 administrative region codes (行政区划代码) and region-prefix confinement."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

PROVINCE_NAMES: dict[str, str] = {
    "11": "北京市",
    "12": "天津市",
    "13": "河北省",
    "14": "山西省",
    "15": "内蒙古自治区",
    "21": "辽宁省",
    "22": "吉林省",
    "23": "黑龙江省",
    "31": "上海市",
    "32": "江苏省",
    "33": "浙江省",
    "34": "安徽省",
    "35": "福建省",
    "36": "江西省",
    "37": "山东省",
    "41": "河南省",
    "42": "湖北省",
    "43": "湖南省",
    "44": "广东省",
    "45": "广西壮族自治区",
    "46": "海南省",
    "50": "重庆市",
    "51": "四川省",
    "52": "贵州省",
    "53": "云南省",
    "54": "西藏自治区",
    "61": "陕西省",
    "62": "甘肃省",
    "63": "青海省",
    "64": "宁夏回族自治区",
    "65": "新疆维吾尔自治区",
    "71": "台湾省",
    "81": "香港特别行政区",
    "82": "澳门特别行政区",
}

# Placeholder province-level codes, outside GB/T 2260, for a place a seed policy document does
# not name (services/benefits/parameters/900100.yaml: the city opinion whose city is elided).
# Accepted as region codes; never a real province, so not in PROVINCE_NAMES.
PLACEHOLDER_PROVINCES: dict[str, str] = {"90": "占位地区(政策原文未载明)"}

# Every province-level code a household may be filed under: what "all regions" covers.
FILING_PROVINCES: dict[str, str] = {**PROVINCE_NAMES, **PLACEHOLDER_PROVINCES}

# [0-9] rather than \d: \d also matches Arabic-Indic and full-width digits.
_CODE = re.compile(r"[0-9]{6}")
_PREFIX = re.compile(r"[0-9]{2}(?:[0-9]{2}){0,2}")


class InvalidRegion(ValueError):
    """A region code or prefix that is not a GB/T 2260 code of a real province."""


@dataclass(frozen=True)
class Region:
    """A six-digit GB/T 2260 region code split into province, city and county."""

    code: str

    @property
    def province(self) -> str:
        return self.code[:2]

    @property
    def city(self) -> str:
        return self.code[:4]

    @property
    def county(self) -> str:
        return self.code

    @property
    def tokens(self) -> tuple[str, str, str]:
        return self.code[:2], self.code[2:4], self.code[4:6]


def parse_region(code: str) -> Region:
    """Parse a six-digit region code, refusing anything outside a real province."""
    if not _CODE.fullmatch(code):
        raise InvalidRegion(f"region code {code!r} is not 6 ASCII digits")
    _check_province(code[:2], what="region code")
    return Region(code)


def normalize_prefix(prefix: str) -> str:
    """A region prefix of 2, 4 or 6 digits with trailing "00" pairs removed ("411300" -> "4113")."""
    if not _PREFIX.fullmatch(prefix):
        raise InvalidRegion(f"region prefix {prefix!r} is not 2, 4 or 6 ASCII digits")
    _check_province(prefix[:2], what="region prefix")
    while len(prefix) > 2 and prefix.endswith("00"):
        prefix = prefix[:-2]
    return prefix


def region_in(code: str, prefixes: Iterable[str]) -> bool:
    """Whether `code` lies under one of `prefixes`; no prefixes means nowhere."""
    region = parse_region(code)
    # Every prefix is normalised (and so validated) before any match: a malformed
    # claim such as "*" or "" fails loudly instead of being skipped or widening access.
    normalized = [normalize_prefix(prefix) for prefix in prefixes]
    return any(region.code.startswith(prefix) for prefix in normalized)


def _check_province(province: str, *, what: str) -> None:
    if province not in PROVINCE_NAMES and province not in PLACEHOLDER_PROVINCES:
        raise InvalidRegion(f"{what} starts with {province}, which is not a province-level code")

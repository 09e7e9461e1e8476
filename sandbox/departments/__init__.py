"""The departments the sandbox answers as, one module each, found here by code."""

from sandbox.departments import (
    disability,
    finance,
    housing_fund,
    hukou,
    market,
    marriage,
    medical_insurance,
    real_estate,
    social_insurance,
    tax,
    vehicle,
)
from sandbox.departments.base import Body, Department

DEPARTMENTS: dict[str, Department] = {
    module.DEPARTMENT.code: module.DEPARTMENT
    for module in (
        hukou,
        marriage,
        social_insurance,
        medical_insurance,
        housing_fund,
        tax,
        market,
        real_estate,
        vehicle,
        finance,
        disability,
    )
}

__all__ = ["DEPARTMENTS", "Body", "Department"]

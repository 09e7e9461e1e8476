"""The departments a household is checked against (核对), each with its code and holder.

Fengqiu §四(一) and Nanyang §四(一) name them: 户籍, 婚姻, 社保, 医保, 公积金, 税务,
工商 (市场监管), 房产 (不动产), 车辆, 金融, with 残联 for disability.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Department(StrEnum):
    HUKOU = "hukou"  # 户籍 — 公安局
    MARRIAGE = "marriage"  # 婚姻登记 — 民政局
    SOCIAL_INSURANCE = "social_insurance"  # 社保 — 人社局
    MEDICAL_INSURANCE = "medical_insurance"  # 医保 — 医保局
    HOUSING_FUND = "housing_fund"  # 公积金 — 公积金管理中心
    TAX = "tax"  # 税务 — 税务局
    MARKET = "market"  # 市场监管 (工商登记) — 市场监督管理局
    REAL_ESTATE = "real_estate"  # 不动产 — 不动产登记中心
    VEHICLE = "vehicle"  # 车辆 — 公安局交警
    FINANCE = "finance"  # 金融 (存款、证券、保险) — 人民银行
    DISABILITY = "disability"  # 残疾人证 — 残联


@dataclass(frozen=True)
class DepartmentInfo:
    code: Department
    name_zh: str
    holder_zh: str


DEPARTMENTS = {
    d.code: d
    for d in (
        DepartmentInfo(Department.HUKOU, "户籍", "公安局"),
        DepartmentInfo(Department.MARRIAGE, "婚姻登记", "民政局"),
        DepartmentInfo(Department.SOCIAL_INSURANCE, "社会保险", "人力资源和社会保障局"),
        DepartmentInfo(Department.MEDICAL_INSURANCE, "医疗保险", "医疗保障局"),
        DepartmentInfo(Department.HOUSING_FUND, "住房公积金", "住房公积金管理中心"),
        DepartmentInfo(Department.TAX, "税务", "税务局"),
        DepartmentInfo(Department.MARKET, "市场主体登记", "市场监督管理局"),
        DepartmentInfo(Department.REAL_ESTATE, "不动产登记", "不动产登记中心"),
        DepartmentInfo(Department.VEHICLE, "机动车登记", "公安局交通管理部门"),
        DepartmentInfo(Department.FINANCE, "金融资产", "中国人民银行"),
        DepartmentInfo(Department.DISABILITY, "残疾人证", "残疾人联合会"),
    )
}

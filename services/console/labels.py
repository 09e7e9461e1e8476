"""Chinese words for the API's codes, and the API's problem details said in Chinese.

The registry speaks in stable codes (`community_reviewed`, `step-not-allowed`,
`members.0.identity_number`); people read these instead. A code without a word here is shown as
it is, never dropped.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

STATUS = {
    "applied": "已申请（待初审）",
    "community_reviewed": "社区已初审（待复核）",
    "street_reviewed": "街道已复核（待审核）",
    "county_approved": "县已审核（待公示）",
    "publicly_noticed": "公示中",
    "enrolled": "已纳入",
    "rejected": "已驳回",
    "exited": "已退出",
}

STEP = {
    "community_review": "初审通过",
    "street_review": "复核通过",
    "county_approve": "审核通过",
    "start_notice": "开始公示",
    "object": "公示异议",
    "enroll": "纳入",
    "reject": "驳回",
    "reapply": "重新申请",
    "exit": "退出",
}
EXIT_KIND = {"tuokun": "脱困", "jiekun": "解困", "tuichu": "退出（其他原因）"}
# Steps whose comment is the reason, so the registry refuses them without one.
STEPS_NEEDING_A_REASON = frozenset({"reject", "object", "exit"})

CATEGORY = {
    "tekun": "城镇特困供养",
    "dibao": "低保",
    "dibao_edge": "低保边缘",
    "expenditure": "支出型/意外灾害",
    "migrant_worker": "农民工",
    "layoff": "下岗职工",
}

CAUSE = {
    "illness": "因病",
    "disability": "因残",
    "education": "因学",
    "disaster": "因灾/意外",
    "unemployment": "失业/下岗",
    "unpaid_social_insurance": "企业欠缴社保",
    "lack_of_labour": "缺乏劳动力",
    "other": "其他",
}

RELATION = {
    "head": "户主",
    "spouse": "配偶",
    "child": "子女",
    "parent": "父母",
    "grandparent": "祖父母",
    "grandchild": "孙子女",
    "sibling": "兄弟姐妹",
    "other": "其他",
}

# History lines (`action` of GET /v1/households/{id}/history); steps are `step:<step>`.
ACTION = {
    "apply": "建档申请",
    "change": "修改档案",
    "member_added": "增加成员",
    "member_removed": "减少成员",
    "member_changed": "修改成员",
    "helper_assigned": "指定帮扶责任人",
    "visit_recorded": "记录走访",
    "verification_attached": "核对结果到达",
    "entitlements_attached": "帮扶措施测算到达",
    "exit_eligibility_attached": "脱困提示到达",
    **{f"step:{step}": said for step, said in STEP.items()},
}

PLAN_GROUP = {
    "employment": "就业创业",
    "social_insurance": "社会保险",
    "medical": "医疗保障",
    "basic_living": "兜底保障",
    "education": "子女助学",
    "union": "工会帮扶",
    "housing": "住房保障",
}
PLAN_STATUS = {
    "planned": "计划中",
    "in_progress": "实施中",
    "delivered": "已落实",
    "stopped": "已停止",
}

HUKOU = {"urban": "城镇", "rural": "农村"}
LABOUR = {"full": "有劳动能力", "partial": "部分丧失劳动能力", "none": "无劳动能力"}
EMPLOYMENT = {
    "employed": "在职",
    "flexible": "灵活就业",
    "unemployed": "失业",
    "laid_off": "下岗",
    "retired": "退休",
    "student": "在校学生",
    "not_working_age": "非劳动年龄",
}
EDUCATION = {
    "none": "未上学",
    "preschool": "学前",
    "primary": "小学",
    "junior_high": "初中",
    "senior_high": "高中",
    "secondary_vocational": "中职",
    "college": "大学（含高职）",
}
CONSENT_STATE = {
    "valid": "有效",
    "not_yet_valid": "尚未生效",
    "expired": "已过期",
    "revoked": "已撤回",
}
# 家庭收入、财产申报: each item and whether it is an income (per month) or an asset.
DECLARED_ITEM = {
    "wages": ("income", "工资性收入"),
    "pension": ("income", "养老金"),
    "unemployment_benefit": ("income", "失业保险金"),
    "business_income": ("income", "经营性收入"),
    "other_income": ("income", "其他收入"),
    "deposits": ("asset", "存款"),
    "real_estate": ("asset", "房产"),
    "vehicle": ("asset", "车辆"),
    "business_shares": ("asset", "经营性股份"),
    "other_asset": ("asset", "其他财产"),
}
SEX = {"male": "男", "female": "女"}

VERIFICATION = {
    "pending": "核对中",
    "running": "核对中",
    "completed": "已完成",
    "partial": "部分完成",
    "failed": "核对失败",
}

ASSET = {
    "deposits_per_capita": "人均存款",
    "properties": "房产",
    "vehicles": "车辆",
    "business_capital": "经营资本",
}
# The verification service's departments (核对部门) and the state of each member × department.
DEPARTMENT = {
    "hukou": "户籍（公安局）",
    "marriage": "婚姻登记（民政局）",
    "social_insurance": "社会保险（人社局）",
    "medical_insurance": "医疗保险（医保局）",
    "housing_fund": "住房公积金",
    "tax": "税务（税务局）",
    "market": "市场主体登记（市场监管局）",
    "real_estate": "不动产登记",
    "vehicle": "机动车登记（交警）",
    "finance": "金融资产（人民银行）",
    "disability": "残疾人证（残联）",
}
ITEM_STATUS = {
    "ok": "已核对",
    "unavailable": "部门未响应",
    "no_consent": "无有效授权",
    "error": "答复无法读取",
}

# A department's circuit breaker at the verification service.
CIRCUIT = {"closed": "正常", "open": "暂停查询", "half_open": "试探恢复"}

PERIOD = {"month": "每月", "year": "每年", "once": "一次性"}
VERDICT = {"pass": "符合", "fail": "不符合", "unknown": "未能核对"}

# Form fields as the API names them (indexes removed), in the words of the filing form.
FIELD = {
    "location": "住址",
    "location.region": "行政区划代码",
    "location.address": "详细地址",
    "category": "类别",
    "causes": "致困原因",
    "members": "家庭成员",
    "members.name": "姓名",
    "members.identity_number": "身份证号",
    "members.relation": "与户主关系",
    "members.phone": "手机号",
    "comment": "意见",
    "plan": "帮扶计划",
    "measures.measure": "帮扶措施",
    "measures.lead_department": "牵头单位",
    "measures.group": "措施类别",
    "helper": "帮扶责任人",
    "id": "帮扶责任人编号",
    "unit": "工作单位",
    "phone": "手机号",
    "visited_on": "走访日期",
    "findings": "走访情况",
    "exit_kind": "退出类型",
    "signed_on": "签字日期",
    "expires_on": "有效期至",
    "document_ref": "授权书编号",
    "departments": "核对部门",
    "identity_number": "身份证号",
    "name": "姓名",
    "relation": "与户主关系",
    "month": "月份",
    "income_fen": "月收入",
    "member_id": "家庭成员",
    "reason": "理由",
    "status": "档案状态",
}

_IDENTITY_REASONS = {
    "length": "身份证号应为18位",
    "characters": "身份证号只能包含数字，最后一位可以是X",
    "region": "身份证号的前六位不是有效的行政区划代码",
    "birth_date": "身份证号中的出生日期无效",
    "future_birth_date": "身份证号中的出生日期晚于今天",
    "checksum": "身份证号校验位不正确，请核对每一位",
}

_UNAVAILABLE_TEXT = "服务暂时不可用，请稍后再试。如果一直如此，请联系系统管理员。"

# By the problem's type slug (the part after https://bangfu.org/problems/).
_TYPES = {
    "precondition-failed": (
        "这户档案在您打开之后已被他人修改，您的操作没有保存。下面是档案的最新内容，请确认后再提交。"
    ),
    "precondition-required": "缺少版本信息，请重新打开档案后再提交。",
    "step-not-allowed": "这一步现在不能进行：档案当前状态为「{current_status}」。",
    "forbidden": "您的账号没有进行这项操作的权限。",
    "region-not-allowed": "这户不在您负责的地区内。",
    "not-found": "没有找到这户档案，或它不在您负责的地区内。",
    "person-already-filed": "家庭中有成员已在另一户在办档案中，不能重复建档。",
    "invalid-identity-number": "身份证号有误。",
    "rule-broken": "不符合填报规则。",
    "invalid-input": "填写的内容有误，请按提示修改。",
    "malformed-json": "提交的内容格式有误。",
    "unauthorized": "登录已失效，请重新登录。",
    "too-many-requests": "操作过于频繁，请稍后再试。",
    "content-too-large": "提交的内容过大。",
    "no-consent": "家庭成员都没有有效的核对授权书，没有向任何部门查询。请先录入授权书。",
    "household-not-found": "核对服务没有找到这户档案，或它不在您负责的地区内。",
    "registry-unavailable": _UNAVAILABLE_TEXT,
}
_BY_STATUS = {
    400: "请求有误。",
    401: "登录已失效，请重新登录。",
    403: "您的账号没有进行这项操作的权限。",
    404: "没有找到。",
    409: "与档案当前状态冲突。",
    412: _TYPES["precondition-failed"],
    422: _TYPES["invalid-input"],
    429: _TYPES["too-many-requests"],
}
_UNAVAILABLE = _UNAVAILABLE_TEXT
_INDEX = re.compile(r"\.\d+(?=\.|$)")


@dataclass(frozen=True)
class FieldError:
    """One field's message, for the form to show beside it."""

    field: str  # the API's path: `members.1.identity_number` (or without an index)
    message: str


@dataclass(frozen=True)
class Said:
    """A problem as a person reads it: one sentence, and per-field messages."""

    message: str
    fields: tuple[FieldError, ...] = field(default_factory=tuple)

    @property
    def text(self) -> str:
        """The sentence and every field's message, for a page with no field to put them by."""
        return " ".join((self.message, *(error.message for error in self.fields)))

    def for_field(self, name: str) -> list[str]:
        return [error.message for error in self.fields if error.field == name]


def word(table: Mapping[str, str], code: Any) -> str:
    """The word for `code`, or the code itself when the table has none."""
    return table.get(str(code), str(code)) if code is not None else ""


def unavailable() -> Said:
    return Said(_UNAVAILABLE)


def problem(status: int, body: Mapping[str, Any] | None) -> Said:
    """A problem+json answer (or any error answer) said in Chinese; never the raw body."""
    body = body or {}
    slug = str(body.get("type", "")).rsplit("/", 1)[-1]
    message = _TYPES.get(slug) or _BY_STATUS.get(status) or _UNAVAILABLE
    if slug == "step-not-allowed":
        current = word(STATUS, body.get("current_status"))
        message = message.format(current_status=current)
        allowed = [word(STEP, s) for s in body.get("allowed_steps") or []]
        message += f"现在可以进行：{'、'.join(allowed)}。" if allowed else "现在没有可进行的步骤。"
    if slug == "forbidden" and body.get("missing_scopes"):
        message += f"（需要权限：{'、'.join(str(s) for s in body['missing_scopes'])}）"
    errors = body.get("errors")
    fields = tuple(_field_error(e) for e in errors if isinstance(e, dict)) if errors else ()
    return Said(message, fields)


def _field_error(error: Mapping[str, Any]) -> FieldError:
    path = str(error.get("field") or "")
    generic = _INDEX.sub("", path)
    code = str(error.get("code") or "")
    reason = str(error.get("reason") or "")
    if generic.endswith("identity_number") and code in _IDENTITY_REASONS:
        return FieldError(path, _IDENTITY_REASONS[code])
    label = FIELD.get(generic, generic or "内容")
    return FieldError(path, f"{label}：{_reason(reason)}")


# Pydantic's and the registry's own English reasons, the frequent ones in Chinese.
_REASONS = (
    (re.compile(r"at least 1 (character|item)"), "不能为空"),
    (re.compile(r"Field required"), "必须填写"),
    (re.compile(r"should match pattern"), "格式不正确"),
    (re.compile(r"Input should be"), "不是可选的值"),
    (re.compile(r"at most (\d+) character"), "太长了"),
    (re.compile(r"needs a reason"), "必须填写理由"),
    (re.compile(r"draft help plan"), "街道复核前须先制定帮扶计划（一户一计划）"),
    (re.compile(r"assign a helper before"), "记录走访前须先指定帮扶责任人"),
    (re.compile(r"say whether the household left"), "请选择退出类型（脱困、解困或退出）"),
    (re.compile(r"cannot be in the future"), "日期不能晚于今天"),
    (re.compile(r"exactly one head|one head"), "必须有且只有一位户主"),
    (re.compile(r"incomes are recorded for enrolled"), "已纳入的家庭才能登记月收入"),
    (re.compile(r"head cannot be removed"), "户主不能移除；请先指定新的户主"),
    (re.compile(r"already a member"), "此人已是本户成员"),
    (re.compile(r"already has a head"), "本户已有户主"),
)


def _reason(reason: str) -> str:
    for pattern, said in _REASONS:
        if pattern.search(reason):
            return said
    return f"填写有误（{reason}）" if reason else "填写有误"

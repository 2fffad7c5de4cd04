"""Error codes the simulator emits, with their English and Chinese messages (reference/drs-api.md §10)."""

from __future__ import annotations

from typing import Any

# code -> (HTTP status, en-us, zh-cn). '%s' is filled with the parameter or detail where the docs have one.
DRS_ERRORS: dict[str, tuple[int, str, str]] = {
    "DRS.M00004": (500, "Service is abnormal. Check logs.", "服务异常，请检查日志。"),
    "DRS.M00200": (400, "Parameter error.", "参数错误。"),
    "DRS.M00201": (400, "The parameter %s is empty.", "%s参数为空"),
    "DRS.M00202": (400, "The value of parameter %s is invalid.", "参数%s的值无效"),
    "DRS.M00210": (400, "The value of Page is invalid, %s", "分页参数无效，%s"),
    "DRS.M00211": (400, "The value of Page exceeds the upper limit.", "分页参数超出上限。"),
    "DRS.M00261": (403, "Invalid project ID.", "项目ID无效。"),
    "DRS.M00289": (400, "The task does not exist.", "任务不存在。"),
    "DRS.M00301": (400, "There are duplicate %s in request.", "请求中存在重复的%s。"),
    "DRS.M00303": (
        400,
        "The corresponding parameter is not obtained from the cache.",
        "未从缓存中获取到对应参数。",
    ),
    "DRS.M00304": (
        400,
        "This API cannot be called in the current task status.",
        "当前任务状态不允许调用此接口。",
    ),
    "DRS.M00308": (400, "Only parent tasks can invoke this interface.", "只有父任务才能调用此接口。"),
    "DRS.M01504": (
        202,
        "Another operation is being performed on the migration task or the migration task is abnormal. "
        "Try again later.",
        "迁移任务正在进行其他操作或迁移任务异常，请稍后重试。",
    ),
    "DRS.M05004": (
        400,
        "The task has been deleted or the resource has been released.",
        "任务已删除或资源已释放。",
    ),
}

# A variant of DRS.M00304 for yearly/monthly tasks: the only way out is to unsubscribe the order (HW-DEL).
PERIOD_ORDER_MSG = (
    "This API cannot be called in the current task status: the task is billed yearly/monthly, "
    "unsubscribe its order first.",
    "当前任务状态不允许调用此接口：包年/包月任务请先退订订单。",
)
UNSUBSCRIBED_RELEASING_MSG = (
    "This API cannot be called in the current task status: the order has been unsubscribed and the task is "
    "being released.",
    "当前任务状态不允许调用此接口：订单已退订，任务正在释放中。",
)
UNSUPPORTED_MEDIA_MSG = (
    "Unsupported Content-Type: the request body must be application/json.",
    "不支持的Content-Type：请求体必须为application/json。",
)

# Gateway errors: code -> (HTTP status, en-us, zh-cn); X-Language selects the text as it does for DRS.
APIGW_ERRORS: dict[str, tuple[int, str, str]] = {
    "APIGW.0101": (
        404,
        "The API does not exist or has not been published in the environment.",
        "API不存在或未在环境中发布。",
    ),
    "APIGW.0201": (413, "Request entity too large.", "请求体过大。"),
    "APIGW.0301": (401, "Incorrect IAM authentication information: %s", "IAM认证信息错误：%s"),
    "APIGW.0307": (401, "The token must be updated.", "Token需要更新。"),
    "APIGW.0308": (
        429,
        "The throttling threshold has been reached: policy user over ratelimit,limit:%s,time:1 minute",
        "已达到流控阈值：policy user over ratelimit,limit:%s,time:1 minute",
    ),
    "APIGW.0613": (503, "The IAM service is currently unavailable.", "IAM服务当前不可用。"),
}

# BSS (CBC) errors, for the whole call {error_code, error_msg} and in fail_resource_infos[]; the codes other
# than CBC.0100 and CBC.30000067 (seen in the Terraform provider) are plausible stand-ins [inference].
BSS_ERRORS: dict[str, tuple[int, str, str]] = {
    "CBC.0100": (400, "Invalid parameter.", "参数错误。"),
    "CBC.30000010": (400, "The resource does not exist.", "资源不存在。"),
    "CBC.30000054": (
        400,
        "The resource cannot be unsubscribed: it has an order being processed.",
        "资源存在处理中的订单，不能退订。",
    ),
    "CBC.30000067": (400, "The resource has been unsubscribed.", "资源已退订。"),
}


def language(header: str | None) -> str:
    """X-Language value -> 'zh-cn' or 'en-us' (the documented default)."""
    return "zh-cn" if (header or "").strip().lower() == "zh-cn" else "en-us"


def _fill(text: str, arg: str | None) -> str:
    return text.replace("%s", arg) if arg is not None and "%s" in text else text.replace("%s", "").strip()


def drs_message(code: str, lang: str, arg: str | None = None) -> str:
    """The error_msg for a DRS code in the requested language."""
    _, en, zh = DRS_ERRORS[code]
    return _fill(zh if lang == "zh-cn" else en, arg)


def drs_error(code: str, lang: str, arg: str | None = None, message: str | None = None) -> dict[str, Any]:
    """A DRS error body {error_code, error_msg}."""
    return {"error_code": code, "error_msg": message or drs_message(code, lang, arg)}


def apigw_error(code: str, request_id: str, arg: str | None = None, lang: str = "en-us") -> tuple[int, dict[str, Any]]:
    """An APIGW error status and body; the gateway adds request_id."""
    status, en, zh = APIGW_ERRORS[code]
    text = zh if lang == "zh-cn" else en
    msg = text.replace("%s", arg or "") if "%s" in text else text
    return status, {"error_code": code, "error_msg": msg, "request_id": request_id}


def bss_message(code: str, lang: str) -> str:
    _, en, zh = BSS_ERRORS[code]
    return zh if lang == "zh-cn" else en


def keystone_error(status: int, title: str, message: str) -> dict[str, Any]:
    """IAM answers Keystone-style."""
    return {"error": {"code": status, "message": message, "title": title}}

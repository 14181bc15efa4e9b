"""User-facing error titles in English and Simplified Chinese, and language choice.

Titles are per error code. The English ``detail`` is the error's own message (it names
the specifics); in Chinese the detail is the title followed by that message, since the
specifics (ids, numbers, field names) read the same in both.
"""

from __future__ import annotations

EN = "en"
ZH = "zh-Hans"
LANGUAGES = (EN, ZH)

TITLES: dict[str, tuple[str, str]] = {
    "error": ("Request failed", "请求失败"),
    "internal_error": ("Internal server error", "服务器内部错误"),
    "invalid_input": ("Invalid input", "输入无效"),
    "validation_failed": ("Validation failed", "校验失败"),
    "unknown_capability": ("Unknown capability", "未知的处理能力"),
    "invalid_option": ("Invalid option", "选项无效"),
    "invalid_image_size": ("Invalid image size", "图片尺寸无效"),
    "price_out_of_range": ("Price out of range", "价格超出范围"),
    "grant_already_expired": ("Grant already expired", "发放的额度已过期"),
    "invalid_image": ("Invalid image", "图片无效"),
    "empty_upload": ("Empty upload", "上传内容为空"),
    "not_an_image": ("Not an image", "不是图片文件"),
    "unsupported_format": ("Unsupported image format", "不支持的图片格式"),
    "truncated_image": ("Truncated image", "图片文件不完整"),
    "corrupt_image": ("Corrupt image", "图片文件已损坏"),
    "upload_too_large": ("Upload too large", "上传文件过大"),
    "request_too_large": ("Request body too large", "请求内容过大"),
    "too_many_pixels": ("Too many pixels", "图片像素过多"),
    "image_too_small": ("Image too small", "图片尺寸过小"),
    "declared_size_mismatch": ("Declared size does not match the image", "声明的尺寸与图片不符"),
    "not_found": ("Not found", "未找到"),
    "account_not_found": ("Account not found", "账户不存在"),
    "user_not_found": ("User not found", "用户不存在"),
    "key_not_found": ("API key not found", "API 密钥不存在"),
    "hold_not_found": ("Hold not found", "预留记录不存在"),
    "job_not_found": ("Job not found", "任务不存在"),
    "quote_not_found": ("Quote not found", "报价不存在"),
    "unknown_plan": ("Unknown plan", "未知的套餐"),
    "price_book_not_found": ("Price book not found", "价目表不存在"),
    "duplicate_price_book_version": ("Price book version already exists", "价目表版本已存在"),
    "order_not_found": ("Order not found", "订单不存在"),
    "unknown_payment_provider": ("Unknown payment provider", "未知的支付渠道"),
    "method_not_allowed": ("Method not allowed", "不支持该请求方法"),
    "ledger_error": ("Ledger error", "账本错误"),
    "insufficient_balance": ("Insufficient balance", "余额不足"),
    "hold_not_open": ("Hold already settled", "预留已结算"),
    "capture_exceeds_hold": ("Capture exceeds the hold", "扣款超过预留额度"),
    "idempotency_conflict": ("Idempotency key reused", "幂等键已被用于其他请求"),
    "quote_expired": ("Quote expired", "报价已过期"),
    "quote_mismatch": ("Quote does not match the request", "报价与请求不符"),
    "concurrency_limit": ("Concurrency limit reached", "已达到并发上限"),
    "unauthenticated": ("Authentication required", "需要身份验证"),
    "invalid_signature": ("Invalid signature", "签名无效"),
    "forbidden": ("Forbidden", "无权执行此操作"),
    "rate_limited": ("Too many requests", "请求过于频繁"),
    "invalid_job_state": ("Invalid job state", "任务状态不允许此操作"),
    "result_not_ready": ("The job has no result yet", "任务尚无结果"),
    "result_expired": ("The result was deleted", "结果已过保留期并被删除"),
    "invalid_share_link": ("Invalid share link", "分享链接无效"),
    "share_link_expired": ("Share link expired", "分享链接已过期"),
    "worker_lost": ("Worker lost", "处理节点中断"),
    "invalid_order_state": ("Invalid order state", "订单状态不允许此操作"),
    "payment_mismatch": ("Payment does not match the order", "支付信息与订单不符"),
    "worker_error": ("Worker error", "处理节点出错"),
    "worker_unavailable": ("No worker available", "暂无可用的处理节点"),
    "workflow_error": ("Workflow error", "工作流执行出错"),
    "job_timeout": ("Job timed out", "任务超时"),
    "image_decode_failed": ("Image could not be decoded", "图片无法解码"),
    "upload_refused": ("The worker refused the image", "处理节点拒收该图片"),
    "engine_setup_failed": ("Engine not available", "推理引擎不可用"),
    "job_cancelled": ("Job cancelled", "任务已取消"),
    "schema_mismatch": ("Database schema does not match", "数据库结构与程序版本不符"),
    "schema_out_of_date": ("Database schema out of date", "数据库结构需要升级"),
    "schema_ahead_of_code": ("Database schema newer than this gateway", "数据库结构比本网关新"),
}


def choose_language(accept_language: str | None) -> str:
    """``zh-Hans`` when the client prefers Simplified Chinese, else ``en``.

    Any ``zh`` tag counts as Simplified except Traditional ones (``zh-Hant``, ``zh-TW``,
    ``zh-HK``, ``zh-MO``), which we do not have; ``q`` weights are honoured.
    """
    if not accept_language:
        return EN
    ranked: list[tuple[float, int, str]] = []
    for position, part in enumerate(accept_language.split(",")):
        tag, *params = (piece.strip() for piece in part.split(";"))
        ranked.append((-_quality(params), position, tag.lower()))
    for negative_q, _, tag in sorted(ranked):
        if negative_q >= 0:
            continue
        if tag.startswith("zh") and _simplified(tag.split("-")[1:]):
            return ZH
        if tag.startswith("en") or tag == "*":
            return EN
    return EN


def _quality(params: list[str]) -> float:
    """A range's ``q`` (any parameter, ``Q`` too; 1 without one, 0 if unreadable)."""
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() == "q":
            try:
                quality = float(value)
            except ValueError:
                return 0.0
            return quality if 0.0 <= quality <= 1.0 else 0.0  # nan and inf are not
    return 1.0


def _simplified(subtags: list[str]) -> bool:
    """Whether a ``zh`` tag's subtags mean Simplified: its script if it names one
    (``zh-Hans-HK`` is), else not a Traditional region (``zh-TW``, ``zh-HK``, ``zh-MO``)."""
    lowered = [s.lower() for s in subtags]
    if "hans" in lowered:
        return True
    return "hant" not in lowered and not {"tw", "hk", "mo"} & set(lowered)


def title(code: str, language: str) -> str:
    """The title of ``code`` in ``language`` (English fallback for unknown codes)."""
    en, zh = TITLES.get(code, TITLES["error"])
    return zh if language == ZH else en


def detail(code: str, language: str, message: str) -> str:
    """The detail line: the message itself in English, title + message in Chinese."""
    return f"{title(code, ZH)}：{message}" if language == ZH else message

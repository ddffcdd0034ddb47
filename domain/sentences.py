"""Every sentence a citizen, a clinic or an operator reads, in Vietnamese with the English gloss operators read.

The one place these words are written: replies, the citizen page, the terminal and the FHIR Bundle
import them from here. A sentence shown to the citizen alone (`citizen`) has no gloss; one that is
also read by an operator in a reply or a log (`said`) carries its gloss in brackets.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any


@dataclass(frozen=True)
class Sentence:
    """A sentence in Vietnamese and its English gloss, each a format string over the same named values."""

    vi: str
    en: str = ""

    def citizen(self, **values: Any) -> str:
        """The Vietnamese alone, as the citizen reads it."""
        return self.vi.format(**values)

    def said(self, **values: Any) -> str:
        """The Vietnamese with the English gloss in brackets and a full stop, as a reply or an operator reads it."""
        vi = self.vi.format(**values)
        return f"{vi} ({self.en.format(**values)})." if self.en else vi


# The health book (integration replies)
EMPTY_HISTORY = Sentence("Chưa có lịch sử khám chữa bệnh theo BHYT")
YEAR_SERVED = Sentence("{count} lượt khám chữa bệnh BHYT năm {year}")
EVERY_YEAR_SERVED = Sentence("{count} lượt khám chữa bệnh BHYT qua các năm")
DETAIL_SERVED = Sentence("Chi tiết lượt khám {visit_code} tại cơ sở {facility_code}")
FHIR_SERVED = Sentence("FHIR R4 Bundle: {count} lượt khám")
SEALED_VISIT = Sentence("Lượt khám có thông tin nhạy cảm nên được ẩn trong danh sách; "
                        "bạn xem đầy đủ khi mở chi tiết lượt khám này.")

# Refusals (integration replies), one per refusal code
NOT_FOUND = Sentence("Không tìm thấy lượt khám này trong sổ sức khỏe của bạn", "no such visit in your health book")
INTERNAL_ERROR = Sentence("Hệ thống chưa xử lý được yêu cầu này; vui lòng thử lại sau",
                          "healthbook failed on this request and has logged it")
TOO_LARGE = Sentence("Sổ sức khỏe này quá lớn để gửi trong một lần; vui lòng xem từng năm hoặc từng lượt khám",
                     "the reply would exceed the topic's largest record")
UNSIGNED_REQUEST = Sentence("Yêu cầu không có chữ ký của nền tảng định danh", "request is not signed")
UNKNOWN_REQUEST_KEY = Sentence("Khóa ký '{key_id}' không được tin cậy", "key not trusted")
BAD_REQUEST_SIGNATURE = Sentence("Chữ ký của yêu cầu không hợp lệ", "signature does not verify")
RETIRED_REQUEST_FORM = Sentence("Chữ ký của yêu cầu không hợp lệ",
                                "a schema-{schema_id} request is signed in the retired integration-request/v1 form, "
                                "refused since {until}; sign version 4 requests (schema id 19)")
STALE_REQUEST = Sentence("Yêu cầu đã hết hạn hoặc sai thời điểm; vui lòng xác nhận lại",
                         "requested_at {requested_at} is {drift} {side}; the window is ±{window}")
IDENTITY_LEVEL = Sentence("Cần tài khoản định danh điện tử mức {needed}", "account is level {level}")
NO_CONSENT = Sentence("Công dân chưa xác nhận tích hợp", "the citizen has not confirmed")
REPLAYED_REQUEST = Sentence("Yêu cầu này đã được xử lý; vui lòng xác nhận lại", "request_id was already served")
UNREADABLE_REQUEST = Sentence("Yêu cầu không đọc được ({problem}).")
MALFORMED_REQUEST = Sentence("Yêu cầu không hợp lệ ({problem}).")

# A visit's clinic signature, as the citizen page shows it
SIGNATURE_NOT_KEPT = Sentence("Lượt khám này được ghi trước khi sổ lưu chữ ký số kèm theo.")
SIGNATURE_IN_DETAIL = Sentence("Chữ ký số được kiểm tra khi mở chi tiết lượt khám.")
REVOCATION_NOT_CURRENT = Sentence("Chưa kiểm tra được chữ ký số lúc này: danh sách chứng thư bị thu hồi của tổ chức "
                                  "chứng thực chưa được cập nhật.")
SIGNATURE_FAILED = Sentence("Chữ ký số KHÔNG hợp lệ: {why}")
SIGNED_MESSAGE_UNREADABLE = Sentence("thông điệp đã ký không đọc được ({problem}).")
KEY_NOT_CERTIFIED = Sentence("khóa ký không có chứng thư số hợp lệ của cơ sở do tổ chức chứng thực tin cậy cấp "
                             "({problem}).")
NOT_THIS_VISIT = Sentence("thông điệp đã ký không phải của lượt khám này.")
SIGNATURE_BROKEN = Sentence("nội dung đã bị thay đổi sau khi ký.")
CONTENT_NOT_SIGNED = Sentence("nội dung được gửi tới khác nội dung cơ sở đã ký ({fields}); nội dung dưới đây "
                              "không được xác thực.")
SIGNATURE_VALID = Sentence("Chữ ký số hợp lệ (khóa {key_id} của cơ sở {clinic_code}).")

# The identity app's flow (the citizen page)
CONFIRMATION = Sentence("Thông tin về lịch sử khám chữa bệnh BHYT của bạn sẽ được tích hợp hiển thị lên ứng dụng "
                        "VNeID. Vui lòng xác nhận để hệ thống tiếp tục xử lý")
LEVEL_ONE_ACCOUNT = Sentence("Tài khoản của bạn là tài khoản định danh điện tử mức 1. Bạn cần tài khoản định danh "
                             "điện tử mức 2 để xem Sổ sức khỏe điện tử.")
NO_REPLY = Sentence("Hệ thống sổ sức khỏe chưa phản hồi. Vui lòng thử lại sau ít phút",
                    "no reply from the query consumer within {seconds} s")
PERSONAL_ID_FORMAT = Sentence("Số định danh cá nhân gồm đúng 12 chữ số, như trên căn cước công dân.")
PERSONAL_ID_PROVINCE = Sentence("Ba chữ số đầu của số định danh cá nhân không phải mã tỉnh, thành phố nào.")
WRONG_PASSCODE = Sentence("Mã passcode không đúng. Vui lòng nhập lại.")
PASSCODE_LOCKED = Sentence("Bạn đã nhập sai passcode {count} lần nên tạm thời bị khóa. Vui lòng thử lại sau "
                           "{until}.")
FORM_REFUSED = Sentence("Yêu cầu không được gửi từ trang này hoặc biểu mẫu đã hết hạn. Vui lòng tải lại trang "
                        "và thử lại.")
REFUSED = Sentence("Từ chối")

# Words shown beside values
RESULT_FLAGS = {"high": ("↑", "Cao hơn bình thường"), "low": ("↓", "Thấp hơn bình thường"),
                "normal": ("", "Bình thường")}
VISIT_TYPES = {1: "Khám ngoại trú", 2: "Điều trị ngoại trú", 3: "Điều trị nội trú"}  # MA_LOAI_KCB
TREATMENT_RESULTS = {1: "Khỏi", 2: "Đỡ", 3: "Không thay đổi", 4: "Nặng hơn", 5: "Tử vong"}  # KET_QUA_DTRI
FACILITY = Sentence("Cơ sở khám bệnh, chữa bệnh {code}")


def money(value: Any) -> str:
    """An amount in đồng as Vietnamese write it (1.234.567 đ), or '-' when there is none."""
    return "-" if value is None else f"{value:,.0f} đ".replace(",", ".")


def day(value: str | None) -> str:
    """A QĐ 4750 date or time (yyyyMMdd[HHmm]) as dd/MM/yyyy, or '-' when there is none."""
    return f"{value[6:8]}/{value[4:6]}/{value[:4]}" if value else "-"


def minute(value: str | None) -> str:
    """A QĐ 4750 time (yyyyMMddHHmm) as dd/MM/yyyy HH:mm; a date alone as dd/MM/yyyy; '-' when there is none."""
    if not value:
        return "-"
    return f"{day(value)} {value[8:10]}:{value[10:12]}" if len(value) >= 12 else day(value)


def facility_label(code: str) -> str:
    """How a facility is named where the book has only its code (MA_CSKCB)."""
    return FACILITY.citizen(code=code)


def span(delta: timedelta) -> str:
    """A duration as an operator reads it: days when a day or more, else minutes and seconds."""
    seconds = int(delta.total_seconds())
    return f"{seconds // 86400} d" if seconds >= 86400 else f"{seconds // 60} min {seconds % 60} s"


def stale_request(requested_at: datetime, drift: timedelta, window: timedelta) -> str:
    """Why a request dated outside the window is refused, with how far off it is."""
    return STALE_REQUEST.said(requested_at=f"{requested_at:%Y-%m-%dT%H:%M:%SZ}", drift=span(abs(drift)),
                              side="in the future" if drift > timedelta(0) else "ago", window=span(window))

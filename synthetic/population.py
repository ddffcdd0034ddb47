"""Synthetic clinics, citizens and visits for demos, tests and benchmarks: invented people, real shapes."""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

CLINICS = {
    "79001": "Bệnh viện Đa khoa Quận 5 (TP. Hồ Chí Minh)",
    "01002": "Trung tâm Y tế Quận Ba Đình (Hà Nội)",
    "48003": "Phòng khám Đa khoa Hải Châu (Đà Nẵng)",
}

_FAMILY = ["Nguyễn", "Trần", "Lê", "Phạm", "Hoàng", "Huỳnh", "Phan", "Vũ", "Võ", "Đặng", "Bùi", "Đỗ"]
_MIDDLE = ["Văn", "Thị", "Minh", "Ngọc", "Thanh", "Quốc", "Thu", "Hữu", "Gia", "Bảo"]
_GIVEN = ["An", "Bình", "Châu", "Dũng", "Giang", "Hà", "Hải", "Hạnh", "Hùng", "Lan", "Linh", "Long",
          "Mai", "Minh", "Nam", "Ngân", "Phúc", "Quân", "Sơn", "Tâm", "Thảo", "Trang", "Tuấn", "Yến"]
_STREETS = ["Lê Lợi", "Trần Hưng Đạo", "Nguyễn Trãi", "Hai Bà Trưng", "Điện Biên Phủ", "Bạch Đằng"]

DIAGNOSES = [
    ("J06.9", "Viêm họng cấp", "Sốt, ho, đau họng"),
    ("I10", "Tăng huyết áp vô căn", "Đau đầu, chóng mặt"),
    ("E11", "Đái tháo đường không phụ thuộc insuline", "Khám định kỳ đái tháo đường"),
    ("K29.7", "Viêm dạ dày, không đặc hiệu", "Đau thượng vị"),
    ("M54.5", "Đau thắt lưng", "Đau lưng 1 tuần"),
    ("J20.9", "Viêm phế quản cấp", "Ho có đờm 5 ngày"),
    ("A09", "Tiêu chảy và viêm dạ dày ruột", "Tiêu chảy 2 ngày"),
    ("H10.9", "Viêm kết mạc", "Đỏ mắt, chảy nước mắt"),
]
MEDICINES = [
    ("40.1", "Paracetamol", "500mg", "Uống", "1 viên/lần, 3 lần/ngày", "Uống sau ăn"),
    ("40.677", "Amlodipin", "5mg", "Uống", "1 viên/ngày", "Uống buổi sáng"),
    ("40.1000", "Omeprazol", "20mg", "Uống", "1 viên/lần, 2 lần/ngày", "Uống trước ăn"),
    ("40.234", "Metformin", "850mg", "Uống", "1 viên/lần, 2 lần/ngày", "Uống trong bữa ăn"),
    ("40.88", "Amoxicilin", "500mg", "Uống", "1 viên/lần, 3 lần/ngày", "Uống đủ 7 ngày"),
    ("40.512", "Loratadin", "10mg", "Uống", "1 viên/ngày", "Uống buổi tối"),
]
LAB_TESTS = [
    ("22.0120.1494", "WBC", "Số lượng bạch cầu", "G/L", (4.0, 10.0)),
    ("22.0120.1494", "HGB", "Huyết sắc tố", "g/L", (120.0, 160.0)),
    ("23.0075.1494", "GLU", "Glucose máu", "mmol/L", (3.9, 6.4)),
    ("23.0058.1494", "CHOL", "Cholesterol toàn phần", "mmol/L", (3.9, 5.2)),
]


@dataclass(frozen=True)
class Citizen:
    """An invented person with a personal ID consistent with birth date and sex."""

    personal_id: str
    full_name: str
    birth_date: str
    sex: int
    province: str
    address: str
    card_number: str


def make_citizen(rng: random.Random, province: str = "079") -> Citizen:
    """Invent a citizen whose 12-digit personal ID encodes province, century, sex and birth year."""
    year = rng.randint(1940, 2012)
    sex = rng.choice((1, 2))
    birth = datetime(year, rng.randint(1, 12), rng.randint(1, 28))
    century_digit = (year // 100 - 19) * 2 + (sex - 1)
    personal_id = f"{province}{century_digit}{year % 100:02d}{rng.randint(0, 999_999):06d}"
    middle = "Thị" if sex == 2 and rng.random() < 0.6 else rng.choice(_MIDDLE)
    name = f"{rng.choice(_FAMILY)} {middle} {rng.choice(_GIVEN)}"
    address = f"{rng.randint(1, 300)} {rng.choice(_STREETS)}, tỉnh/thành {province[1:]}"
    card = f"GD4{province[1:]}{rng.randint(0, 9_999_999_999):010d}"
    return Citizen(personal_id, name, birth.strftime("%Y%m%d"), sex, province[1:], address, card)


def make_visit(rng: random.Random, citizen: Citizen, facility_code: str, sequence: int,
               admitted: datetime, version: int = 1) -> dict[str, Any]:
    """Invent one outpatient visit of a citizen at a facility, as a VisitEvent record."""
    code, name, reason = rng.choice(DIAGNOSES)
    discharged = admitted + timedelta(minutes=rng.randint(20, 180))
    medicines = []
    for line, (drug, drug_name, strength, route, dose, how) in enumerate(rng.sample(MEDICINES, rng.randint(1, 3)), 1):
        medicines.append({
            "line_no": line, "drug_code": drug, "name": drug_name, "unit": "Viên", "strength": strength,
            "route": route, "dose": dose, "instructions": how, "quantity": float(rng.choice((10, 14, 21, 30))),
            "prescriber_code": f"BS{rng.randint(1, 99):04d}", "ordered_at": admitted.strftime("%Y%m%d%H%M"),
        })
    results = []
    for line, (service, indicator, label, unit, (low, high)) in enumerate(rng.sample(LAB_TESTS, rng.randint(0, 2)), 1):
        value = round(rng.uniform(low * 0.8, high * 1.2), 1)
        results.append({
            "line_no": line, "service_code": service, "indicator_code": indicator, "indicator_name": label,
            "value": str(value), "unit": unit, "description": None,
            "conclusion": "Bình thường" if low <= value <= high else ("Tăng" if value > high else "Giảm"),
            "result_at": (admitted + timedelta(minutes=15)).strftime("%Y%m%d%H%M"),
        })
    total = Decimal(rng.randint(50, 900) * 1000)
    insured = (total * Decimal("0.8")).quantize(Decimal("0.01"))
    return {
        "event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "version": version,
        "facility_code": facility_code,
        "visit_code": f"{facility_code}-{admitted:%Y}-{sequence:07d}",
        "patient": {
            "personal_id": citizen.personal_id, "patient_code": f"BN{sequence:07d}",
            "full_name": citizen.full_name, "birth_date": citizen.birth_date, "sex": citizen.sex,
            "address": citizen.address, "province_code": citizen.province, "phone": None,
            "insurance_card_numbers": [citizen.card_number],
        },
        "visit_type": 1,
        "admitted_at": admitted.strftime("%Y%m%d%H%M"),
        "discharged_at": discharged.strftime("%Y%m%d%H%M"),
        "reason": reason,
        "admission_diagnosis": name,
        "discharge_diagnosis": name,
        "main_diagnosis_code": code,
        "secondary_diagnosis_codes": [],
        "treatment_result": rng.choice((1, 2)),
        "discharge_type": 1,
        "follow_up_date": (admitted + timedelta(days=7)).strftime("%Y%m%d") if rng.random() < 0.3 else None,
        "department_code": "K01",
        "total_cost": total,
        "insurance_paid": insured,
        "patient_paid": total - insured,
        "medicines": medicines,
        "results": results,
    }


def make_population(seed: int, citizens: int, visits: int, clinics: list[str], years: tuple[int, ...]
                    ) -> tuple[list[Citizen], list[dict[str, Any]]]:
    """Invent citizens and visits spread over clinics and years, deterministically from seed."""
    rng = random.Random(seed)
    people = [make_citizen(rng, rng.choice(("079", "001", "048"))) for _ in range(citizens)]
    events = []
    for sequence in range(1, visits + 1):
        citizen = people[(sequence - 1) % citizens] if sequence <= citizens else rng.choice(people)
        admitted = datetime(rng.choice(years), rng.randint(1, 12), rng.randint(1, 28), rng.randint(7, 16),
                            rng.choice((0, 15, 30, 45)))
        events.append(make_visit(rng, citizen, rng.choice(clinics), sequence, admitted))
    return people, events

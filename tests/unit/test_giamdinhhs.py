"""Reading GIAMDINHHS dossiers and mapping each HOSO to a visit event: the sample, generated quirks, bad input."""

import base64
import random
import unicodedata
from decimal import Decimal
from pathlib import Path

import pytest

from healthbook.config import PROJECT_ROOT
from producers.xml_ingest.dossier_mapping import MappingFailed, map_hoso, source_of
from producers.xml_ingest.giamdinhhs import DossierReader
from schemas.visit import VisitEvent
from synthetic.dossiers import Quirks, write_dossier
from synthetic.population import make_population

SAMPLE = PROJECT_ROOT / "tests" / "fixtures" / "giamdinhhs-sample.xml"  # the synthetic sample of shared/samples


def read(path: Path) -> tuple[DossierReader, list]:
    reader = DossierReader(path)
    return reader, list(reader)


def events(n: int, seed: int = 3, **changes) -> list[dict]:
    _, made = make_population(seed, max(1, n // 2), n, ["79001"], (2026,))
    return [VisitEvent.model_validate(dict(e, **changes)).model_dump() for e in made]


def dossier(tmp_path: Path, body: str, facility: str = "79001", root_attrs: str = "") -> Path:
    path = tmp_path / "dossier.xml"
    path.write_text(f'<?xml version="1.0" encoding="utf-8"?><GIAMDINHHS{root_attrs}><THONGTINDONVI><MACSKCB>'
                    f"{facility}</MACSKCB></THONGTINDONVI><THONGTINHOSO><NGAYLAP>20260315</NGAYLAP><DANHSACHHOSO>"
                    f"{body}</DANHSACHHOSO></THONGTINHOSO><CHUKYDONVI/></GIAMDINHHS>", encoding="utf-8")
    return path


def file_hoso(kind: str, xml: str) -> str:
    return (f"<FILEHOSO><LOAIHOSO>{kind}</LOAIHOSO><NOIDUNGFILE>{base64.b64encode(xml.encode()).decode()}"
            "</NOIDUNGFILE></FILEHOSO>")


def test_the_sample_dossier_maps_field_by_field():
    reader, hosos = read(SAMPLE)
    assert (reader.header.facility_code, reader.header.created_on, reader.header.declared_count) == \
        ("79001", "20260315", 2)
    assert [h.problems for h in hosos] == [[], []]
    first = VisitEvent.model_validate(map_hoso(hosos[0], "79001", 20260315))
    assert first.visit_code == "79001-2026-000123" and first.version == 20260315
    assert (first.patient.full_name, first.patient.personal_id, first.patient.birth_date, first.patient.sex) == \
        ("Nguyễn Thị Lan", "079186001234", "19860412", 2)
    assert first.patient.insurance_card_numbers == ["DN4797912345678"]
    assert first.patient.address == "12 Đường Số 3, Phường Bến Nghé, TP. Hồ Chí Minh"
    assert (first.admitted_at, first.discharged_at, first.visit_type) == ("202603150830", "202603150945", 1)
    assert (first.main_diagnosis_code, first.secondary_diagnosis_codes) == ("J02.9", ["I10"])
    assert first.discharge_diagnosis == "Viêm họng cấp; Tăng huyết áp"
    assert first.reason == "Sốt, ho, đau họng 3 ngày"
    assert (first.total_cost, first.insurance_paid, first.patient_paid) == \
        (Decimal("122000"), Decimal("97600"), Decimal("24400"))
    assert [(m.name, m.strength, m.dose, m.instructions, m.quantity) for m in first.medicines] == [
        ("Paracetamol", "500mg", "1 viên/lần, 3 lần/ngày", "Uống sau ăn", 15.0),
        ("Amlodipin", "5mg", "1 viên/ngày", "Uống buổi sáng", 30.0)]
    assert first.medicines[0].extra["DON_GIA"] == "1200"
    assert [(r.indicator_name, r.value, r.unit, r.conclusion) for r in first.results] == [
        ("Số lượng bạch cầu", "11.2", "G/L", "Tăng nhẹ"), ("Tỷ lệ bạch cầu trung tính", "78", "%", "Tăng")]
    assert (first.follow_up.appointment_no, first.follow_up.appointment_date) == ("GH0123", "20260322")
    assert first.follow_up_date == "20260322"
    assert first.extra["MA_HSBA"] == "79001-2026-000123", "elements without a field of their own are kept"
    second = VisitEvent.model_validate(map_hoso(hosos[1], "79001", 20260315))
    assert (second.patient.full_name, second.follow_up, second.results) == ("Trần Văn Minh", None, [])


@pytest.mark.parametrize("quirks", [
    Quirks(encoding="base64", bom=True), Quirks(encoding="base64", declaration=False),
    Quirks(encoding="nested"), Quirks(encoding="escaped"), Quirks(shuffle_tables=True), Quirks(nfd=True),
])
def test_generated_dossiers_round_trip_whatever_the_quirk(tmp_path, quirks):
    sent = events(4)
    sent[0]["services"] = [{"line_no": 1, "service_code": "18.0001", "service_name": "Chụp X-quang ngực thẳng",
                            "supply_code": None, "supply_name": None, "quantity": 1.0, "ordered_at": "202603150900",
                            "result_at": "202603151000", "result": "Bình thường", "performed_by": "KTV01",
                            "extra": {}}]
    path = tmp_path / "generated.xml"
    with path.open("w", encoding="utf-8") as out:
        write_dossier(out, "79001", "20260320", sent, len(sent), [quirks] * len(sent), random.Random(5))
    reader, hosos = read(path)
    for hoso, original in zip(hosos, sent, strict=True):
        got = VisitEvent.model_validate(map_hoso(hoso, reader.header.facility_code, 7)).model_dump()
        for field in ("event_id", "version"):
            got.pop(field), original.pop(field)
        assert got == original


def test_vietnamese_text_is_stored_in_nfc(tmp_path):
    sent = events(1)
    sent[0]["patient"]["full_name"] = "Nguyễn Thị Hạnh"
    path = tmp_path / "nfd.xml"
    with path.open("w", encoding="utf-8") as out:
        write_dossier(out, "79001", "20260320", sent, 1, [Quirks(nfd=True, encoding="nested")])
    raw = path.read_text(encoding="utf-8")
    assert unicodedata.normalize("NFD", "Nguyễn Thị Hạnh") in raw and "Nguyễn Thị Hạnh" not in raw
    _, (hoso,) = read(path)
    assert map_hoso(hoso, "79001", 1)["patient"]["full_name"] == "Nguyễn Thị Hạnh"


def test_optional_tables_may_be_absent_and_sensitive_ones_are_set_apart(tmp_path):
    summary = events(1)[0]
    path = tmp_path / "only.xml"
    with path.open("w", encoding="utf-8") as out:
        write_dossier(out, "79001", "20260320", [dict(summary, medicines=[], results=[])], 1)
    _, (hoso,) = read(path)
    assert list(hoso.tables) == ["XML1"]
    body = path.read_text().replace("</HOSO>", file_hoso("XML6", "<HO_SO><MA_LK>x</MA_LK><MA_THE_ARV>1</MA_THE_ARV>"
                                                          "</HO_SO>") + file_hoso("XML9", "<CHI_TIEU_XML9><MA_LK>x"
                                                          "</MA_LK><HO_TEN_CON>Bé An</HO_TEN_CON></CHI_TIEU_XML9>")
                                    + "</HOSO>")
    path.write_text(body)
    _, (hoso,) = read(path)
    event = map_hoso(hoso, "79001", 1)
    assert event["sensitive"] == [{"table": "XML6", "records": [{"MA_LK": "x", "MA_THE_ARV": "1"}]}]
    assert event["certificates"] == [{"table": "XML9", "records": [{"MA_LK": "x", "HO_TEN_CON": "Bé An"}]}]
    assert "MA_THE_ARV" not in str({k: v for k, v in event.items() if k != "sensitive"})


@pytest.mark.parametrize(("fixture", "table", "visit_code", "element", "value"), [
    ("giamdinhhs-xml10.xml", "XML10", "79001-2026-000310", "SO_SERI", "NDT-2026-0042"),
    ("giamdinhhs-xml12.xml", "XML12", "79001-2026-000412", "KET_QUA_KHAM", "Tổn thương cơ thể do bệnh tật 21%"),
])
def test_pregnancy_leave_and_medical_assessment_are_kept_verbatim(fixture, table, visit_code, element, value):
    reader, (hoso,) = read(PROJECT_ROOT / "tests" / "fixtures" / fixture)
    assert hoso.problems == [] and set(hoso.tables) == {"XML1", table}
    event = VisitEvent.model_validate(map_hoso(hoso, reader.header.facility_code, 1))
    assert event.visit_code == visit_code
    (kept,) = event.certificates
    assert kept.table == table and len(kept.records) == 1
    assert kept.records[0]["MA_LK"] == visit_code and kept.records[0][element] == value


def _one_hoso_with(tmp_path: Path, extra_tables: str):
    """One valid HOSO with extra FILEHOSO elements appended, read back."""
    path = tmp_path / "extra-tables.xml"
    with path.open("w", encoding="utf-8") as out:
        write_dossier(out, "79001", "20260320", events(1), 1)
    path.write_text(path.read_text().replace("</HOSO>", extra_tables + "</HOSO>"))
    _, (hoso,) = read(path)
    return hoso


def test_a_table_outside_the_standard_refuses_the_visit_rather_than_losing_it(tmp_path):
    hoso = _one_hoso_with(tmp_path, file_hoso("XML16", "<GIAY><MA_LK>x</MA_LK><NOI_DUNG>a</NOI_DUNG></GIAY>"))
    with pytest.raises(MappingFailed) as failed:
        map_hoso(hoso, "79001", 1)
    assert [(p.field, p.rule) for p in failed.value.problems] == [("XML16.LOAIHOSO", "unknown_table")]


def test_a_table_whose_records_name_no_visit_is_refused(tmp_path):
    hoso = _one_hoso_with(tmp_path, file_hoso("XML12", "<GIAM_DINH><SO_BIEN_BAN>GD-1</SO_BIEN_BAN></GIAM_DINH>")
                          + file_hoso("XML10", "<EMPTY/>"))
    assert [(p.field, p.rule) for p in hoso.problems] == [("XML12.NOIDUNGFILE", "table_without_records")]
    assert hoso.tables["XML10"] == []  # an empty table is no loss: nothing was in it


def test_a_bad_table_names_its_place_and_the_next_hoso_still_reads(tmp_path):
    good = events(1)[0]
    path = tmp_path / "good.xml"
    with path.open("w", encoding="utf-8") as out:
        write_dossier(out, "79001", "20260320", [good], 1)
    bad = ("<HOSO>" + file_hoso("XML1", "<TONG_HOP><MA_LK>BAD-1</MA_LK></TONG_HOP>")
           + "<FILEHOSO><LOAIHOSO>XML2</LOAIHOSO><NOIDUNGFILE>%%% not base64 %%%</NOIDUNGFILE></FILEHOSO></HOSO>")
    path.write_text(path.read_text().replace("<DANHSACHHOSO>\n", "<DANHSACHHOSO>\n" + bad))
    _, (first, second) = read(path)
    with pytest.raises(MappingFailed) as failed:
        map_hoso(first, "79001", 1)
    (problem,) = [p for p in failed.value.problems if p.field.startswith("XML2.")]
    assert (problem.field, problem.rule) == ("XML2.NOIDUNGFILE", "content_encoding")
    assert first.visit_code == "BAD-1"
    assert VisitEvent.model_validate(map_hoso(second, "79001", 1)).visit_code == good["visit_code"]


def test_missing_summary_and_bad_numbers_are_named(tmp_path):
    path = dossier(tmp_path, "<HOSO>" + file_hoso("XML2", "<X><CHI_TIET_THUOC><MA_LK>A</MA_LK></CHI_TIET_THUOC></X>")
                   + "</HOSO>")
    _, (hoso,) = read(path)
    with pytest.raises(MappingFailed) as failed:
        map_hoso(hoso, "79001", 1)
    assert [(p.field, p.rule) for p in failed.value.problems] == [("XML1.TONG_HOP", "summary_count")]

    event = events(1)[0]
    good = tmp_path / "n.xml"
    with good.open("w", encoding="utf-8") as out:
        write_dossier(out, "79001", "20260320", [event], 1, [Quirks(encoding="nested")])
    good.write_text(good.read_text().replace("<GIOI_TINH>", "<GIOI_TINH>x", 1))
    _, (hoso,) = read(good)
    with pytest.raises(MappingFailed) as failed:
        map_hoso(hoso, "79001", 1)
    (problem,) = failed.value.problems
    assert (problem.field, problem.rule) == ("XML1.GIOI_TINH", "number_format")
    assert problem.value.startswith("x")


def test_a_default_namespace_and_entities_are_handled_safely(tmp_path):
    event = events(1)[0]
    path = tmp_path / "ns.xml"
    with path.open("w", encoding="utf-8") as out:
        write_dossier(out, "79001", "20260320", [event], 1, [Quirks(encoding="nested")])
    text = path.read_text().replace("<GIAMDINHHS ", '<GIAMDINHHS xmlns="urn:vendor:bhyt" ')
    text = text.replace('<?xml version="1.0" encoding="utf-8"?>\n',
                        '<?xml version="1.0" encoding="utf-8"?>\n<!DOCTYPE GIAMDINHHS [<!ENTITY leak SYSTEM '
                        '"file:///etc/hostname">]>\n', 1)
    text = text.replace("<MA_KHOA>K01</MA_KHOA>", "<MA_KHOA>&leak;</MA_KHOA>", 1)
    path.write_text(text)
    reader, (hoso,) = read(path)
    assert reader.header.facility_code == "79001"
    assert hoso.tables["XML1"][0].get("MA_KHOA") in (None, "")


def test_violations_point_back_to_the_standard_names():
    assert source_of("patient.personal_id") == "XML1.SO_CCCD"
    assert source_of("discharged_at") == "XML1.NGAY_RA"
    assert source_of("medicines.2.ordered_at") == "XML2.NGAY_YL (record 3)"
    assert source_of("secondary_diagnosis_codes.0") == "XML1.MA_BENH_KT (item 1)"
    assert source_of("follow_up.appointment_date") == "XML14.NGAY_HEN_KL"

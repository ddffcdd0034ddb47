"""A visit as each subscriber receives it: bands, chapters, rounding, and pseudonyms that link only where allowed."""

from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from domain.analytics_policy import parse_policy
from domain.generalise import age_band, cell_of, diagnosis_chapter, generalise, rounded

MASTER = b"m" * 32
EVERYTHING = parse_policy('name = "all"\nreceives = ["pseudonym", "age_band", "sex", "province", '
                          '"facility_province", "facility_code", "visit_type", "treatment_days", "main_diagnosis", '
                          '"diagnosis_chapter", "secondary_diagnoses", "treatment_result", "drugs", "costs"]', "t")


def visit(**changes):
    base = {"pseudonym": "p" * 64, "visit_ref": "v" * 64, "version": 1, "facility_code": "79001", "birth_year": 1980,
            "sex": 2, "province_code": "79", "visit_type": 1, "admitted_month": "202603", "treatment_days": 3,
            "main_diagnosis_code": "J20.9", "secondary_diagnosis_codes": ["I10"], "treatment_result": 1,
            "drug_codes": ["40.17"], "total_cost": Decimal("1234567.89"), "insurance_paid": Decimal("987654.32")}
    return {**base, **changes}


def test_age_bands_of_five_years_with_ninety_and_over_in_one():
    assert [age_band(a, 5) for a in (0, 4, 5, 44, 89, 90, 104)] == ["0-4", "0-4", "5-9", "40-44", "85-89", "90+",
                                                                    "90+"]
    assert age_band(-1, 5) == "0-4"
    assert [age_band(a, 10) for a in (44, 95)] == ["40-49", "90+"]


def test_chapters_and_rounding():
    assert diagnosis_chapter("J20.9") == "J00-J99"
    assert diagnosis_chapter("d50") == "D50-D89" and diagnosis_chapter("D48.1") == "C00-D48"
    assert diagnosis_chapter("T14") == "S00-T98" and diagnosis_chapter("U07.1") == "U00-U85"
    assert rounded(Decimal("149999.99"), 100_000) == 100_000 and rounded(Decimal("150000"), 100_000) == 200_000


def test_what_is_released_and_what_is_widened():
    g = generalise(visit(), EVERYTHING, MASTER)
    assert g.fine["age_band"] == "45-49" and g.fine["facility_code"] == "79001"
    assert g.fine["total_cost_vnd"] == 1_200_000 and g.fine["diagnosis_chapter"] == "J00-J99"
    assert g.coarse["age_band"] == "40-59" and g.coarse["facility_code"] is None
    assert g.coarse["facility_province"] == "79" and g.coarse["generalised"] == 1
    assert g.fine_cell != g.coarse_cell and g.fine_cell == cell_of(g.fine)
    assert "p" * 64 not in str(g.fine) and "v" * 64 not in str(g.fine), "the internal pseudonyms never leave"


def test_a_field_the_policy_does_not_give_is_empty():
    narrow = parse_policy('name = "narrow"\nreceives = ["sex"]', "t")
    g = generalise(visit(), narrow, MASTER)
    given_fields = {k for k, v in g.fine.items() if v not in (None, [])}
    assert given_fields == {"visit_ref", "version", "generalised", "sex", "admitted_month"}


@given(st.text(min_size=1, max_size=20), st.integers(2000, 2030))
def test_pseudonyms_link_within_a_subscriber_and_year_only(person, year):
    a = parse_policy('name = "a"\nreceives = ["pseudonym"]', "t")
    b = parse_policy('name = "b"\nreceives = ["pseudonym"]', "t")
    life = parse_policy('name = "a"\nreceives = ["lifetime_pseudonym"]', "t")
    this_year, next_year = visit(pseudonym=person, admitted_month=f"{year}01"), visit(pseudonym=person,
                                                                                      admitted_month=f"{year + 1}01")
    same = generalise(this_year, a, MASTER).fine["pseudonym"]
    assert generalise(visit(pseudonym=person, admitted_month=f"{year}12"), a, MASTER).fine["pseudonym"] == same
    assert generalise(next_year, a, MASTER).fine["pseudonym"] != same
    assert generalise(this_year, b, MASTER).fine["pseudonym"] != same
    assert generalise(this_year, a, b"other" * 7).fine["pseudonym"] != same, "a new master key rotates them all"
    assert generalise(this_year, life, MASTER).fine["pseudonym"] == generalise(next_year, life, MASTER).fine[
        "pseudonym"]
    assert generalise(this_year, a, MASTER).fine["visit_ref"] != generalise(this_year, b, MASTER).fine["visit_ref"]


@given(st.integers(1900, 2030), st.sampled_from([1, 2]), st.integers(2000, 2030), st.integers(1, 12),
       st.decimals(0, 10**13, places=2), st.one_of(st.none(), st.integers(-(2**31), 2**31 - 1)),
       st.lists(st.text(max_size=8), max_size=3))
def test_the_released_bytes_are_fastavros(birth_year, sex, year, month, cost, days, drugs):
    from domain.release_input import ready_visit
    from schemas import catalogue, wire

    record = visit(birth_year=birth_year, sex=sex, admitted_month=f"{year}{month:02d}", total_cost=cost,
                   treatment_days=days, drug_codes=drugs, province_code=None)
    narrow = parse_policy('name = "narrow"\nreceives = ["sex", "lifetime_pseudonym"]', "t")
    ready = ready_visit(wire.encode(catalogue.DEIDENTIFIED_VISIT, record), [EVERYTHING, narrow], MASTER)
    for g, fine, coarse in ready.forms.values():
        assert fine == wire.encode(catalogue.RELEASED_VISIT, g.fine)
        assert coarse == wire.encode(catalogue.RELEASED_VISIT, g.coarse)

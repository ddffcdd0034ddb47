"""The de-identified topic for analytics subscribers carries no direct identifier, and counts add up."""

from datetime import datetime
from pathlib import Path

import pytest

from consumers.analytics import read_deidentified, visits_per_diagnosis_province_month
from consumers.released_visits import read_released
from domain.analytics_policy import load_policies
from healthbook.kafka import Broker
from healthbook.topic_follower import TopicFollower
from streams.analytics_release import release_now, released_topic
from synthetic.population import Citizen
from tests.factories import visit, with_patient
from tests.integration.conftest import map_cards, new_citizen, next_sequence, visible, wait_until

pytestmark = pytest.mark.integration


async def test_no_direct_identifier_reaches_the_analytics_topic(clinics, db, settings):
    people = [new_citizen() for _ in range(4)]
    events = [visit(person=p, sequence=next_sequence(), admitted=datetime(2026, 2, 10 + i, 9),
                    main_diagnosis_code="J20.9") for i, p in enumerate(people)]
    events[0] = with_patient(events[0], phone="0903123456")
    hiv_record = {"MA_LK": events[1]["visit_code"], "MA_THE_ARV": "ARV-777"}
    events[1]["sensitive"] = [{"table": "XML6", "records": [hiv_record]}]
    card = f"TE1{next_sequence():012d}"
    child = with_patient(visit(person=people[3], sequence=next_sequence(), main_diagnosis_code="J20.9",
                               admitted=datetime(2026, 2, 20, 9)), personal_id=None, insurance_card_numbers=[card])
    hiv_by_content = visit(person=people[2], sequence=next_sequence(), admitted=datetime(2026, 2, 21, 9),
                           main_diagnosis_code="B20.1", secondary_diagnosis_codes=["J20.9"])
    tb_secondary = visit(person=people[2], sequence=next_sequence(), admitted=datetime(2026, 2, 22, 9),
                         main_diagnosis_code="J20.9", secondary_diagnosis_codes=["A15.0"])
    await clinics.publish(*events, child, hiv_by_content, tb_secondary)
    await map_cards(settings, [(card, people[3].personal_id)])
    for event in (*events, child, hiv_by_content, tb_secondary):
        await wait_until(lambda e=event: visible(db, "79001", e["visit_code"]), "the visits", process=clinics.worker)

    raw: list[bytes] = []
    await TopicFollower(Broker.of(settings), settings.topics.deidentified,
                        lambda key, value: raw.extend([key or b"", value or b""])).snapshot()
    everything = b"\n".join(raw)
    identifiers = {"0903123456", "ARV-777", card}
    for event in (*events, child):
        patient = event["patient"]
        identifiers |= {patient["full_name"], patient["address"], patient["birth_date"], patient["patient_code"],
                        event["visit_code"], *patient["insurance_card_numbers"]}
        if patient["personal_id"]:
            identifiers.add(patient["personal_id"])
    for person in people:
        identifiers |= {person.personal_id, person.full_name}
    leaked = {i for i in identifiers if i and i.encode() in everything}
    assert leaked == set()
    assert b"B20" not in everything and b"A15" not in everything, "a sensitive diagnosis never reaches analytics"

    records = [r for r in await read_deidentified(Broker.of(settings), settings.topics.deidentified)
               if r["main_diagnosis_code"] == "J20.9" and r["admitted_month"] == "202602"]
    mine = {r["pseudonym"] for r in records}
    # people[1]'s only J20.9 visit has an XML6 table, so the whole visit stays off the topic
    assert len(mine) >= 3, "one stable pseudonym per citizen, the child's included once resolved"
    counts = visits_per_diagnosis_province_month(records)
    assert sum(n for (code, _, month), n in counts.items() if code == "J20.9" and month == "202602") == len(
        {r["visit_ref"] for r in records})


def _born(year: int, sex: int, n: int) -> Citizen:
    """A citizen of a given birth year and sex in province 79, one of a crowd."""
    number = next_sequence()
    return Citizen(f"079{sex - 1}{year % 100:02d}{number % 1_000_000:06d}", f"Trần Thị Đám Đông {n}",
                   f"{year}0615", sex, "79", f"{n + 1} Lê Lợi, tỉnh/thành 79", f"GD479{number:010d}")


async def test_what_subscribers_receive_holds_no_identifier_and_no_sensitive_visit(clinics, db, settings,
                                                                                 tmp_path: Path):
    crowd = [_born(1985, 2, n) for n in range(6)]  # one cell for every shipped policy: they go out as they are
    events = [visit(person=p, sequence=next_sequence(), admitted=datetime(2026, 3, 3 + i, 9),
                    main_diagnosis_code="J20.9") for i, p in enumerate(crowd)]
    hiv = visit(person=crowd[0], sequence=next_sequence(), admitted=datetime(2026, 3, 20, 9),
                main_diagnosis_code="B20.1")
    tb = visit(person=crowd[1], sequence=next_sequence(), admitted=datetime(2026, 3, 21, 9),
               main_diagnosis_code="J20.9", secondary_diagnosis_codes=["A15.0"])
    await clinics.publish(*events, hiv, tb)
    for event in (*events, hiv, tb):
        await wait_until(lambda e=event: visible(db, "79001", e["visit_code"]), "the visits", process=clinics.worker)
    await wait_until(lambda: _on_topic(settings, len(events)), "the crowd on the de-identified topic")

    policies = load_policies(settings.analytics_policy_dir)
    await release_now(settings, b"k" * 32)

    raw: list[bytes] = []
    for policy in policies:
        await TopicFollower(Broker.of(settings), released_topic(settings.topic_prefix, policy.name),
                            lambda m: raw.extend([m.key or b"", m.value or b"", *(v for _, v in m.headers or ())]),
                            whole_message=True).snapshot()
        released = await read_released(Broker.of(settings), released_topic(settings.topic_prefix, policy.name))
        mine = [r.record for r in released if r.record["admitted_month"] == "202603"
                and r.record["age_band"] in ("40-44", "40-49") and r.record["sex"] == 2]
        assert len(mine) >= len(events), f"{policy.name}: the crowd is released, so the scan below reads it"
    everything = b"\n".join(raw)
    identifiers = set()
    for event in (*events, hiv, tb):
        patient = event["patient"]
        identifiers |= {patient["personal_id"], patient["full_name"], patient["address"], patient["birth_date"],
                        patient["patient_code"], event["visit_code"], *patient["insurance_card_numbers"]}
    leaked = {i for i in identifiers if i and i.encode() in everything}
    assert leaked == set()
    assert b"B20" not in everything and b"A15" not in everything, "a sensitive visit never reaches a subscriber"


async def _on_topic(settings, at_least: int) -> bool:
    records = await read_deidentified(Broker.of(settings), settings.topics.deidentified)
    return sum(1 for r in records if r["main_diagnosis_code"] == "J20.9" and r["admitted_month"] == "202603"
               and r["birth_year"] == 1985) >= at_least

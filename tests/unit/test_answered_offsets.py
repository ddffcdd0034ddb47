"""Requests answered out of order: a partition's offset is committed only past the ones answered."""

from aiokafka import TopicPartition

from consumers.query import AnsweredOffsets

TP0, TP1 = TopicPartition("requests", 0), TopicPartition("requests", 1)


def test_offsets_are_committable_only_up_to_the_first_request_still_in_flight():
    offsets = AnsweredOffsets()
    for offset in (10, 11, 12):
        offsets.read(TP0, offset)
    offsets.read(TP1, 5)
    offsets.answered(TP0, 12)
    offsets.answered(TP0, 11)
    assert offsets.take_committable() == {} and len(offsets) == 4
    offsets.answered(TP0, 10)
    assert offsets.take_committable() == {TP0: 13}
    assert offsets.take_committable() == {}, "each offset is handed out once"
    offsets.answered(TP1, 5)
    assert offsets.take_committable() == {TP1: 6} and len(offsets) == 0


def test_a_request_answered_while_others_wait_is_not_committed_past_them():
    offsets = AnsweredOffsets()
    offsets.read(TP0, 0)
    offsets.read(TP0, 1)
    offsets.answered(TP0, 1)
    offsets.read(TP0, 2)
    offsets.answered(TP0, 2)
    assert offsets.take_committable() == {}
    offsets.answered(TP0, 0)
    assert offsets.take_committable() == {TP0: 3}

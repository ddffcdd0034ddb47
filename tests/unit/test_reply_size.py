"""A reply must fit one record of the replies topic; one that would not becomes a refusal the citizen can act on."""

from domain import sentences
from domain.replies import Reply, fitted
from schemas.refusal_codes import RefusalCode, ReplyStatus


def test_a_reply_too_large_for_the_replies_topic_becomes_a_too_large_refusal():
    big = Reply(request_id="r-1", status=ReplyStatus.OK, message="x" * 5_000, year=2026)
    kept, encoded = fitted(big, 10_000)
    assert kept == big and Reply.decode(encoded) == big
    refused, encoded = fitted(big, 1_000)
    assert Reply.decode(encoded) == refused
    assert (refused.request_id, refused.status, refused.refusal_code, refused.year) == (
        "r-1", ReplyStatus.REFUSED, RefusalCode.TOO_LARGE, 2026)
    assert sentences.EMPTY_HISTORY.citizen() not in refused.message and "từng năm" in refused.message

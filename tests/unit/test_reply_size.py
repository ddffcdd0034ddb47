"""A reply must fit one record of the replies topic; one that would not becomes a refusal the citizen can act on."""

from consumers.query import fitted
from domain import replies
from domain.replies import Reply


def test_a_reply_too_large_for_the_replies_topic_becomes_a_too_large_refusal():
    big = Reply(request_id="r-1", status="ok", message="x" * 5_000, year=2026)
    assert Reply.decode(fitted(big, 10_000)) == big
    refused = Reply.decode(fitted(big, 1_000))
    assert (refused.request_id, refused.status, refused.refusal_code, refused.year) == ("r-1", "refused",
                                                                                        "too_large", 2026)
    assert replies.EMPTY_HISTORY not in refused.message and "từng năm" in refused.message

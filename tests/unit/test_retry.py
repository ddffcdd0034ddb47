"""Which failures the services wait out (broker or database away) and which they report."""


import asyncpg
import pytest
from aiokafka.errors import (
    InvalidReplicationFactorError,
    KafkaConnectionError,
    NodeNotReadyError,
    RequestTimedOutError,
    TopicAuthorizationFailedError,
    UnknownTopicOrPartitionError,
)

from healthbook.kafka import TopicMissing
from healthbook.retry import is_broker_unreachable, is_infrastructure, is_unreachable


@pytest.mark.parametrize("failure", [
    KafkaConnectionError("Unable to bootstrap from [('127.0.0.1', 9092)]"),
    NodeNotReadyError("Attempt to send a request to node which is not ready (node id 1)."),
    RequestTimedOutError(), ConnectionRefusedError(111, "Connect call failed"), TimeoutError(),
    Exception("Controller node not found"),  # faust, when the metadata names no broker
    InvalidReplicationFactorError("Cannot create topic: x-__assignor-__leader (38): Unable to replicate the "
                                  "partition 1 time(s): All brokers are currently fenced."),  # a restarting broker
])
def test_a_broker_that_does_not_answer_is_waited_for(failure):
    assert is_broker_unreachable(failure) and is_infrastructure(failure)


@pytest.mark.parametrize("failure", [
    TopicAuthorizationFailedError(), UnknownTopicOrPartitionError(), TopicMissing("topic visits does not exist"),
    Exception("anything else"), ValueError("Controller node"), KeyError("Controller node"),
    InvalidReplicationFactorError("Replication factor: 3 larger than available brokers: 1."),
])
def test_a_refusal_or_a_bug_is_not_mistaken_for_an_absent_broker(failure):
    assert not is_broker_unreachable(failure)


def test_a_database_refusing_a_value_is_content_while_a_lost_connection_is_waited_for():
    assert is_unreachable(asyncpg.exceptions.ConnectionDoesNotExistError())
    assert not is_unreachable(asyncpg.exceptions.CharacterNotInRepertoireError())
    # asyncpg's protocol in a state it cannot go on from: PostgreSQL stopped in the middle of a query
    # (make test's fault scenario met it once and the worker stopped as if on a bug)
    assert is_unreachable(asyncpg.exceptions.InternalClientError("cannot switch to state 12; another operation "
                                                                  "(2) is in progress"))

"""Replication follows the number of brokers; realigning a partition keeps its replicas and spreads new ones."""

import pytest

from healthbook.config import Settings
from healthbook.kafka import worker_topics
from healthbook.replica_plan import NotEnoughBrokers, realigned
from schemas.topics import TOPICS, Replication, broker_config


def test_three_brokers_give_three_replicas_two_in_sync_and_no_unclean_election():
    three = Settings(brokers=3).replication
    assert (three.factor, three.min_in_sync) == (3, 2)
    assert Settings(brokers=5).replication == three
    assert Settings(brokers=1).replication == Replication(1, 1)
    for topic in TOPICS:
        config = broker_config(topic, 1024, three)
        assert config["min.insync.replicas"] == "2" and config["unclean.leader.election.enable"] == "false"


def test_the_dedup_changelog_is_made_compactable_by_topics_and_by_faust_alike():
    settings = Settings(brokers=3, topic_prefix="t.")
    partitions, config = worker_topics(settings)[settings.dedup_changelog]
    assert partitions == settings.visit_partitions
    assert config["cleanup.policy"] == "compact" and int(config["segment.bytes"]) <= 16 * 1024 * 1024
    assert float(config["min.cleanable.dirty.ratio"]) <= 0.2 and config["min.insync.replicas"] == "2"
    assert worker_topics(settings)[f"{settings.worker_app_id}-__assignor-__leader"] == (1, three_replicas())


def three_replicas() -> dict[str, str]:
    return {"min.insync.replicas": "2", "unclean.leader.election.enable": "false"}


def test_the_bootstrap_list_is_every_local_node_unless_set():
    assert Settings(brokers=1).bootstrap == "127.0.0.1:9092"
    assert Settings(brokers=3).bootstrap == "127.0.0.1:9092,127.0.0.1:9192,127.0.0.1:9292"
    assert Settings(brokers=3, kafka_bootstrap="kafka-1:9092").bootstrap == "kafka-1:9092"


def test_a_partition_with_its_replicas_is_left_alone():
    assert realigned([2, 3, 1], [1, 2, 3], 3, 0) is None


def test_growing_keeps_the_leader_first_and_spreads_new_replicas_by_partition():
    assert realigned([1], [1, 2, 3], 3, 0) == [1, 2, 3]
    assert realigned([1], [1, 2, 3], 3, 1) == [1, 2, 3]
    assert realigned([3], [1, 2, 3], 3, 1) == [3, 2, 1]
    assert realigned([2], [1, 2, 3, 4], 2, 2) == [2, 3]
    assert realigned([2], [1, 2, 3, 4], 2, 3) == [2, 4]


def test_shrinking_keeps_the_first_replicas():
    assert realigned([3, 1, 2], [1, 2, 3], 1, 0) == [3]


def test_too_few_brokers_is_refused_with_what_is_there():
    with pytest.raises(NotEnoughBrokers, match=r"2 live broker\(s\) \(1, 3\)"):
        realigned([1], [1, 3], 3, 0)

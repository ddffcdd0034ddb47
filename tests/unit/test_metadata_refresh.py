"""Consumers in a group refresh metadata often, so a member assigned nothing on stale metadata is not left idle.

Found by `make faults` (broker restarted): a worker that joined while the broker restarted saw no topics,
was assigned no partition, and stayed idle past the suite's 180 s until Kafka's default 5-minute refresh.
"""

from pathlib import Path

from healthbook.config import Settings
from healthbook.kafka import METADATA_MAX_AGE_MS, Broker, Login, consumer
from streams.app import _faust_app

BROKER = Broker("127.0.0.1:9092", Login("PLAINTEXT", Path("ca.crt"), "worker", "", Path(".")), 1024 * 1024)


def test_the_workers_faust_consumer_refreshes_metadata_within_seconds(tmp_path):
    app = _faust_app(Settings(worker_data_dir=tmp_path), BROKER, 4)
    assert app.conf.consumer_metadata_max_age_ms == METADATA_MAX_AGE_MS <= 30_000


async def test_the_query_consumers_group_refreshes_metadata_within_seconds():
    reader = consumer(BROKER, "query-consumer", "integration.requests", group_id="q")
    assert reader._client._metadata_max_age_ms == METADATA_MAX_AGE_MS

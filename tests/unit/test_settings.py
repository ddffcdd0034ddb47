"""Settings: names derived from the prefix, the documented table, masked values, size limits on every topic."""

from healthbook.config import PROJECT_ROOT, Settings, masked, settings_table
from healthbook.database import database_url_for
from schemas.topics import DEAD_LETTER, TOPICS, VISITS, broker_config, max_message_bytes


def test_one_prefix_names_the_worker_group_changelog_and_query_group(monkeypatch):
    monkeypatch.setenv("HEALTHBOOK_TOPIC_PREFIX", "east.")
    settings = Settings()
    assert settings.worker_app_id == "east.healthbook-worker"
    assert settings.dedup_changelog == "east.healthbook-worker-visit-versions-changelog"
    assert settings.query_group_id == "east.healthbook-query"
    assert settings.topics.visits == "east.visits"


def test_explicit_names_win_over_the_prefix(monkeypatch):
    monkeypatch.setenv("HEALTHBOOK_TOPIC_PREFIX", "east.")
    monkeypatch.setenv("HEALTHBOOK_WORKER_ID", "w1")
    monkeypatch.setenv("HEALTHBOOK_QUERY_GROUP", "q1")
    settings = Settings()
    assert (settings.worker_app_id, settings.query_group_id) == ("w1", "q1")
    rows = {name: (value, source) for name, value, source in settings.effective()}
    assert rows["HEALTHBOOK_WORKER_ID"] == ("w1", "set")


def test_a_copy_with_another_prefix_derives_its_own_names():
    copied = Settings().model_copy(update={"topic_prefix": "west."})
    assert copied.worker_app_id == "west.healthbook-worker" and copied.query_group_id == "west.healthbook-query"


def test_config_masks_the_database_password_and_says_where_each_value_came_from(monkeypatch):
    monkeypatch.setenv("HEALTHBOOK_DATABASE_URL", "postgresql://book:s3cret-pw@db.example:5433/healthbook")
    rows = {name: (value, source) for name, value, source in Settings().effective()}
    assert rows["HEALTHBOOK_DATABASE_URL"] == ("postgresql://book:***@db.example:5433/healthbook", "set")
    assert "s3cret-pw" not in str(rows)
    assert rows["HEALTHBOOK_WORKER_ID"] == ("healthbook-worker", "derived from the prefix")
    assert rows["HEALTHBOOK_BATCH_SIZE"] == ("500", "default")


def test_masked_leaves_a_url_without_password_alone():
    assert masked("postgresql://127.0.0.1/healthbook") == "postgresql://127.0.0.1/healthbook"


def test_every_setting_has_a_meaning_and_the_readme_table_is_generated_from_them():
    for name, field in Settings.model_fields.items():
        assert field.description, f"{name} has no description"
    table = settings_table()
    assert table.count("\n") == len(Settings.model_fields) + 1
    assert table in (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")


def test_every_topic_takes_the_largest_visit_and_the_dead_letter_topic_its_dead_letter():
    limit = Settings().max_visit_bytes
    for topic in TOPICS:
        assert int(broker_config(topic, limit)["max.message.bytes"]) >= limit
    assert max_message_bytes(DEAD_LETTER, limit) > 2 * max_message_bytes(VISITS, limit) - 2 * 64 * 1024
    assert broker_config(VISITS, limit)["message.timestamp.type"] == "LogAppendTime"


def test_another_database_on_the_same_server_keeps_the_url_s_options():
    assert database_url_for("postgresql://u:p@127.0.0.1:5432/healthbook?sslmode=disable", "healthbook_test") == \
        "postgresql://u:p@127.0.0.1:5432/healthbook_test?sslmode=disable"
    assert database_url_for("postgresql://u:p@postgres:5432/healthbook", "x") == "postgresql://u:p@postgres:5432/x"

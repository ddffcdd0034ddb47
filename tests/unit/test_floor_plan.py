"""The floor plan kept by tools: short functions, one Kafka client factory, all SQL in the store.

(The import arrows themselves are checked by import-linter, run by `make test` beside ruff.)
"""

import ast
import re
from pathlib import Path

from healthbook.config import PROJECT_ROOT

PACKAGES = ("schemas", "domain", "healthbook", "producers", "streams", "consumers", "synthetic", "commands")
MAX_FUNCTION_LINES = 60
SQL = re.compile(r"\b(select\s.+\sfrom|insert\s+into|delete\s+from|update\s+\w+\s+set|create\s+table|alter\s+table)\b",
                 re.IGNORECASE | re.DOTALL)
# The health book's SQL, the analytics release stage's, the migrations, the clinic-side SQLite ledger of
# what ingest published, and the reference subscriber's DuckDB file.
SQL_HOMES = {"healthbook/store.py", "healthbook/analytics_store.py", "healthbook/database.py",
             "producers/xml_ingest/ingest_ledger.py", "consumers/analytics_sink.py"}
KAFKA_CLIENTS = {"AIOKafkaProducer", "AIOKafkaConsumer", "AIOKafkaAdminClient"}


def sources() -> list[tuple[str, ast.Module]]:
    found = []
    for package in PACKAGES:
        for path in sorted((PROJECT_ROOT / package).rglob("*.py")):
            found.append((str(path.relative_to(PROJECT_ROOT)), ast.parse(path.read_text(encoding="utf-8"))))
    return found


def test_no_function_is_longer_than_sixty_lines():
    long = [f"{name}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for name, tree in sources() for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    assert long == []


def test_only_the_kafka_module_constructs_kafka_clients():
    def constructs(node: ast.AST) -> str | None:
        if isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
            return name if name in KAFKA_CLIENTS else None
        return None

    elsewhere = [f"{name}:{node.lineno} {constructs(node)}" for name, tree in sources() for node in ast.walk(tree)
                 if constructs(node) and name != "healthbook/kafka.py"]
    assert elsewhere == []


def test_sql_lives_only_in_the_store_the_migrations_and_the_ingest_ledger():
    elsewhere = [f"{name}:{node.lineno}" for name, tree in sources() if name not in SQL_HOMES
                 for node in ast.walk(tree)
                 if isinstance(node, ast.Constant) and isinstance(node.value, str) and SQL.search(node.value)]
    assert elsewhere == []


def test_the_checks_see_the_whole_house():
    names = {name for name, _ in sources()}
    assert {"healthbook/store.py", "streams/batch_step.py", "commands/cli.py", "domain/batch.py"} <= names
    assert all(Path(PROJECT_ROOT / p).is_dir() for p in PACKAGES)

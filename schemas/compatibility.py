"""The compatibility rule between versions of one subject: a newer reader must read every older writer."""

from __future__ import annotations

from typing import Any


def records(schema: Any, found: dict[str, dict[str, Any]] | None = None) -> dict[str, dict[str, Any]]:
    """Every record type a schema defines, by name, nested ones included."""
    found = {} if found is None else found
    if isinstance(schema, dict):
        if schema.get("type") == "record":
            found[schema["name"]] = schema
            for field in schema["fields"]:
                records(field["type"], found)
        else:
            for value in schema.values():
                records(value, found)
    elif isinstance(schema, list):
        for item in schema:
            records(item, found)
    return found


def backward_problems(older: dict[str, Any], newer: dict[str, Any]) -> list[str]:
    """What stops a reader of `newer` from reading data written with `older` (empty when compatible).

    The rule: every field the newer version adds to a record carries a default, and no
    record the older version wrote disappears. Type changes are left to Avro's own resolution,
    which the tests exercise on real messages.
    """
    old_records, new_records = records(older), records(newer)
    problems = [f"record {name} was removed" for name in old_records if name not in new_records]
    for name, record in new_records.items():
        old = old_records.get(name)
        if old is None:
            continue
        old_fields = {f["name"] for f in old["fields"]}
        problems += [
            f"{name}.{field['name']} was added without a default"
            for field in record["fields"]
            if field["name"] not in old_fields and "default" not in field
        ]
    return problems

"""Log lines are JSON with event coordinates, and nothing else passed along reaches them."""

import json
import logging

from healthbook.observability import JsonFormatter


def test_a_log_line_carries_coordinates_but_not_unknown_extras():
    record = logging.LogRecord("streams.app", logging.WARNING, __file__, 1, "rejected %s", ("bad_signature",), None)
    for name, value in {"event_id": "e-1", "clinic": "79001", "partition": 2, "offset": 41,
                        "personal_id": "079186001234", "full_name": "Nguyễn Thị Lan"}.items():
        setattr(record, name, value)
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "rejected bad_signature"
    assert (line["event_id"], line["clinic"], line["partition"], line["offset"]) == ("e-1", "79001", 2, 41)
    assert "079186001234" not in json.dumps(line) and "Nguyễn" not in json.dumps(line, ensure_ascii=False)
    assert line["level"] == "warning" and line["time"].endswith("Z")

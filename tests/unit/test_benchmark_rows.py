"""The query benchmark loads rows of its own: they must stay in step with the book's columns."""

from benchmarks.query_latency import _rows
from domain.rows import BOOK_COLUMNS


def test_the_query_benchmark_loads_every_column_of_the_book_with_signed_material():
    (chunk,) = list(_rows(20, 4))
    assert len(chunk) == 20 and all(len(row) == len(BOOK_COLUMNS) for row in chunk)
    row = dict(zip(BOOK_COLUMNS, chunk[0], strict=True))
    assert row["signed_message"] and len(row["clinic_public_key"]) == 32

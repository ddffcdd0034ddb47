"""The one-pass check of clean_text decides exactly as the string-by-string walk, on hostile text."""

import unicodedata
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.text import _cleaned, clean_text

# Control characters, the ones text may hold, combining marks in and out of canonical order, Hangul jamo,
# backslashes and the characters JSON escapes: everything that could fool a check on JSON text.
TRICKY = st.sampled_from(list("\x00\x01\x08\x0b\x0c\x1f\t\n\r\\\"/bfu0\u0301\u0300\u0327\u0323\u1100\u1161\u11a8"
                              "eEaAđĐ\u1ec7\u00e9\u2126\u212b\ufb01"))
TEXT = st.text(alphabet=st.one_of(TRICKY, st.characters()), max_size=12)
LEAF = st.one_of(TEXT, st.none(), st.integers(), st.floats(allow_nan=False), st.booleans(),
                 st.decimals(allow_nan=False, allow_infinity=False, places=2).map(Decimal))
VALUES = st.recursive(LEAF, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                    st.dictionaries(TEXT, inner, max_size=4)), max_leaves=20)


@settings(max_examples=2000, deadline=None)
@given(VALUES)
def test_the_fast_check_and_the_full_walk_agree(value):
    assert clean_text(value, "record") == _cleaned(value, "record")


def test_a_clean_record_is_returned_as_it_is_and_a_decomposed_one_is_normalised():
    clean = {"full_name": "Nguyễn Thị Lan", "medicines": [{"name": "Paracetamol", "dose": "1 viên\tsau ăn"}]}
    assert clean_text(clean)[0] is clean
    decomposed = {"full_name": unicodedata.normalize("NFD", "Nguyễn Thị Lan")}
    assert clean_text(decomposed) == ({"full_name": "Nguyễn Thị Lan"}, [])


def test_a_backslash_that_looks_like_an_escape_is_not_a_control_character():
    assert clean_text({"note": "C:\\bin\\u0001 \\f"}) == ({"note": "C:\\bin\\u0001 \\f"}, [])
    (problem,) = clean_text({"note": "a\x0cb"}, "")[1]
    assert problem.rule == "control_character" and problem.field == "note"

"""The one-pass check of clean_text decides exactly as the string-by-string walk, on hostile text."""

import json
import random
import unicodedata
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import text
from schemas.native import compiled
from schemas.text import _cleaned, _maybe_not_nfc, clean_text, json_bytes_are_clean, json_text_is_clean

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


# The scan in C (schemas/_native.c) of the book's JSON bytes: held to json_text_is_clean.

@settings(max_examples=3000, deadline=None)
@given(VALUES)
def test_json_bytes_called_clean_are_clean_text_as_the_model_reads_them(value):
    """The C scan may send more visits to the full model, never fewer: clean in C is clean in the model."""
    data = json.dumps(value, ensure_ascii=False, default=str).encode("utf-8", "surrogatepass")
    if json_bytes_are_clean(data):
        assert json_text_is_clean(data.decode())


def test_the_c_scan_is_built_and_is_the_one_the_worker_uses():
    assert compiled is not None, "schemas/_native.c was not built: run make install with a C compiler"
    assert text.compiled is compiled


def _unflagged(chars: str | list[str]) -> bool:
    bits = _maybe_not_nfc()
    return not any(bits[ord(c) >> 3] >> (ord(c) & 7) & 1 for c in chars)


def test_text_with_no_flagged_character_is_nfc_whatever_precedes_each():
    """The flagged set's claim, checked by Python's own normaliser rather than by how the set was built.

    A character composes only with what precedes it; each text here puts every assigned unflagged character
    (private use aside) after one of the starters of a canonical decomposition, and all of them in random order.
    """
    unflagged = [chr(c) for c in range(0x110000) if not 0xD800 <= c < 0xE000 and _unflagged(chr(c))
                 and unicodedata.category(chr(c)) not in ("Cn", "Co")]
    assert len(unflagged) > 100_000
    starters = {unicodedata.normalize("NFC", unicodedata.normalize("NFD", chr(c))[:-1]) for c in range(0x80, 0x110000)
                if not 0xD800 <= c < 0xE000 and len(unicodedata.normalize("NFD", chr(c))) > 1}
    starters = {s for s in starters if _unflagged(s)}
    assert "A" in starters and "\uac00" in starters  # a Latin letter; a Hangul syllable that takes a final jamo
    for starter in starters:
        assert unicodedata.is_normalized("NFC", starter.join(unflagged)), f"after {starter!r}"
    random.Random(1332).shuffle(unflagged)
    assert unicodedata.is_normalized("NFC", "".join(unflagged))


def test_each_kind_of_character_that_can_break_nfc_is_flagged():
    bits = _maybe_not_nfc()
    flagged = {chr(c) for c in range(0x110000) if bits[c >> 3] >> (c & 7) & 1}
    # a combining mark, a singleton (OHM SIGN), an excluded composition, a Hangul vowel and final jamo, a
    # vowel sign that composes though of class 0 (TAMIL AU LENGTH MARK)
    assert {"\u0301", "\u2126", "\u0958", "\u1161", "\u11a8", "\u0bd7"} <= flagged
    assert not flagged & set("Nguyễn Thị Lan Đường phổi đái tháo đường ệẾỗ")


@pytest.mark.parametrize("data", [
    b'{"a":"\\u0001"}', b'{"a":"\\u001f"}', b'{"a":"x\\by"}', b'{"a":"x\\fy"}', b'{"a":"\x01"}',
    "{\"a\":\"e\u0301\"}".encode(), b'{"a":"\xff"}', b'{"a":"\xc3"}', b'{"a":"\xed\xa0\x80"}', b'{"a":"\xc0\xaf"}',
    b'{"a":"\xf4\x90\x80\x80"}', b'{"a":"\xe2\x84"}',
])
def test_escaped_or_raw_controls_decomposed_text_and_broken_utf8_are_not_clean(data):
    assert not json_bytes_are_clean(data)


@pytest.mark.parametrize("data", [
    b'{}', "{\"full_name\":\"Nguyễn Thị Lan\",\"note\":\"1 viên\\tsau ăn\\n\"}".encode(), b'{"a":"\\u0020\\\\"}',
    "{\"a\":\"\U0001f600 \u4e2d\"}".encode(),
])
def test_clean_json_is_clean(data):
    assert json_bytes_are_clean(data) and json_text_is_clean(data.decode())


@pytest.mark.parametrize("data", [b'{"a":"\\u0001"}', b'{"a":"b"}', "{\"a\":\"e\u0301\"}".encode(), b'{"a":"\xff"}'])
def test_without_the_extension_the_model_answers(data, monkeypatch):
    monkeypatch.setattr(text, "compiled", None)
    expected = data.decode(errors="strict") if data != b'{"a":"\xff"}' else None
    assert json_bytes_are_clean(data) == (expected is not None and json_text_is_clean(expected))


@pytest.mark.parametrize("bad", ["\x01", "\\b", "\\u001f", "\u0301", "\xff"])
def test_whatever_byte_an_unclean_character_starts_at_it_is_found(bad):
    """The C scan passes eight plain ASCII bytes at once: an unclean character is found at any offset."""
    for at in range(24):
        data = ("a" * at).encode() + (bad.encode("latin-1") if bad == "\xff" else bad.encode()) + b"z" * 17
        assert not json_bytes_are_clean(data), at
    assert json_bytes_are_clean(b"a" * 41)

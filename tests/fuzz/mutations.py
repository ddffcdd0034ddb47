"""A hypothesis strategy of hostile variants of valid inputs: flipped, inserted, deleted and spliced bytes."""

from __future__ import annotations

from hypothesis import strategies as st

# Avro zig-zag varints that decode to huge, negative or boundary numbers, and lengths that lie.
INTERESTING = [bytes.fromhex(h) for h in (
    "ffffffffffffffff7f", "feffffffffffffffff01", "80808080808080808001", "ffffffff0f", "00", "01", "7f", "8001",
    "fe0f", "ffff03")]


@st.composite
def mutated(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    """One of the seeds with up to eight random edits, or bytes from nowhere."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=256))
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 8))):
        position = draw(st.integers(0, len(data)))
        edit = draw(st.integers(0, 4))
        if edit == 0 and data:
            data[min(position, len(data) - 1)] = draw(st.integers(0, 255))
        elif edit == 1:
            data[position:position] = draw(st.binary(min_size=1, max_size=8))
        elif edit == 2:
            del data[position:position + draw(st.integers(1, 32))]
        elif edit == 3:
            data[position:position + draw(st.integers(0, 9))] = draw(st.sampled_from(INTERESTING))
        else:
            other = draw(st.sampled_from(seeds))
            start = draw(st.integers(0, len(other)))
            data[position:] = other[start:]
    return bytes(data)

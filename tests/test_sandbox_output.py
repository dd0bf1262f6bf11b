"""Head + tail output capping."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from sandbox.output import OutputCap, cap_text


def test_small_output_is_kept_whole() -> None:
    cap = OutputCap(8, 8)
    cap.feed(b"hello ")
    cap.feed(b"world")
    r = cap.result()
    assert (r.text, r.truncated, r.elided_bytes, r.total_bytes) == ("hello world", False, 0, 11)


def test_large_output_keeps_head_and_tail() -> None:
    cap = OutputCap(4, 4)
    for i in range(1000):
        cap.feed(f"{i:04d}".encode())
    r = cap.result()
    assert r.text == "0000\n... [3992 bytes elided] ...\n0999"
    assert r.truncated and r.elided_bytes == 3992


def test_cut_inside_a_multibyte_character_is_clean() -> None:
    cap = OutputCap(5, 5)
    cap.feed("ééééééééé".encode())  # 18 bytes, 2 each: both cuts fall mid-character
    r = cap.result()
    assert "\ufffd" not in r.text
    assert r.text == "éé\n... [10 bytes elided] ...\néé"


@given(st.lists(st.binary(max_size=300), max_size=40), st.integers(1, 64), st.integers(1, 64))
def test_matches_naive_head_tail(chunks: list[bytes], head: int, tail: int) -> None:
    cap = OutputCap(head, tail)
    for c in chunks:
        cap.feed(c)
    data = b"".join(chunks)
    r = cap.result()
    assert r.total_bytes == len(data)
    if len(data) <= head + tail:
        assert not r.truncated and r.text == data.decode("utf-8", errors="replace")
    else:
        assert r.truncated
        assert len(data) - head - tail <= r.elided_bytes <= len(data) - head - tail + 6
        assert f"[{r.elided_bytes} bytes elided]" in r.text
    assert len(cap._tail) <= 2 * tail + max((len(c) for c in chunks), default=0)


def test_cap_text_states_the_cap_and_keeps_head_and_tail() -> None:
    assert cap_text("short", 100, "diff") == "short"
    text = "é" * 10_000 + "MIDDLE" + "z" * 10_000
    capped = cap_text(text, 1000, "diff")
    assert "[diff capped at 1000 bytes: " in capped and "of 30006 bytes elided]" in capped
    assert capped.startswith("é") and capped.endswith("z") and "MIDDLE" not in capped
    assert len(capped.encode()) < 1000 + 100
    raw = "a\udcff" * 2000  # surrogate escapes from Workspace.diff survive
    assert "\udcff" in cap_text(raw, 100)

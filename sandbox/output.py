"""Head + tail capture of a byte stream in bounded memory."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CappedOutput:
    text: str
    truncated: bool
    elided_bytes: int
    total_bytes: int


def _incomplete_utf8_suffix(data: bytes | bytearray) -> int:
    """Length of a UTF-8 sequence cut off at the end of ``data`` (0..3)."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte & 0xC0 != 0x80:  # a lead byte (or ASCII)
            need = 2 if byte & 0xE0 == 0xC0 else 3 if byte & 0xF0 == 0xE0 else 4 if byte & 0xF8 == 0xF0 else 1
            return back if need > back else 0
    return 0


def _continuation_prefix(data: bytes | bytearray) -> int:
    """Number of leading UTF-8 continuation bytes (the rest of a cut character)."""
    n = 0
    while n < min(3, len(data)) and data[n] & 0xC0 == 0x80:
        n += 1
    return n


class OutputCap:
    """Keeps the first ``head`` and last ``tail`` bytes fed to it.

    The tail buffer is trimmed once it doubles, so memory stays O(head + tail
    + one chunk) however much is fed.
    """

    def __init__(self, head: int, tail: int) -> None:
        self._head_limit = head
        self._tail_limit = tail
        self._head = bytearray()
        self._tail = bytearray()
        self.total = 0

    def feed(self, data: bytes) -> None:
        self.total += len(data)
        room = self._head_limit - len(self._head)
        if room > 0:
            self._head += data[:room]
            data = data[room:]
        if data:
            self._tail += data
            if len(self._tail) > 2 * self._tail_limit:
                del self._tail[: len(self._tail) - self._tail_limit]

    def result(self) -> CappedOutput:
        head, tail = bytes(self._head), bytes(self._tail[-self._tail_limit :])
        elided = self.total - len(head) - len(tail)
        if elided <= 0:
            text = (head + tail).decode("utf-8", errors="replace")
            return CappedOutput(text, False, 0, self.total)
        # Cut on character boundaries; the dropped partial bytes count as elided.
        cut_head = _incomplete_utf8_suffix(head)
        cut_tail = _continuation_prefix(tail)
        head, tail = head[: len(head) - cut_head], tail[cut_tail:]
        elided += cut_head + cut_tail
        text = (
            head.decode("utf-8", errors="replace")
            + f"\n... [{elided} bytes elided] ...\n"
            + tail.decode("utf-8", errors="replace")
        )
        return CappedOutput(text, True, elided, self.total)


def cap_text(text: str, max_bytes: int, what: str = "output") -> str:
    """``text`` cut to about ``max_bytes`` of UTF-8 (head and tail kept), the
    cut saying what the cap is, for diffs and observations kept in the store.

    Undecodable bytes (surrogate escapes, as in ``Workspace.diff``) survive.
    """
    data = text.encode("utf-8", errors="surrogateescape")
    if len(data) <= max_bytes:
        return text
    half = max_bytes // 2
    head, tail = data[:half], data[len(data) - (max_bytes - half):]
    head = head[: len(head) - _incomplete_utf8_suffix(head)]
    tail = tail[_continuation_prefix(tail):]
    elided = len(data) - len(head) - len(tail)
    return (
        head.decode("utf-8", errors="surrogateescape")
        + f"\n... [{what} capped at {max_bytes} bytes: {elided} of {len(data)} bytes elided] ...\n"
        + tail.decode("utf-8", errors="surrogateescape")
    )

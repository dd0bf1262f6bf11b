"""Reading a file the sandbox may have planted, from the host side.

A command can leave a FIFO (an open() that blocks forever), a device, or a
sparse file of any length (``truncate -s 100G``) where the agent expects a
source file. Open without blocking, look at what was opened, and read at
most a cap.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from sandbox.errors import SandboxError


class FileRefused(SandboxError):
    """Not a regular file, or over the size cap; the message is one line."""


def read_regular(path: str | os.PathLike[str], max_bytes: int) -> bytes:
    """The bytes of ``path`` if it is a regular file of at most ``max_bytes``.

    O_NONBLOCK makes opening a FIFO return at once; the type and size are
    taken from the opened descriptor (fstat), so a swap after a check cannot
    fool it, and no more than ``max_bytes`` + 1 bytes are ever read.
    """
    name = Path(path)
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise FileRefused(f"{name}: cannot open ({exc.strerror})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise FileRefused(f"{name}: not a regular file")
        if st.st_size > max_bytes:
            raise FileRefused(f"{name}: over {max_bytes} bytes ({st.st_size} bytes)")
        os.set_blocking(fd, True)
        chunks, left = [], max_bytes + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        data = b"".join(chunks)
    finally:
        os.close(fd)
    if len(data) > max_bytes:  # grew after fstat
        raise FileRefused(f"{name}: over {max_bytes} bytes")
    return data

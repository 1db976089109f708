"""Files written so that a crash, a full disk or a read-only folder never leaves a half-written one."""
from __future__ import annotations

import contextlib
import os
from pathlib import Path


class OutputError(OSError):
    """A file could not be written (disk full, read-only folder, ...); the message says what is still on disk."""


def atomic_write(path: str | os.PathLike, payload: bytes) -> None:
    """Write via a temporary file and rename, so a crash, a full disk or a read-only folder never leaves a
    half-written file: the previous version stays whole, and OutputError says so."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        kept = f"the previous {path.name} there is intact" if path.exists() else f"no {path.name} was written"
        raise OutputError(e.errno, f"could not write {path} ({e.strerror or e}); {kept}. Free some space or "
                                   "choose a folder you can write to (--out)") from None

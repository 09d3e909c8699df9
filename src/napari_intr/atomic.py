"""Writing files so that a crash, a kill or a full disk never leaves a torn or half-replaced file.

Every file the project writes whole (checkpoints, training state, metrics, CSV tables) goes
through `atomic_write`: the data goes to a hidden temporary file beside the target, which is
renamed over the target only once it is complete and synced. When the write fails, the
temporary file is removed and the target keeps its previous contents; a full disk (or a file
size limit) becomes one `DiskFullError` naming the file and saying what to do, whichever
library was writing (safetensors and torch word it differently, or not at all).
"""
from __future__ import annotations

import errno
import os
import secrets
import shutil
import stat
from pathlib import Path

from .filenames import NAME_MAX_BYTES, fitting_name

# Less free space than this after a failed write means the disk filled up (torch's zip writer
# reports a full disk only as "unexpected pos …", safetensors as an IoError of kind StorageFull).
NEARLY_FULL_BYTES = 1 << 20
_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_FULL_WORDS = ("no space left", "storagefull", "disk quota", "file too large", "filetoolarge")


class DiskFullError(OSError):
    """Not enough room to write a file (full disk, quota or file size limit)."""


def atomic_write(path: str | os.PathLike, write) -> Path:
    """Call write(temporary_path), then rename over `path`: a failure leaves the old file intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # the temporary name fits even when the target's name is at the file system's limit
    temporary = path.with_name(f".{fitting_name(path.name, '', NAME_MAX_BYTES - 18)}.{secrets.token_hex(6)}.tmp")
    try:
        with open(temporary, "xb"):
            pass
        # The mode this process gives new files; safetensors (like mkstemp) writes 0600, which would
        # hide a saved model from the rest of a lab's group.
        mode = stat.S_IMODE(temporary.stat().st_mode)
        write(str(temporary))
        os.chmod(temporary, mode)
        with open(temporary, "rb+") as stream:
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException as error:
        full = isinstance(error, Exception) and is_disk_full(error, path.parent)
        temporary.unlink(missing_ok=True)
        if full:
            raise disk_full_error(path, error) from error
        raise
    return path


def is_disk_full(error: BaseException, folder: Path) -> bool:
    """Whether `error`, raised while writing into `folder`, means there was no room left."""
    for cause in _chain(error):
        if isinstance(cause, OSError) and cause.errno in _FULL_ERRNOS:
            return True
        if any(word in str(cause).lower() for word in _FULL_WORDS):
            return True
    try:
        return shutil.disk_usage(folder).free < NEARLY_FULL_BYTES
    except OSError:
        return False


def disk_full_error(path: Path, error: BaseException) -> DiskFullError:
    try:
        free = f"{shutil.disk_usage(path.parent).free / 2**20:.1f} MiB free"
    except OSError:
        free = "free space unknown"
    kept = f"the previous {path.name} is kept" if path.exists() else "nothing was written"
    full = DiskFullError(f"not enough disk space to write {path} ({free}; {error}). Free some space on "
                         f"that disk or choose another output folder; {kept}")
    full.errno = errno.ENOSPC
    return full


def _chain(error: BaseException):
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__

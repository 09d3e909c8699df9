"""One run per output folder (`intr train`, `intr atlas`, `intr explain`): OUT/.intr.lock holds the
owner's command, pid and host.

Ownership is an exclusive `flock` on that file, which the kernel drops when the owner exits in
any way (kill -9, crash), so a lock file left behind is recognised as stale and taken over,
never waited for. A run that ends removes the file while still holding it; a run that locked
the file just as it was removed notices (the path no longer names its file) and tries again.
Where the file system has no flock (some network mounts), the recorded pid is checked instead.
Under torchrun rank 0 holds the lock for the whole job (`job_lock`); every rank learns whether it got it.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .. import distributed

LOCK_FILE = ".intr.lock"


class RunLocked(RuntimeError):
    """Another live run owns the output folder."""


class RunLock:
    def __init__(self, out: Path, command: str = "intr train"):
        self.path = Path(out) / LOCK_FILE
        self.command = command  # named to a second run that finds the folder busy
        self.stream = None
        self.created_folder = False
        self.stale_owner: dict | None = None  # the dead run whose lock was taken over

    def acquire(self) -> RunLock:
        out = self.path.parent
        if out.exists() and not out.is_dir():
            raise ValueError(f"--out {out} is a file; give a folder for the run's outputs")
        self.created_folder = not out.exists()
        out.mkdir(parents=True, exist_ok=True)
        for _ in range(5):
            stream = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 - held until release()
            previous = _owner(stream)
            if not _lock(stream, previous):
                stream.close()
                self.remove_created_folder()
                raise RunLocked(_busy_message(out, previous))
            if _names_file(self.path, stream):
                break
            stream.close()  # locked a file its owner removed on release: lock the new one
        else:
            raise RunLocked(f"could not lock {out}: other runs keep starting and stopping there; try again")
        try:
            if previous and previous.get("pid") != os.getpid():
                self.stale_owner = previous
            stream.seek(0)
            stream.truncate()
            stream.write(json.dumps({"command": self.command, "pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}))
            stream.flush()
        except BaseException:
            stream.close()
            self.remove_created_folder()
            raise
        self.stream = stream
        return self

    def stale_message(self) -> str | None:
        if not self.stale_owner:
            return None
        return (f"took over the lock of an earlier run in {self.path.parent} (pid {self.stale_owner.get('pid')} on "
                f"{self.stale_owner.get('host')}), which is no longer running")

    def release(self) -> None:
        if self.stream is None:
            return
        self.path.unlink(missing_ok=True)  # still locked: nobody can take the file being removed
        self.stream.close()  # closing drops the flock
        self.stream = None
        self.remove_created_folder()

    def remove_created_folder(self) -> None:
        """A run refused before it wrote anything leaves no folder it created behind."""
        out = self.path.parent
        if self.created_folder and out.is_dir() and {p.name for p in out.iterdir()} <= {LOCK_FILE}:
            self.path.unlink(missing_ok=True)
            out.rmdir()

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _owner(stream) -> dict | None:
    stream.seek(0)
    try:
        owner = json.loads(stream.read() or "null")
    except ValueError:
        return None
    return owner if isinstance(owner, dict) else None


def _names_file(path: Path, stream) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(stream.fileno()).st_ino
    except FileNotFoundError:
        return False


def _lock(stream, previous: dict | None) -> bool:
    try:
        fcntl.flock(stream.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    except OSError as error:
        if error.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
            raise
        return not (previous and _alive(previous))  # no flock here: trust a live pid


def _alive(owner: dict) -> bool:
    if owner.get("host") != socket.gethostname():
        return True  # cannot tell from here: assume it runs
    try:
        os.kill(int(owner.get("pid", 0)), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, TypeError):
        return True
    return True


def _busy_message(out: Path, owner: dict | None) -> str:
    who = f"another {owner.get('command') or 'intr run'}" if owner else "another intr run"
    if owner:
        started = time.strftime("%Y-%m-%d %H:%M", time.localtime(owner.get("started", 0)))
        who += f" (pid {owner.get('pid')} on {owner.get('host')}, started {started})"
    return (f"{who} is writing to {out}; wait for it to finish (or stop it), "
            "or choose another output folder (--out)")


@contextmanager
def job_lock(out: str | os.PathLike, command: str,
             info: distributed.Distributed | None = None) -> Iterator[RunLock]:
    """Hold OUT's lock for a whole job: rank 0 takes it, and every rank of a torchrun job stops
    with the same message when another run holds the folder (its other ranks never write there)."""
    info = info or distributed.from_environment()
    lock, refused = RunLock(Path(out).expanduser(), command), None
    if info.is_main:
        try:
            lock.acquire()
        except RunLocked as error:
            refused = str(error)
    refused = distributed.broadcast_from_main(refused)
    if refused:
        raise RunLocked(refused)
    try:
        yield lock
    finally:
        lock.release()

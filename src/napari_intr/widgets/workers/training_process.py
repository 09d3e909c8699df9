"""Runs `python -m intr_training train … --progress json` in a child process (a QProcess).

Training never shares napari's process: a crash or an out-of-memory error ends the child only,
and the GUI thread just reads pipes when Qt says there is data (no thread of ours). The child's
JSON lines (see intr_training.progress) become plain dict messages (`message`); stderr and any
other line become `log_line`; everything also goes to `<out>/train.log`.

Threads: the child gets OMP_NUM_THREADS = available CPU cores - 1 (at least 1; the cores of the
process's affinity and cgroup quota, napari_intr.threads) unless the environment sets it already,
so napari keeps a core and stays responsive while torch computes. It inherits the passive OpenMP
waiting set on importing napari_intr.

No orphans: the QProcess is a child QObject of its owner (Qt kills it when the owner is
destroyed), `stop()` terminates and waits, and an atexit handler terminates whatever still runs
when the interpreter exits.
"""
from __future__ import annotations

import atexit
import json
import os
import shlex
import signal
import sys
from pathlib import Path

from qtpy.QtCore import QObject, QProcess, QProcessEnvironment, QTimer, Signal

from ... import run_folder

STOP_WAIT_MS = 15_000  # the child saves nothing on SIGTERM (epochs are saved as they end): quick
# A SIGTERM can be lost: the child turns it into KeyboardInterrupt, which Python swallows when it
# lands in a callback such as the at-fork handlers run as DataLoader workers start. Repeat it.
RESEND_MS = 2_000
_RUNNING: set[int] = set()  # pids of live children, for the atexit backstop


def training_threads() -> int:
    from napari_intr.threads import child_threads
    return child_threads()


def child_environment() -> QProcessEnvironment:
    environment = QProcessEnvironment.systemEnvironment()
    if not environment.contains("OMP_NUM_THREADS"):
        environment.insert("OMP_NUM_THREADS", str(training_threads()))
    environment.insert("PYTHONUNBUFFERED", "1")
    environment.insert("PYTHONIOENCODING", "utf-8")
    return environment


def train_command(arguments: list[str]) -> list[str]:
    return [sys.executable, "-m", "intr_training", "train", *arguments, "--progress", "json"]


class TrainingProcess(QObject):
    message = Signal(dict)    # one JSON progress object from the child
    log_line = Signal(str)    # stderr and non-JSON stdout, one line each
    ended = Signal(int, bool)  # exit code, crashed (killed by a signal or failed to start)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.process: QProcess | None = None
        self.log_path: Path | None = None
        self._log = None
        self._buffers = {"out": b"", "err": b""}
        self._pid = 0
        self._resend = QTimer(self)
        self._resend.setInterval(RESEND_MS)
        self._resend.timeout.connect(self._send_terminate)

    @property
    def running(self) -> bool:
        return self.process is not None

    @property
    def pid(self) -> int:
        return self._pid

    def start(self, arguments: list[str], out: Path) -> None:
        if self.running:
            raise RuntimeError("a training process is already running")
        out.mkdir(parents=True, exist_ok=True)
        self.log_path = out / run_folder.LOG_FILE
        self._log = open(self.log_path, "a", encoding="utf-8")
        command = train_command(arguments)
        self._write_log(f"$ {shlex.join(command)}")
        self._buffers = {"out": b"", "err": b""}
        process = QProcess(self)
        process.setProcessEnvironment(child_environment())
        process.readyReadStandardOutput.connect(lambda: self._read("out"))
        process.readyReadStandardError.connect(lambda: self._read("err"))
        process.finished.connect(self._finished)
        process.errorOccurred.connect(self._error_occurred)
        self.process = process
        process.start(command[0], command[1:])
        self._pid = int(process.processId())
        if self._pid:
            _RUNNING.add(self._pid)

    def terminate(self) -> None:
        """Ask the child to stop (SIGTERM: it keeps the last completed epoch and exits 130),
        again every RESEND_MS until it has."""
        if self.process is not None:
            self._send_terminate()
            self._resend.start()

    def _send_terminate(self) -> None:
        if self.process is not None:
            if sys.platform == "win32":  # console children ignore terminate() on Windows
                self.process.kill()
            else:
                self.process.terminate()

    def stop(self, wait_ms: int = STOP_WAIT_MS) -> None:
        """Terminate and wait for the child; kill it if it does not end in time."""
        process = self.process
        if process is None:
            return
        for _ in range(max(1, wait_ms // RESEND_MS)):
            self._send_terminate()
            if process.waitForFinished(RESEND_MS) or self.process is not process:
                return
        process.kill()
        process.waitForFinished(2_000)

    # -- reading the child's output --------------------------------------------------------------

    def _read(self, channel: str) -> None:
        process = self.process
        if process is None:
            return
        data = process.readAllStandardOutput() if channel == "out" else process.readAllStandardError()
        *lines, self._buffers[channel] = (self._buffers[channel] + bytes(data)).split(b"\n")
        for line in lines:
            self._handle(channel, line.decode("utf-8", "replace").rstrip("\r"))

    def _handle(self, channel: str, line: str) -> None:
        self._write_log(line)
        if channel == "out" and line.startswith("{"):
            try:
                message = json.loads(line)
            except ValueError:
                message = None
            if isinstance(message, dict) and "event" in message:
                self.message.emit(message)
                return
        if line.strip():
            self.log_line.emit(line)

    def _flush(self) -> None:
        for channel in ("out", "err"):
            self._read(channel)
            rest, self._buffers[channel] = self._buffers[channel], b""
            if rest.strip():
                self._handle(channel, rest.decode("utf-8", "replace"))

    def _write_log(self, line: str) -> None:
        if self._log is not None:
            self._log.write(line + "\n")
            self._log.flush()

    # -- the end ---------------------------------------------------------------------------------

    def _finished(self, exit_code: int, exit_status) -> None:
        self._flush()
        crashed = exit_status == QProcess.CrashExit
        self._write_log(f"[process ended: exit code {exit_code}{', killed' if crashed else ''}]")
        self._end(exit_code, crashed)

    def _error_occurred(self, error) -> None:
        if error != QProcess.FailedToStart or self.process is None:
            return  # crashes also arrive through `finished`
        line = f"could not start {sys.executable}: {self.process.errorString()}"
        self._write_log(line)
        self.log_line.emit(line)
        self._end(-1, True)

    def _end(self, exit_code: int, crashed: bool) -> None:
        if self.process is None:
            return
        _RUNNING.discard(self._pid)
        self._resend.stop()
        self.process.deleteLater()
        self.process = None
        if self._log is not None:
            self._log.close()
            self._log = None
        self.ended.emit(exit_code, crashed)


@atexit.register
def _terminate_leftovers() -> None:
    """Backstop for an interpreter exit that skipped the widgets' own clean-up."""
    for pid in list(_RUNNING):
        try:
            os.kill(pid, signal.SIGTERM)
        except OSError:
            pass

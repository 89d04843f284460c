"""How stage processes live and die: SIGTERM, the per-stage folder lock, dying with the parent.

- SIGTERM (``kill``, SLURM at a time limit, the runner being stopped) raises
  :class:`Terminated` where the stage can stop at once; inside a Lightning fit it only sets a
  flag (:meth:`TerminationGuard.deferred`), Lightning stops at the end of the batch, a callback
  saves ``last.ckpt`` and the stage exits with 143 (128 + SIGTERM).
- A stage folder is locked with an OS lock (``flock``) on ``<out_dir>/.lock`` for as long as the
  stage runs. The kernel drops the lock when its holder dies, however it dies, so it never goes
  stale; a second run of the same stage fails at once naming the holder's pid.
- :func:`die_with_parent` makes a child process receive a signal when its parent dies (Linux
  ``PR_SET_PDEATHSIG``), so ``kill -9`` of the runner or of a stage takes its children with it.

This module imports no torch: the runner and the toy-face workers use it.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

from src.common.errors import UserError

LOCK_FILE = ".lock"
# Exit status of a process stopped by SIGTERM, as a shell reports it (128 + 15).
TERMINATED_EXIT_CODE = 128 + signal.SIGTERM
PR_SET_PDEATHSIG = 1


class Terminated(BaseException):
    """The process received SIGTERM; the stage stops and exits with 143. A BaseException, as
    KeyboardInterrupt is, so that ``except Exception`` blocks in a stage do not swallow it."""


class TerminationGuard:
    """The process's SIGTERM handler: raise :class:`Terminated`, or only note it while deferred."""

    def __init__(self) -> None:
        self.received = False
        self._deferred = 0
        self._previous: dict[int, Any] = {}

    def handle(self, signum: int, frame: FrameType | None) -> None:
        """Signal handler: remember the signal; raise unless a loop will stop at a safe point
        (a second SIGTERM, e.g. SLURM's after the runner's, raises nothing more)."""
        first = not self.received
        self.received = True
        if first and not self._deferred:
            raise Terminated(f"received signal {signum}")

    def install(self) -> None:
        """Make :meth:`handle` the handler of :func:`stop_signals` (main thread only)."""
        self.received = False
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in stop_signals():
            self._previous[signum] = signal.signal(signum, self.handle)

    def uninstall(self) -> None:
        """Put back the handlers :meth:`install` replaced."""
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """Inside, SIGTERM only sets :attr:`received`; the caller stops at its next safe point."""
        self._deferred += 1
        try:
            yield
        finally:
            self._deferred -= 1

    def defer(self) -> None:
        """Start a deferred region (for callbacks that cannot use a ``with`` block)."""
        self._deferred += 1

    def undefer(self) -> None:
        """End the region :meth:`defer` started."""
        self._deferred = max(self._deferred - 1, 0)


GUARD = TerminationGuard()


def stop_signals() -> list[int]:
    """SIGTERM, and inside a SLURM job also submitit's warning before the time limit
    (``SUBMITIT_PREEMPT_SIGNAL``, USR2 by default), which would otherwise end the job unsaved."""
    signals = [signal.SIGTERM]
    if "SLURM_JOB_ID" in os.environ:
        name = os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2")
        warning = getattr(signal, f"SIG{name}", None)
        if warning is not None and warning != signal.SIGTERM:
            signals.append(warning)
    return signals


def lock_holder(lock_path: Path) -> str:
    """The pid recorded in a lock file, or ``unknown``."""
    try:
        return lock_path.read_text(encoding="utf-8").strip() or "unknown"
    except OSError:
        return "unknown"


class StageLock:
    """An exclusive ``flock`` on ``<folder>/.lock``, held from :meth:`acquire` to :meth:`release`.

    The lock belongs to the open file, so it ends when the process ends (``kill -9`` included);
    the file only records the holder's pid for the error message.
    """

    def __init__(self, folder: Path, name: str) -> None:
        self.path = Path(folder) / LOCK_FILE
        self.name = name
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise a one-line :class:`UserError` naming the holder's pid."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            os.close(fd)
            if err.errno not in (errno.EWOULDBLOCK, errno.EACCES):
                raise
            raise UserError(
                f"{self.name}: {self.path.parent} is in use by process {lock_holder(self.path)} "
                "(another run of this stage); wait for it to finish or stop it, then run again"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        os.set_inheritable(fd, False)
        self._fd = fd

    def release(self) -> None:
        """Drop the lock (closing the file does it)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> StageLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def is_secondary_rank() -> bool:
    """True in the extra processes Lightning starts for DDP (they share rank 0's stage folder)."""
    return os.environ.get("LOCAL_RANK", "0") != "0" or os.environ.get("NODE_RANK", "0") != "0"


def die_with_parent(sig: int = signal.SIGTERM, parent_pid: int | None = None) -> None:
    """Ask Linux to send ``sig`` to this process when its parent dies (no-op elsewhere).

    Called in a child (``preexec_fn`` or a pool initializer). ``parent_pid``, when given, closes
    the race where the parent died before the request: the child then exits at once.
    """
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    if parent_pid is not None and os.getppid() != parent_pid:
        os._exit(TERMINATED_EXIT_CODE)

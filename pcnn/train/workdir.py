"""A training run owns its workdir: an exclusive lock file, and no earlier results replaced by accident.

The lock is ``<workdir>/train.lock``, created atomically (``O_CREAT | O_EXCL``) and
holding JSON: the owner's PID, host name, the process's start time (Linux, to tell
a reused PID apart), when it was taken and the command line. It is removed when the
run ends, also when it ends with an exception. A lock left by a process that no
longer exists on this host (killed with SIGKILL, a crash, a reboot) is *stale*: it
is explained on stderr and taken over. A lock written on another host cannot be
checked from here, so it is reported and left alone (delete it by hand if that run
is gone), except by :func:`break_idle_lock`, which a notebook calls when a recycled
runtime (a new host) resumes a run kept on Google Drive: it takes over a lock from
another host only when none of the run's files has changed for a given time.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import sys
import time
import uuid
from pathlib import Path
from typing import Optional

log = logging.getLogger(__name__)

LOCK_NAME = "train.lock"
#: Files a run writes that hold results; a workdir with any of them is "a run".
RESULT_FILES = ("last.pt", "model.safetensors", "best.safetensors")
METRIC_FILES = ("metrics.jsonl", "metrics.csv")
#: Everything a run writes into its workdir (removed by ``overwrite``).
RUN_FILES = RESULT_FILES + METRIC_FILES + ("config.json",)


class WorkdirError(ValueError):
    """The workdir cannot be used as asked (a file in the way, an earlier run, a lock)."""


class WorkdirLocked(WorkdirError):
    """Another process holds the workdir's lock."""


class RunExistsError(WorkdirError, FileExistsError):
    """The workdir holds results of an earlier run that this run would replace."""


def _proc_start(pid: int) -> Optional[str]:
    """The start time of ``pid`` in clock ticks since boot (Linux ``/proc``), else None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "; comm may hold spaces
    return fields[19] if len(fields) > 19 else None


def _proc_state(pid: int) -> Optional[str]:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2:].split()[0]


def pid_alive(pid: int, start: Optional[str] = None) -> bool:
    """Whether process ``pid`` runs on this host (a zombie or a reused PID counts as gone)."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        pass
    if _proc_state(pid) == "Z":
        return False
    if start is not None:
        now = _proc_start(pid)
        if now is not None and now != start:
            return False
    return True


def ensure_dir(workdir: Path) -> Path:
    """Create ``workdir`` (and parents) or raise :class:`WorkdirError` saying what is in the way."""
    workdir = Path(workdir)
    for p in (workdir, *workdir.parents):
        if p.exists() and not p.is_dir():
            what = "is a file, not a folder" if p == workdir else f"is under {p}, which is a file"
            raise WorkdirError(f"workdir {workdir} {what}; choose another --workdir")
    try:
        workdir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise WorkdirError(f"cannot create workdir {workdir}: {e.strerror or e}") from e
    return workdir


class WorkdirLock:
    """Exclusive lock on a workdir; use as a context manager or with :meth:`acquire` / :meth:`release`."""

    def __init__(self, workdir):
        self.workdir = Path(workdir)
        self.path = self.workdir / LOCK_NAME
        self.token: Optional[str] = None

    def _info(self) -> dict:
        return {"pid": os.getpid(), "host": socket.gethostname(), "proc_start": _proc_start(os.getpid()),
                "started": time.strftime("%Y-%m-%d %H:%M:%S %z"), "command": " ".join(sys.argv)[:500],
                "token": self.token}

    def _create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(self._info()) + "\n")
            f.flush()
            os.fsync(f.fileno())
        return True

    def _read(self) -> tuple[Optional[dict], str]:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return None, ""
        try:
            info = json.loads(text)
            return (info if isinstance(info, dict) else None), text
        except json.JSONDecodeError:
            return None, text

    def _describe(self, info: dict) -> str:
        cmd = f", running {info['command']!r}" if info.get("command") else ""
        return f"PID {info.get('pid')} on host {info.get('host')} (since {info.get('started', '?')}{cmd})"

    def acquire(self) -> "WorkdirLock":
        ensure_dir(self.workdir)
        self.token = uuid.uuid4().hex
        for _ in range(3):
            if self._create():
                return self
            info, text = self._read()
            if info is None and text == "" and not self.path.exists():
                continue  # released meanwhile: try again
            if info is None:
                raise WorkdirLocked(f"{self.workdir} is locked by {self.path}, which is unreadable; if no "
                                    f"training run uses {self.workdir}, delete {self.path}")
            host = socket.gethostname()
            if info.get("host") != host:
                raise WorkdirLocked(f"{self.workdir} is locked by {self._describe(info)}; this is host {host}, "
                                    f"so pcnn cannot tell whether that run still goes on. If it is gone, "
                                    f"delete {self.path}")
            pid = info.get("pid")
            if pid_alive(pid, info.get("proc_start")):
                raise WorkdirLocked(f"{self.workdir} is in use by {self._describe(info)}: another training run "
                                    "(or a resume) writes there. Wait for it to finish or stop it, or use "
                                    "another --workdir")
            # Stale: move it aside under a unique name, and only drop it if it is still the one we judged.
            aside = self.path.with_name(f".{LOCK_NAME}.stale.{os.getpid()}.{self.token}")
            try:
                os.rename(self.path, aside)
            except FileNotFoundError:
                continue
            if aside.read_text() != text:  # someone took the lock in between: give it back
                try:
                    os.link(aside, self.path)
                except FileExistsError:
                    pass
                aside.unlink()
                continue
            aside.unlink()
            log.warning(f"note: removed a stale lock {self.path}: {self._describe(info)} is no longer running "
                        "(killed or crashed); this run takes the workdir over")
        if self._create():
            return self
        info, _ = self._read()
        raise WorkdirLocked(f"{self.workdir} is in use by {self._describe(info or {})}")

    def release(self) -> None:
        """Remove the lock file if it is still ours (never another process's)."""
        if self.token is None:
            return
        info, _ = self._read()
        if info is not None and info.get("token") == self.token and info.get("pid") == os.getpid():
            self.path.unlink(missing_ok=True)
        self.token = None

    def __enter__(self) -> "WorkdirLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def break_idle_lock(workdir, idle_minutes: float, now: Optional[float] = None) -> Optional[str]:
    """Remove ``workdir``'s lock when it was written on **another host** and neither the lock nor
    any file a run writes (:data:`RUN_FILES`) has been modified for ``idle_minutes``: a training
    run saves ``last.pt`` every ``checkpoint_minutes``, so a run that still goes on cannot be idle
    that long. Returns a one-line note when a lock was removed, else None (no lock, a lock of
    this host, which :class:`WorkdirLock` judges itself, or a lock that is not idle).
    """
    workdir = Path(workdir)
    path = workdir / LOCK_NAME
    try:
        info = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    if not isinstance(info, dict) or info.get("host") == socket.gethostname():
        return None
    now = time.time() if now is None else now
    files = [path] + [workdir / n for n in RUN_FILES if (workdir / n).exists()]
    idle = (now - max(f.stat().st_mtime for f in files)) / 60
    if idle < idle_minutes:
        return None
    path.unlink(missing_ok=True)
    return (f"note: removed the lock of host {info.get('host')} (PID {info.get('pid')}, since "
            f"{info.get('started', '?')}): the run's files were idle for {idle:.0f} min, so that runtime is gone")


def _has_rows(path: Path, header_lines: int) -> bool:
    try:
        with open(path, "rb") as f:
            lines = [line for line in f.read(1 << 16).splitlines() if line.strip()]
    except OSError:
        return False
    return len(lines) > header_lines


def run_outputs(workdir) -> list[str]:
    """Names of the results of an earlier run in ``workdir``: checkpoints, exports, metric rows.

    ``config.json`` and header-only metric files (a run stopped before its first
    checkpoint) are not results.
    """
    workdir = Path(workdir)
    found = [n for n in RESULT_FILES if (workdir / n).exists()]
    if _has_rows(workdir / "metrics.jsonl", 0):
        found.append("metrics.jsonl")
    if _has_rows(workdir / "metrics.csv", 1):
        found.append("metrics.csv")
    return found


def claim_for_run(workdir, resume: bool, overwrite: bool) -> None:
    """Check that a run may write into ``workdir`` (its lock already held); remove an old run on ``overwrite``.

    * ``resume`` with a ``last.pt``: continue it.
    * Results of an earlier run and nothing to resume (``resume=False``, or no
      ``last.pt``): :class:`RunExistsError`, unless ``overwrite``, which deletes
      every file a run writes before the new run starts.
    """
    workdir = Path(workdir)
    if resume and (workdir / "last.pt").exists():
        return
    found = run_outputs(workdir)
    if found and not overwrite:
        if resume:
            raise RunExistsError(f"{workdir} has no last.pt to resume from but holds the results of an earlier "
                                 f"run ({', '.join(found)}); a fresh start would replace them. Pass --overwrite "
                                 "(overwrite=True) to replace that run, or use another --workdir")
        hint = "--resume to continue it, " if "last.pt" in found else ""
        raise RunExistsError(f"{workdir} already holds a run ({', '.join(found)}); pass {hint}--overwrite to "
                             "replace it, or use another --workdir")
    if overwrite:
        removed = [n for n in RUN_FILES if (workdir / n).exists()]
        for n in removed:
            (workdir / n).unlink()
        if found:
            log.warning(f"note: --overwrite: removed the earlier run in {workdir} ({', '.join(removed)})")

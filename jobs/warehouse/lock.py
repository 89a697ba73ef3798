"""Who may write a warehouse, and whose staging is left over: the Sink's commit lock and each run's liveness mark.
Used by jobs/warehouse/__init__.py (every chunk's commits, and at the start of every run ``remove_stale_staging``).

**Why a kernel lock (``fcntl.flock``), not a lease row in a Delta table or retries on Delta's conflicts.**
A chunk's commit reads `anomaly_pattern_days`, aggregates, then writes two tables in separate commits: Delta's
optimistic concurrency checks each commit against its own table only, so a second run committing in between
would be lost without any conflict being raised, and a first write to a new table races (delta-rs creates it
with mode "error"). So the whole commit sequence must be exclusive, which retries cannot give. A lease row
would need an expiry and a heartbeat, and a `kill -9` would leave it blocking every run until it expired. The
kernel drops a ``flock`` the moment its holder dies, however it dies, so a rerun after a crash starts at once,
with no clock and no stale lease. The lock covers only the commits (seconds), not the scoring (minutes to
hours): two runs score side by side and commit one after the other; the second waits at most
``output.lock_wait_s`` and then fails with who holds the lock.

It works for warehouses on the driver's filesystem (and NFS, where Linux maps ``flock`` to POSIX locks). A
warehouse on object storage or in a catalog has no such lock: there runs must be serialised by their scheduler
(the bundle's jobs run one at a time), and `score` says so once.

Staging: each run holds an exclusive ``flock`` on ``_staging/<run_id>.alive`` for its whole life and stages
under ``_staging/<run_id>/``. A folder whose mark nobody holds belongs to a run that has ended; if it is still
there, that run was killed, and the next run removes it. Object storage has no marks: there the next run removes
staging older than ``output.stale_staging_hours``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import socket
import time
from collections.abc import Callable, Iterator

from portprint.jobs.warehouse import delta

STAGING = "_staging"
LOCK_DIR = "_portprint"
COMMIT_LOCK = "commit.lock"
ALIVE = ".alive"


class WarehouseError(RuntimeError):
    """The warehouse cannot be written now (busy, full); the message says what happened and what to do."""


def _holder_text(path: str) -> str:
    try:
        with open(path) as fh:
            h = json.load(fh)
        return f"run {h['run_id']} (pid {h['pid']} on {h['host']}, committing since {h['since']})"
    except (OSError, ValueError, KeyError):
        return "another run"


@contextlib.contextmanager
def commit_lock(root: str, run_id: str, wait_s: float, log: Callable[[str], None]) -> Iterator[bool]:
    """Hold the warehouse's commit lock for the block; yield whether a lock was taken (False: not a local path)."""
    if not delta.is_local(root) or delta.is_table_name(root):
        yield False
        return
    folder = os.path.join(delta.local_path(root), LOCK_DIR)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, COMMIT_LOCK)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline, said = time.monotonic() + wait_s, False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise WarehouseError(
                        f"warehouse {root} is being written by {_holder_text(path)}; waited {wait_s:.0f}s "
                        "(output.lock_wait_s). This run committed nothing: rerun it when that run has finished"
                    ) from None
                if not said:
                    log(f"portprint score: waiting for {_holder_text(path)} to finish committing to {root} "
                        f"(at most {wait_s:.0f}s)")
                    said = True
                time.sleep(0.2)
        holder = {"run_id": run_id, "pid": os.getpid(), "host": socket.gethostname(),
                  "since": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        yield True
    finally:
        os.close(fd)  # closing the descriptor releases the lock


@contextlib.contextmanager
def run_mark(root: str, run_id: str) -> Iterator[None]:
    """Mark a run alive for the block (its staging must not be removed by others meanwhile)."""
    if not delta.is_local(root) or delta.is_table_name(root):
        yield
        return
    folder = os.path.join(delta.local_path(root), STAGING)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, run_id + ALIVE)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        with contextlib.suppress(OSError):
            os.remove(path)
        os.close(fd)


def _alive(mark: str) -> bool:
    """Is the run owning this mark still running (does someone hold its lock)?"""
    try:
        fd = os.open(mark, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def remove_stale_staging(root: str, min_age_s: float | None = None) -> list[str]:
    """Remove the staging folders of runs that have ended; return what was removed.

    Local warehouses: a folder goes when no live run holds its mark (a run killed with ``kill -9``). Object
    storage has no marks: there a folder goes only when ``min_age_s`` is given and it is older than that (the
    longest a run may take: output.stale_staging_hours), never in the middle of a run."""
    base = (delta.local_path(root) if delta.is_local(root) else root.rstrip("/")) + "/" + STAGING
    if not delta.is_local(root):
        return _remove_old_remote(base, min_age_s)
    if not os.path.isdir(base):
        return []
    removed = []
    for name in sorted(os.listdir(base)):
        path = os.path.join(base, name)
        if name.endswith(ALIVE):
            if not os.path.exists(path[: -len(ALIVE)]) and not _alive(path):
                with contextlib.suppress(OSError):
                    os.remove(path)
            continue
        if _alive(path + ALIVE):
            continue
        if os.path.isdir(path):
            delta.remove_folder(path)
        else:
            os.remove(path)
        with contextlib.suppress(OSError):
            os.remove(path + ALIVE)
        removed.append(path)
    return removed


def _remove_old_remote(base: str, min_age_s: float | None) -> list[str]:
    if min_age_s is None:
        return []
    import pyarrow.fs as pafs

    from portprint.jobs.engine import storage

    # The store as every other client of the run reaches it: conf/'s s3 settings, then the AWS_* variables.
    fs, inner = storage.filesystem(base, storage.configured_s3())
    if fs.get_file_info(inner).type == pafs.FileType.NotFound:
        return []
    now, removed = dt.datetime.now(dt.timezone.utc), []
    for info in fs.get_file_info(pafs.FileSelector(inner, recursive=False)):
        # A folder's own time is not kept by object stores: the newest object under it dates it.
        objs = ([info] if info.type == pafs.FileType.File
                else fs.get_file_info(pafs.FileSelector(info.path, recursive=True)))
        times = [o.mtime for o in objs if o.mtime is not None]
        newest = max(times) if times else None
        if newest is not None and newest.tzinfo is None:
            newest = newest.replace(tzinfo=dt.timezone.utc)
        if newest is None or (now - newest).total_seconds() >= min_age_s:
            if info.type == pafs.FileType.Directory:
                fs.delete_dir(info.path)
            else:
                fs.delete_file(info.path)
            removed.append(f"{base}/{info.base_name}")
    return removed

"""Fault points for the crash, concurrency and retry tests: places where a test kills or pauses a run. Called by
the Sink (jobs/warehouse/), `score` and the Detect stage runner (jobs/engine/pipeline.py); no-ops unless an
environment variable names the point.

- ``PORTPRINT_FAULT=<point>``: the process is killed there (models/artifact.py ``fault_point``: with
  ``PORTPRINT_FAULT_READY=<file>`` it writes its pid to the file and waits for the test's ``kill -9``).
- ``PORTPRINT_PAUSE=<point>`` with ``PORTPRINT_PAUSE_READY=<file>``: the process writes its pid to the file and
  waits there until the test removes the file (two runs interleaved on purpose).
- ``PORTPRINT_KILL_WORKER_ONCE=<marker file>``: the first Python worker to run Detect creates the marker and kills
  itself (SIGKILL); Spark's retry of the task finds the marker and runs normally.

Points: ``score:before-anomalies`` (the chunk's `committing` row is written, nothing else), ``score:after-anomalies``,
``score:after-patterns``, ``score:before-unstage`` (all committed and logged, the staging still there),
``patterns:aggregated`` (inside the commit lock, between reading the pattern days and writing).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator

import pyarrow as pa

from portprint.models.artifact import fault_point

PAUSE_ENV, PAUSE_READY_ENV, WORKER_ENV = "PORTPRINT_PAUSE", "PORTPRINT_PAUSE_READY", "PORTPRINT_KILL_WORKER_ONCE"


def fault(name: str) -> None:
    """Kill or pause the process here when the environment names this point."""
    fault_point(name)
    if os.environ.get(PAUSE_ENV) != name or not os.environ.get(PAUSE_READY_ENV):
        return
    ready = os.environ[PAUSE_READY_ENV]
    with open(ready + ".part", "w") as fh:
        fh.write(str(os.getpid()))
    os.replace(ready + ".part", ready)
    deadline = time.monotonic() + 600
    while os.path.exists(ready) and time.monotonic() < deadline:
        time.sleep(0.05)


Stage = Callable[[Iterator[pa.Table]], Iterator[pa.RecordBatch]]


def killing_worker_once(fn: Stage) -> Stage:
    """``fn``, or, when PORTPRINT_KILL_WORKER_ONCE is set on the driver, ``fn`` behind a worker that dies once.

    The variable is read here, on the driver, and travels in the closure: Python workers are forked from a daemon
    started with the session, so they never see variables set after that."""
    marker = os.environ.get(WORKER_ENV)
    if not marker:
        return fn

    def run(tables: Iterator[pa.Table]) -> Iterator[pa.RecordBatch]:
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            yield from fn(tables)
            return
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        it = iter(tables)
        next(it, None)  # mid-task: the first row group is read, then the worker dies
        os.kill(os.getpid(), signal.SIGKILL)
        yield from ()  # never reached: a generator like fn

    return run

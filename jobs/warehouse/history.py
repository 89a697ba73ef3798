"""What the `runs` log says about each date: done, or why it must be scored. Read by jobs/score.py (`--new-only`,
`--dry-run`, a plain `score` that would rewrite history) and by jobs/promotion.py (the last scored week).

A date's *attempts* are its rows grouped by run: a `committing` row is written just before a chunk's first commit,
then one closing row (`succeeded`, or `failed`/`interrupted` with the tables it did commit in `committed`). An
attempt *touched* the tables when it succeeded, when its closing row lists a commit, or when it has no closing
row at all (the run was killed between commits: what it changed is unknown). The latest touched attempt decides:

- it succeeded and the date's files are unchanged since (same archive snapshot): done, whatever model scored it
  (a retrain does not make history new; rescoring is asked for with `score --rescore`), unless the escalation
  settings in force differ from those it recorded (settings-changed: a deliberate change of configuration);
- it succeeded but the files changed: late-written;
- it did not finish: half-finished (the tables may hold part of it; a rerun repairs it);
- no attempt touched the tables: failed (attempts failed before committing anything), or new (no attempt).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

NEW, LATE, RESCORE, FAILED, HALF, RANGE, DONE = ("new", "late-written", "rescore", "failed", "half-finished",
                                                  "range", "done")
SETTINGS = "settings-changed"
COMMITTING, SUCCEEDED = "committing", "succeeded"
# The runs columns this module reads (older tables may lack the last three: they read as null).
COLUMNS = ("run_id", "date", "status", "model_version", "started_at", "archive_snapshot", "committed", "logged_at",
           "escalation_hash", "archive", "anomalies")
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


@dataclass(frozen=True)
class DateState:
    """One date's standing in the runs log."""

    date: str
    state: str                      # DONE, NEW, LATE, FAILED, HALF or SETTINGS
    model_version: str | None = None  # of the attempt that decides (None when none touched the tables)
    run_id: str | None = None
    at: dt.datetime | None = None

    def describe(self) -> str:
        """One line for people: what the log says about the date."""
        when = f" at {self.at:%Y-%m-%d %H:%M} UTC" if self.at else ""
        by = f"run {self.run_id}, model {self.model_version}{when}"
        return {DONE: f"scored by {by}; files unchanged since",
                LATE: f"files changed since it was scored by {by}",
                SETTINGS: f"scored by {by} under other escalation settings",
                HALF: f"{by} stopped between its commits; the tables may hold part of it",
                FAILED: "every earlier attempt failed before committing anything",
                NEW: "never scored"}[self.state]


def _when(row: dict) -> dt.datetime:
    return row.get("logged_at") or row.get("started_at") or _EPOCH


def _touched(rows: list[dict]) -> tuple[bool, dict | None]:
    """Did this attempt (one run's rows for one date) change the tables, and its closing row (None: none)."""
    closing = [r for r in rows if r["status"] != COMMITTING]
    last = max(closing, key=_when) if closing else None
    if last is None:
        return True, None  # a committing row with nothing after it: killed between commits
    if last["status"] == SUCCEEDED:
        return True, last
    committed = last.get("committed")
    # A failure logged by an older portprint (no `committed` column) may have committed part of its chunk.
    return committed is None or len(committed) > 0, last


def settings_hash(settings: str) -> str:
    """A short hash of the escalation settings' canonical JSON."""
    return hashlib.sha256(settings.encode()).hexdigest()[:16]


def date_states(runs: Iterable[dict], snapshots: dict[str, str], settings: str | None = None
                ) -> dict[str, DateState]:
    """Each date of ``snapshots`` (date -> the archive's fingerprint now) as the runs log leaves it; ``settings``:
    the hash of the escalation settings in force (rows without one, from older runs, count as the same)."""
    by_date: dict[str, dict[str, list[dict]]] = {}
    for r in runs:
        if r.get("date") in snapshots:
            by_date.setdefault(r["date"], {}).setdefault(r.get("run_id") or "", []).append(r)
    out = {}
    for d, snap in snapshots.items():
        attempts = by_date.get(d, {})
        touched = []
        for rows in attempts.values():
            did, closing = _touched(rows)
            if did:
                touched.append((min(_when(r) for r in rows), rows[0], closing))
        if not touched:
            out[d] = DateState(d, FAILED if attempts else NEW)
            continue
        at, first, closing = max(touched, key=lambda t: t[0])
        if closing is None or closing["status"] != SUCCEEDED:
            out[d] = DateState(d, HALF, first.get("model_version"), first.get("run_id"), at)
        else:
            same = (closing.get("archive_snapshot") or "") == (snap or "")
            was = closing.get("escalation_hash")
            state = LATE if not same else SETTINGS if settings and was and was != settings else DONE
            out[d] = DateState(d, state, closing.get("model_version"), closing.get("run_id"), at)
    return out


@dataclass(frozen=True)
class Decision:
    """What a run does with one date of its range, and why (``score --dry-run`` prints these)."""

    date: str
    score: bool
    reason: str   # NEW, LATE, FAILED, HALF, RESCORE; DONE when skipped
    detail: str   # what the runs log says about the date


class AlreadyScored(ValueError):
    """A plain `score` would replace dates already scored: rescoring history is asked for with --rescore."""


def plan_dates(states: dict[str, DateState], dates: list[str], *, new_only: bool, rescore: bool
               ) -> list[Decision]:
    """Each date's decision. With ``rescore`` every date is scored; otherwise dates whose last finished run
    succeeded on unchanged files are skipped (--new-only) or refused (a plain run: raises AlreadyScored)."""
    out = []
    for d in dates:
        st = states[d]
        if rescore:
            out.append(Decision(d, True, RESCORE, st.describe()))
        else:
            out.append(Decision(d, st.state != DONE, st.state, st.describe()))
    return out


def refusal(decisions: list[Decision]) -> str | None:
    """Why a plain `score` (neither --new-only nor --rescore) must not run, or None."""
    done = [x.date for x in decisions if not x.score]
    if not done:
        return None
    span = done[0] if len(done) == 1 else f"{done[0]}..{done[-1]} ({len(done)} dates)"
    todo = [x.date for x in decisions if x.score]
    return (f"{span} already scored (the runs table has a finished run on unchanged files); nothing was written. "
            f"Pass --new-only to score only the {len(todo)} other date(s), or --rescore with --start and --end "
            "to replace them on purpose")


def check_request(new_only: bool, rescore: bool, start: str | None, end: str | None) -> None:
    """Refuse a `score` request that contradicts itself (ValueError, one line for the CLI)."""
    if new_only and rescore:
        raise ValueError("--new-only and --rescore contradict each other: --new-only skips scored dates, "
                         "--rescore replaces them")
    if rescore and (start is None or end is None):
        raise ValueError("--rescore replaces history: name the dates with both --start and --end")

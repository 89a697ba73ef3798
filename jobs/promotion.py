"""`portprint promote`: check a registered candidate against the champion, then move the `champion` alias. Called
by jobs/cli.py (and the weekly Databricks job's promote task, which fails when a check does).

Checks, each refusing with its numbers:

- **Alert volume.** The candidate is scored, with the same Source, Detect and Escalate as `score` and the
  suppression rules in force, on the champion's last ``promote.compare_days`` scored dates of the warehouse
  (the dates whose current rows the champion wrote, read from the archive `runs` names for each), into a
  throwaway staging folder of that warehouse that is removed however the check ends. Its anomalies on those
  dates may be at most ``promote.max_alert_ratio`` times the champion's `runs.anomalies` (with one alert's
  allowance, so a champion with no alerts does not make any alert a refusal).
- **Goals** (with a labelled set). `evaluate` on the labelled flows' dates must meet ``promote.goals``; the
  numbers are logged to the candidate's run in the registry.

``force`` (a reason) promotes despite failed checks; the version's tags then record the reason and each check.
"""

from __future__ import annotations

import datetime as dt
import math
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from pyspark.sql import SparkSession

from portprint.conf.config import Config
from portprint.jobs.engine.lifecycle import open_registry
from portprint.models.registry import CHAMPION, Registered, RegistryError

ALERTS, GOALS = "alert volume", "goals"


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    detail: str
    values: dict = field(default_factory=dict)

    def line(self) -> str:
        return f"check {self.name}: {'ok' if self.passed else 'FAILED'}: {self.detail}"


@dataclass(frozen=True)
class PromoteResult:
    checks: list[Check]
    promoted: tuple[Registered, Registered | None] | None  # (new champion, the one it replaced); None: refused
    refusal: str | None = None
    forced: bool = False


def champion_dates(runs: list[dict], model_version: str, days: int) -> list[dict]:
    """The last ``days`` dates whose latest successful run is by ``model_version``: their runs rows, by date."""
    latest: dict[str, dict] = {}
    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
    for r in runs:
        if r.get("status") != "succeeded":
            continue
        key = r.get("logged_at") or r.get("started_at") or epoch
        if r["date"] not in latest or key >= (latest[r["date"]].get("logged_at") or latest[r["date"]].get(
                "started_at") or epoch):
            latest[r["date"]] = r
    mine = [r for d, r in sorted(latest.items()) if r.get("model_version") == model_version]
    return mine[-days:]


def alert_volume(spark: SparkSession, cfg: Config, candidate_dir: str, champion: Registered, warehouse: str,
                 log: Callable[[str], None]) -> Check:
    """Score the candidate on the champion's last scored dates and compare the anomalies per date."""
    from portprint.jobs.archive import open_source
    from portprint.jobs.engine import pipeline
    from portprint.jobs.suppress import rules_at
    from portprint.jobs.warehouse import Warehouse
    from portprint.udfs.scoring import load_model

    sink = Warehouse(spark, cfg, warehouse, create=False)
    rows = champion_dates(sink.history(), champion.model_version, cfg.promote.compare_days)
    if not rows:
        return Check(ALERTS, False, f"{warehouse} has no date whose rows the champion ({champion.uri}, model "
                                    f"{champion.model_version}) wrote: nothing to compare the candidate with. Score "
                                    "with the champion first, or pass the warehouse it scores into")
    art = load_model(candidate_dir)
    rules = rules_at(spark, cfg, warehouse)
    run_id = "promote-" + dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ-") + uuid.uuid4().hex[:8]
    by_archive: dict[str, list[str]] = {}
    for r in rows:
        by_archive.setdefault(r["archive"], []).append(r["date"])
    candidate: dict[str, int] = {}
    log(f"portprint promote: scoring the candidate on {len(rows)} date(s) the champion scored "
        f"({rows[0]['date']}..{rows[-1]['date']})")
    with sink.run(run_id):
        for archive, dates in by_archive.items():
            source = open_source(spark, cfg, archive, dates=dates)
            with sink.stage(run_id, dates[0]) as stage:
                pipeline.detect(source, art, cfg, run_id, 0, stage, rules=rules)
                pipeline.escalate(source, art, cfg, run_id, 0, stage, rules)
                counts, _ = pipeline.chunk_counts(stage, source, dates)
            candidate |= {d: int(c["_flagged"]) for d, c in counts.items()}
    champ_total = sum(int(r["anomalies"] or 0) for r in rows)
    cand_total = sum(candidate.values())
    limit = cfg.promote.max_alert_ratio * max(champ_total, 1)
    per_day = ", ".join(f"{r['date']} {r['anomalies']}->{candidate.get(r['date'], 0)}" for r in rows)
    ratio = cand_total / champ_total if champ_total else (math.inf if cand_total else 1.0)
    passed = cand_total <= limit
    detail = (f"the candidate raises {cand_total} alerts where the champion raised {champ_total} on the same "
              f"{len(rows)} date(s) (ratio {ratio:.2f}; at most {cfg.promote.max_alert_ratio:g} allowed, "
              f"promote.max_alert_ratio); per date champion->candidate: {per_day}")
    return Check(ALERTS, passed, detail, {"champion_alerts": champ_total, "candidate_alerts": cand_total,
                                          "ratio": ratio, "dates": [r["date"] for r in rows]})


def goals(spark: SparkSession, cfg: Config, flows: str, labels: str, candidate_dir: str,
          log: Callable[[str], None]) -> tuple[Check, dict]:
    """Evaluate the candidate on the labelled flows' dates against promote.goals."""
    from portprint.jobs.evaluate import run_evaluate

    ev = run_evaluate(spark, cfg, flows, labels, candidate_dir, log=log)
    g = cfg.promote.goals
    tunnel = ev["tunnel"]["recall"] if ev["tunnel"]["flows"] else None
    tests = [("false-positive rate on genuine DNS", ev["fpr"], "<=", g.max_fpr),
             ("non-DNS recall", ev["recall"], ">=", g.min_recall),
             ("tunnel recall", tunnel, ">=", g.min_tunnel_recall)]
    parts, ok = [], True
    for name, value, op, bound in tests:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            parts.append(f"{name}: no such flows labelled")
            continue
        good = value <= bound if op == "<=" else value >= bound
        ok &= good
        parts.append(f"{name} {value:.4g} ({'meets' if good else 'misses'} {op} {bound:g})")
    where = f"{len(ev['dates'])} labelled date(s) ({ev['dates'][0]}..{ev['dates'][-1]})" if ev["dates"] else "labels"
    return Check(GOALS, ok, f"on {where}: " + "; ".join(parts),
                 {"fpr": ev["fpr"], "recall": ev["recall"], "tunnel_recall": tunnel}), ev


def run_promote(spark: SparkSession | None, cfg: Config, ref: str, store: str | None = None, *,
                warehouse: str | None = None, labels: str | None = None, flows: str | None = None,
                force: str | None = None, log: Callable[[str], None] = lambda m: print(m, file=sys.stderr)
                ) -> PromoteResult:
    """Check the version ``ref`` names, then make it the champion (or refuse, unless ``force`` gives a reason)."""
    reg = open_registry(cfg, store)
    cand = reg.get(ref)
    try:
        champ: Registered | None = reg.get(f"models:/{cand.name}@{CHAMPION}")
    except RegistryError:
        champ = None
    checks: list[Check] = []
    if champ is None:
        checks.append(Check(ALERTS, True, "no champion yet: nothing to compare the candidate with"))
    elif champ.version == cand.version:
        checks.append(Check(ALERTS, True, f"{cand.uri} already is the champion"))
    elif warehouse is None:
        checks.append(Check(ALERTS, False, f"comparing with the champion ({champ.uri}) needs --warehouse, the "
                                           "warehouse it scores into"))
    else:
        checks.append(alert_volume(spark, cfg, str(reg.resolve(cand.uri)), champ, warehouse, log))
    if labels:
        check, ev = goals(spark, cfg, flows, labels, str(reg.resolve(cand.uri)), log)
        checks.append(check)
        reg.log_evaluation(cand.uri, ev)
    failed = [c for c in checks if not c.passed]
    if failed and not force:
        return PromoteResult(checks, None, f"{cand.uri} was not promoted: " + "; ".join(
            f"{c.name} check failed" for c in failed) + " (numbers above). Pass --force REASON to promote anyway")
    promoted = reg.promote(cand.uri)
    tags = {f"portprint.promote.{c.name.replace(' ', '_')}": ("ok: " if c.passed else "FAILED: ") + c.detail
            for c in checks}
    if failed:
        tags["portprint.promote.forced"] = force
    reg.tag(cand.uri, tags)
    return PromoteResult(checks, promoted, None, bool(failed))

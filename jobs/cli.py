"""`portprint` command line: thin entry points (parse -> config -> session -> job -> print)."""

from __future__ import annotations

import argparse
import logging
import sys
import textwrap
from collections.abc import Sequence

EPILOG = textwrap.dedent("""\
    A night's work, end to end:
      portprint sample --out /data/flows --days 3           # or point at your own archive
      portprint train  --flows /data/flows --model /models/dns --end 2026-11-20   # registers models:/portprint/1
      portprint promote --model models:/portprint/1 --registry /models/mlruns
      portprint score  --flows /data/flows --model models:/portprint@champion --registry /models/mlruns \
                       --warehouse /data/wh --start 2026-11-21      # or --model /models/dns, the folder itself
      portprint sql    --warehouse /data/wh "SELECT date, detector, count(*) FROM anomalies GROUP BY 1, 2"

    Defaults come from conf/base.yml plus conf/<env>.yml; --conf FILE overrides both (for example
    your archive's column names under archive.columns). Dates are YYYY-MM-DD, inclusive.
    portprint raises alerts for people to judge; it never blocks or changes traffic.
    """)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--conf", metavar="FILE", help="YAML file overriding conf/ (e.g. archive.columns)")
    p.add_argument("--env", default="local", choices=["local", "databricks"],
                   help="which conf/<env>.yml overlay to apply (default: local)")
    p.add_argument("--verbose", action="store_true",
                   help="also show Spark's and Ivy's own output (start-up notices, warnings, jar resolution)")


def _dates(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--start", metavar="YYYY-MM-DD", help=f"first date to {what} (default: the first present)")
    p.add_argument("--end", metavar="YYYY-MM-DD", help=f"last date to {what}, inclusive (default: the last present)")


def _registry(p: argparse.ArgumentParser) -> None:
    p.add_argument("--registry", metavar="DIR",
                   help="the local MLflow model registry (default: registry.path in conf/, else <the model folder's "
                        "parent>/mlruns)")


MODEL_HELP = ("a model folder written by `portprint train`, or a registry URI: models:/portprint@champion, "
              "models:/portprint/3")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="portprint",
        description="Find traffic on port 53 that does not look like DNS, from the payload prefixes kept in "
                    "Parquet flow archives, and land it in Delta tables for analysts.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("sample", help="write a realistic synthetic flow archive (mostly DNS, ~0.5%% not)",
                       description="Write a synthetic flow archive in the contract's schema, Hive-partitioned "
                                   "by date, plus _labels.parquet (flow_id -> label) for evaluation.")
    p.add_argument("--out", required=True, metavar="ARCHIVE", help="archive root to write")
    p.add_argument("--days", type=int, default=3, help="number of dates (default 3)")
    p.add_argument("--flows-per-day", type=int, default=20000, help="flows per date (default 20000)")
    p.add_argument("--seed", type=int, default=7, help="random seed; the same seed writes the same archive")
    p.add_argument("--start", default="2026-11-01", metavar="YYYY-MM-DD", help="first date (default 2026-11-01)")
    _common(p)

    p = sub.add_parser("ingest", help="turn pcap/pcapng captures into a flow archive",
                       description="Read pcap or pcapng files (or a folder of them) and write a flow archive in "
                                   "the contract's schema: TCP prefixes from the in-order reassembled stream, "
                                   "UDP from the first datagram of each direction.")
    p.add_argument("--pcap", required=True, nargs="+", metavar="PATH", help="capture file(s) or folder(s)")
    p.add_argument("--out", required=True, metavar="ARCHIVE", help="archive root to write")
    p.add_argument("--idle-timeout", type=float, default=60.0, metavar="S",
                   help="seconds of silence that close a UDP flow (default 60)")
    p.add_argument("--keep-partial", action="store_true",
                   help="on a truncated or corrupt capture, keep the flows read before the damage")
    _common(p)

    p = sub.add_parser("train", help="train the autoencoders on the site's port-53 flows and calibrate them",
                       description="Train on the port-53 flows of a date window (those the header rule "
                                   "accepts), hold some out, and set each model's threshold at its target "
                                   "false-positive rate. Writes a model folder (model.pt, qname.pt, model.json, "
                                   "MODEL_CARD.md) whole, then registers it in the model registry as a new "
                                   "version with the alias `candidate`; `portprint promote` makes it the champion.")
    p.add_argument("--flows", required=True, metavar="ARCHIVE", help="flow archive root")
    p.add_argument("--model", required=True, metavar="MODEL_DIR",
                   help="folder to write the model to (an existing model there is replaced whole, never edited)")
    p.add_argument("--days", type=int, metavar="N",
                   help="train on the N most recent archive dates ending at --end (default model.window_days: 14; "
                        "0: every date); --start picks the first date instead")
    _dates(p, "train on")
    p.add_argument("--target-fpr", type=float, metavar="F",
                   help="false-positive rate the header model's threshold aims at on held-out DNS (default "
                        "threshold.target_fpr: 1e-4)")
    p.add_argument("--qname-target-fpr", type=float, metavar="F",
                   help="false-positive rate the question model's threshold aims at on held-out names (default "
                        "threshold.qname_target_fpr: 1e-6)")
    _registry(p)
    p.add_argument("--benign-from", metavar="DIR",
                   help="a warehouse: add the flows people marked benign, and flagged names under allowlisted "
                        "domains, to training as normal traffic (the model card says how many)")
    _common(p)

    p = sub.add_parser("score", help="score archive dates and write the anomalies and runs Delta tables",
                       description="Score every port-53 flow of the dates in range with the header rule, the "
                                   "header model and the question model; then judge each day's names together, "
                                   "per client and registered domain (tunnel: many names no host name has, one "
                                   "UDP socket kept open with data-like names, or a day of odd new names). A "
                                   "date's anomalies are replaced in one Delta commit, so reruns never duplicate "
                                   "rows.")
    p.add_argument("--flows", required=True, metavar="ARCHIVE", help="flow archive root")
    p.add_argument("--model", required=True, metavar="MODEL", help=MODEL_HELP)
    _registry(p)
    p.add_argument("--warehouse", required=True, metavar="DIR", help="folder holding the Delta tables")
    _dates(p, "score")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--new-only", action="store_true",
                     help="score only dates not scored yet, written late (files changed since), or left failed or "
                          "half-finished; skip the rest, whatever model scored them (the nightly job; a stopped "
                          "backfill resumes). Without it, a range holding scored dates is refused")
    how.add_argument("--rescore", action="store_true",
                     help="score every date from --start to --end again (both required), replacing what earlier "
                          "runs wrote: rescoring history on purpose, e.g. with a newly promoted model")
    p.add_argument("--dry-run", action="store_true",
                   help="list the dates this command would score and why (new, late-written, failed, "
                        "half-finished, rescore) and the ones it would skip; write nothing")
    p.add_argument("--chunk-days", type=int, metavar="N",
                   help="commit every N dates (default output.chunk_days: 7); a failure loses one chunk at most")
    _common(p)

    p = sub.add_parser("evaluate", help="measure the detectors on labelled flows (FPR, recall, ROC-AUC, report)",
                       description="Score labelled flows exactly as `score` would, and report per label the flows "
                                   "and flags of each detector, the false-positive rate on genuine DNS (label "
                                   "dns), recall on every other protocol, ROC-AUC, recall at FPR 1e-2/1e-3/1e-4 "
                                   "and the threshold each needs. dns-tunnel is reported on its own line.")
    p.add_argument("--flows", required=True, metavar="ARCHIVE", help="flow archive root")
    p.add_argument("--labels", required=True, metavar="LABELS", help="Parquet or CSV with flow_id,label")
    p.add_argument("--model", required=True, metavar="MODEL",
                   help=MODEL_HELP + "; a URI's version gets the evaluation's numbers as eval.* metrics")
    _registry(p)
    p.add_argument("--out", metavar="DIR", help="write evaluation.json, evaluation.md and plots here")
    _dates(p, "evaluate")
    _common(p)

    p = sub.add_parser("threshold", help="write a copy of a model with its threshold at another false-positive rate",
                       description="Re-derive one block's threshold from the held-out losses stored at training "
                                   "time, without retraining, and write the result as a new model folder (a new "
                                   "model_version, registered as a new candidate version). The model it starts "
                                   "from is never changed.")
    p.add_argument("--model", required=True, metavar="MODEL", help=MODEL_HELP)
    p.add_argument("--out", required=True, metavar="MODEL_DIR", help="folder to write the new model to")
    p.add_argument("--target-fpr", required=True, type=float, metavar="F", help="e.g. 1e-4")
    p.add_argument("--method", choices=["auto", "empirical", "lognormal", "pot"], default="auto",
                   help="empirical quantile, log-normal fit (Kitsune), or auto (default)")
    p.add_argument("--block", choices=["header", "qname"], default="header",
                   help="which model's threshold: the header model (default) or the question-section model")
    _registry(p)
    _common(p)

    p = sub.add_parser("promote", help="check a registered model version, then make it the champion nightly "
                                       "scoring uses",
                       description="Check a registered version, then give it the registry alias `champion` (scoring "
                                   "with --model models:/portprint@champion then uses it). Checks: scored on the "
                                   "champion's last scored dates in --warehouse, the candidate may raise at most "
                                   "promote.max_alert_ratio times the champion's alerts; with --labels, evaluate's "
                                   "numbers must meet promote.goals. A failed check refuses, with the numbers; "
                                   "--force REASON overrides it and the registry records the reason. The version "
                                   "it replaces is tagged retired; both stay in the registry, unchanged.")
    p.add_argument("--model", required=True, metavar="URI", help="the version, e.g. models:/portprint/3 or "
                                                                 "models:/portprint@candidate")
    _registry(p)
    p.add_argument("--warehouse", metavar="DIR",
                   help="the warehouse the champion scores into: the candidate is scored on the champion's last "
                        "scored dates there (the archive each date came from, as `runs` records it) and its alert "
                        "volume compared (required once there is a champion)")
    p.add_argument("--labels", metavar="LABELS",
                   help="a labelled set (flow_id,label Parquet or CSV): evaluate the candidate on it, bounded to its "
                        "dates, and refuse when the goals are not met")
    p.add_argument("--flows", metavar="ARCHIVE", help="the archive holding the labelled flows (with --labels)")
    p.add_argument("--force", metavar="REASON",
                   help="promote even though a check fails; the reason and the failed checks are recorded on the "
                        "version in the registry")
    _common(p)

    p = sub.add_parser("sql", help="run Spark SQL over the anomalies, runs and anomaly_patterns tables",
                       description="Run one Spark SQL statement with the tables registered as `anomalies`, "
                                   "`runs` and `anomaly_patterns`, and print the result.")
    p.add_argument("--warehouse", required=True, metavar="DIR", help="folder holding the Delta tables")
    p.add_argument("query", help='e.g. "SELECT * FROM anomalies ORDER BY score DESC LIMIT 20"')
    p.add_argument("--limit", type=int, default=50, help="rows to print at most (default 50)")
    p.add_argument("--write", action="store_true",
                   help="allow statements that change tables (INSERT, UPDATE, DELETE, MERGE, CREATE, DROP, "
                        "ALTER, ...); without it only queries, SHOW, DESCRIBE and EXPLAIN run")
    _common(p)

    p = sub.add_parser("maintain", help="compact the Delta tables, VACUUM them, and remove dead runs' staging",
                       description="For every table of the warehouse: compact small files (OPTIMIZE; anomalies "
                                   "Z-ordered by maintain.zorder), then VACUUM files no version younger than the "
                                   "retention reads (never less than maintain.time_travel_days, so time travel "
                                   "that far back keeps working); then remove staging folders left by failed or "
                                   "killed runs. Weekly in the bundle; run it when no score is running.")
    p.add_argument("--warehouse", required=True, metavar="DIR", help="folder holding the Delta tables")
    p.add_argument("--retain-days", type=float, metavar="N",
                   help="VACUUM keeps files that versions of the last N days read (default and minimum: "
                        "maintain.time_travel_days)")
    _common(p)
    _people_parsers(sub)
    return parser


def _people_parsers(sub) -> None:
    """triage, suppress, report and export: what people decide and read (jobs/triage.py and beside it)."""
    p = sub.add_parser("triage", help="record a verdict on an anomaly, a pattern or a client-server pair",
                       description="Append a verdict to the warehouse's `verdicts` table (append-only: the history "
                                   "is the audit). An anomaly's status is the latest verdict on its flow, its "
                                   "pattern or its pair and date; verdicts survive rescoring and new models.")
    p.add_argument("--warehouse", required=True, metavar="DIR", help="folder holding the Delta tables")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--flow-id", metavar="ID", help="one anomaly (anomalies.flow_id)")
    target.add_argument("--pattern", metavar="P", help="every anomaly of a pattern (anomaly_patterns.pattern)")
    target.add_argument("--pair", metavar="SRC,DST", help="a client-server pair's anomalies on --date")
    p.add_argument("--date", metavar="YYYY-MM-DD", help="the day of a --pair verdict")
    p.add_argument("--status", required=True, choices=["confirmed", "benign", "duplicate", "new"],
                   help="the verdict (new reopens)")
    p.add_argument("--by", required=True, metavar="NAME", help="who decided")
    p.add_argument("--note", metavar="TEXT", help="why, a ticket number, ...")
    _common(p)

    p = sub.add_parser("suppress", help="allowlists and mutes: add, list or remove suppression rules",
                       description="Rules in the `suppressions` table hide matching anomalies from "
                                   "`anomalies_triaged`, the report and the export at once (old rows included), "
                                   "and keep them out of `anomalies` at scoring time. A domain rule covers the "
                                   "domain and every name under it (example.com covers a.example.com, never "
                                   "badexample.com); *.example.com is refused: write example.com.")
    ss = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    a = ss.add_parser("add", help="add a rule")
    a.add_argument("--warehouse", required=True, metavar="DIR", help="folder holding the Delta tables")
    a.add_argument("--kind", required=True, choices=["domain", "pattern", "src", "dst", "pair", "detector"])
    a.add_argument("--value", required=True, help="example.com | a pattern | 10.0.0.0/8 | SRC,DST | header-model")
    a.add_argument("--reason", required=True, help="why this is benign (kept for the audit)")
    a.add_argument("--by", required=True, metavar="NAME", help="who adds it")
    a.add_argument("--expires", metavar="WHEN", help="12h, 30d, 2w, a date or ISO time; default never")
    _common(a)
    a = ss.add_parser("list", help="list the rules (active ones; --all for removed and expired too)")
    a.add_argument("--warehouse", required=True, metavar="DIR", help="folder holding the Delta tables")
    a.add_argument("--all", action="store_true", help="also removed and expired rules")
    _common(a)
    a = ss.add_parser("remove", help="remove a rule (appends a removal: the audit keeps both)")
    a.add_argument("--warehouse", required=True, metavar="DIR", help="folder holding the Delta tables")
    a.add_argument("--rule-id", required=True, metavar="ID", help="from `portprint suppress list`")
    a.add_argument("--by", required=True, metavar="NAME", help="who removes it")
    _common(a)

    p = sub.add_parser("report", help="write the period's report: HTML page, Markdown twin and PNG plots",
                       description="A self-contained HTML page (inline CSS, plots embedded), report.md and PNG "
                                   "plots, in the same layout every time: per day flows, anomalies and rates per "
                                   "detector against a 7-day moving average, model versions, new patterns, "
                                   "escalated pairs, triage, suppressions and blind spots.")
    p.add_argument("--warehouse", required=True, metavar="DIR", help="folder holding the Delta tables")
    p.add_argument("--start", metavar="YYYY-MM-DD", help="first date (default: 13 days before --end)")
    p.add_argument("--end", metavar="YYYY-MM-DD", help="last date (default: the last scored date)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder to write report.html, report.md, *.png")
    _common(p)

    p = sub.add_parser("export", help="hand new anomalies to a SIEM as ECS JSON lines or CSV, each once",
                       description="Append the anomalies not exported before to FILE, in Elastic Common Schema "
                                   "fields (portprint's own under portprint.*). A cursor table keyed on flow_id, "
                                   "detector and date makes each anomaly go out once, whatever the reruns. "
                                   "Suppressed and benign anomalies are left out unless --all.")
    p.add_argument("--warehouse", required=True, metavar="DIR", help="folder holding the Delta tables")
    p.add_argument("--format", required=True, choices=["jsonl", "csv"])
    p.add_argument("--out", required=True, metavar="FILE", help="file to append to (created if missing)")
    p.add_argument("--all", action="store_true", help="include suppressed and benign-triaged anomalies")
    _common(p)


def _fail(message: str) -> int:
    print(f"portprint: error: {message}", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `portprint` console script."""
    args = build_parser().parse_args(argv)
    from portprint.conf.config import ConfigError, load_config
    from portprint.jobs.archive.plan import ArchiveError
    from portprint.jobs.engine.session import EnvironmentProblem
    from portprint.jobs.warehouse.lock import WarehouseError
    from portprint.models.artifact import ModelError

    try:
        cfg = load_config(args.env, args.conf)
        if args.command == "sample":
            return _sample(args)
        if args.command == "ingest":
            return _ingest(args)
        if args.command == "threshold":
            return _threshold(cfg, args)
        if args.command == "promote" and args.warehouse is None and args.labels is None:
            return _promote(None, cfg, args)
        if args.command == "sql" and not args.write:
            from portprint.jobs.engine.readonly import refusal

            problem = refusal(args.query)
            if problem:
                return _fail(problem)
        from portprint.jobs.engine.session import build_session

        spark = build_session(cfg, uris=(getattr(args, "flows", None), getattr(args, "warehouse", None)),
                              verbose=args.verbose)
        if args.command == "maintain":
            from portprint.jobs.warehouse.maintain import retention_hours

            retention_hours(cfg, args.retain_days)  # refused before Spark starts
        handlers = {"train": _train, "score": _score, "sql": _sql, "evaluate": _evaluate, "triage": _triage,
                    "suppress": _suppress, "report": _report, "export": _export, "maintain": _maintain,
                    "promote": _promote}
        return handlers[args.command](spark, cfg, args)
    except (ArchiveError, ConfigError, EnvironmentProblem, ModelError, ValueError, WarehouseError) as exc:
        return _fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    except KeyboardInterrupt:
        return _fail("interrupted; tables are as the last completed commit left them")


def _sample(args: argparse.Namespace) -> int:
    from portprint.jobs.sample import write_sample

    if args.days < 1 or args.flows_per_day < 1:
        return _fail("--days and --flows-per-day must be at least 1")
    s = write_sample(args.out, days=args.days, flows_per_day=args.flows_per_day, seed=args.seed,
                     start=args.start)
    print(f"wrote {s.flows} flows for {len(s.dates)} date(s) to {s.out}; labels in {s.labels_path}")
    print("labels: " + ", ".join(f"{k}={v}" for k, v in sorted(s.label_counts.items())))
    return 0


def _ingest(args: argparse.Namespace) -> int:
    from portprint.jobs.ingest import CaptureError, ingest

    def progress(done: int, total: int) -> None:
        if sys.stderr.isatty() or done == total:
            print(f"\rportprint ingest: {done / max(total, 1):6.1%} of {total / 1e6:,.1f} MB", end="",
                  file=sys.stderr, flush=True)

    try:
        r = ingest(args.pcap, args.out, idle_timeout=args.idle_timeout, keep_partial=args.keep_partial,
                   progress=progress)
    except CaptureError as exc:
        print(file=sys.stderr)
        return _fail(str(exc))
    print(file=sys.stderr)
    partial = " (partial: a capture was damaged)" if r.partial else ""
    print(f"{r.files} file(s), {r.packets} packets, {r.flows} flows for {len(r.dates)} date(s) in {r.seconds:.1f}s "
          f"({r.packets_per_s:,.0f} packets/s) -> {args.out}{partial}")
    return 0


def _train(spark, cfg, args: argparse.Namespace) -> int:
    from portprint.jobs.engine.lifecycle import register
    from portprint.jobs.train import run_train

    for flag in ("target_fpr", "qname_target_fpr"):
        value = getattr(args, flag)
        if value is not None and not 0 < value < 0.5:
            return _fail(f"--{flag.replace('_', '-')} must be between 0 and 0.5, e.g. 1e-4")
    r = run_train(spark, cfg, args.flows, args.model, args.start, args.end, args.target_fpr, args.qname_target_fpr,
                  args.days, benign_from=args.benign_from)
    print(f"model {r.model_version} written to {r.model_dir}: header threshold {r.threshold:.6g} ({r.method}), "
          f"{r.flows_used['train']} training flows, {r.flows_used['calibration']} held out; "
          f"see {r.model_dir}/MODEL_CARD.md")
    _registered(cfg, register(cfg, args.model, args.registry), args.registry, args.model)
    return 0


def _score(spark, cfg, args: argparse.Namespace) -> int:
    from portprint.jobs.score import run_score

    if args.chunk_days is not None and args.chunk_days < 1:
        return _fail("--chunk-days must be at least 1")
    from portprint.jobs.engine.lifecycle import model_folder

    model = model_folder(cfg, args.model, args.registry)
    r = run_score(spark, cfg, args.flows, model, args.warehouse, args.start, args.end, new_only=args.new_only,
                  rescore=args.rescore, dry_run=args.dry_run, chunk_days=args.chunk_days)
    if r.dry_run:
        from portprint.jobs.warehouse.history import refusal

        for x in r.decisions:
            print(f"{x.date}  {'score' if x.score else 'skip '}  {x.reason:<13}  {x.detail}")
        print(f"dry run: {len(r.dates)} date(s) to score in {r.chunks} chunk(s), {len(r.skipped_dates)} to skip, "
              f"with model {r.model_version}; nothing was written")
        problem = None if args.new_only or args.rescore else refusal(r.decisions)
        return _fail(f"without --dry-run: {problem}") if problem else 0
    if not r.dates:
        print(f"nothing to score: all {len(r.skipped_dates)} date(s) in range are scored and their files unchanged")
        return 0
    rate = r.flows_scored / r.seconds if r.seconds else 0.0
    print(f"run {r.run_id}: {len(r.dates)} date(s), {r.flows_read} flows read, {r.flows_scored} port-53 flows "
          f"scored ({r.flows_skipped} without payload skipped), {r.anomalies} anomalies, {r.seconds:.1f}s "
          f"({rate:,.0f} flows/s), writer {r.writer}")
    print(f"tables: {r.anomalies_table}  {r.runs_table}  (and anomaly_patterns beside them)")
    return 0


def _evaluate(spark, cfg, args: argparse.Namespace) -> int:
    from portprint.jobs.engine.lifecycle import model_folder, open_registry
    from portprint.jobs.evaluate import format_table, run_evaluate
    from portprint.models.registry import is_registry_uri

    model = model_folder(cfg, args.model, args.registry)
    ev = run_evaluate(spark, cfg, args.flows, args.labels, model, args.start, args.end, args.out)
    print(format_table(ev))
    if is_registry_uri(args.model):
        reg = open_registry(cfg, args.registry).log_evaluation(args.model, ev)
        print(f"evaluation logged to {reg.uri} (run {reg.run_id})")
    return 0


def _threshold(cfg, args: argparse.Namespace) -> int:
    from portprint.jobs.engine.lifecycle import model_folder, register
    from portprint.jobs.train import rethreshold

    if not 0 < args.target_fpr < 0.5:
        return _fail("--target-fpr must be between 0 and 0.5, e.g. 1e-4")
    source = model_folder(cfg, args.model, args.registry)
    art, th = rethreshold(source, args.out, args.target_fpr, args.method, args.block)
    print(f"model {art.meta.model_version} written to {args.out}: {args.block} threshold {th.value:.6g} "
          f"({th.method}: {th.reason})")
    _registered(cfg, register(cfg, args.out, args.registry, derived_from=args.model), args.registry, args.out)
    return 0


def _registered(cfg, reg, store: str | None, model_dir: str) -> None:
    from portprint.jobs.engine.lifecycle import local_store

    if reg is None:
        return
    where = local_store(cfg, store, model_dir)
    flag = f" --registry {where}" if where else ""
    print(f"registered as {reg.uri} (candidate); make it the champion with "
          f"`portprint promote --model {reg.uri}{flag}`")


def _promote(spark, cfg, args: argparse.Namespace) -> int:
    from portprint.jobs.promotion import run_promote

    if args.labels and not args.flows:
        return _fail("--labels needs --flows, the archive holding the labelled flows")
    if args.force is not None and not args.force.strip():
        return _fail("--force needs a reason, e.g. --force 'alert volume reviewed by J. Doe, ticket SEC-42'")
    r = run_promote(spark, cfg, args.model, args.registry, warehouse=args.warehouse, labels=args.labels,
                    flows=args.flows, force=args.force)
    for check in r.checks:
        print(check.line())
    if not r.promoted:
        return _fail(r.refusal)
    new, before = r.promoted
    was = f"; it replaces version {before.version} (model {before.model_version})" if before else ""
    if before is not None and before.version == new.version:
        was = "; it already was"
    forced = f" (forced: {args.force})" if r.forced else ""
    print(f"{new.uri} (model {new.model_version}) is the champion{was}{forced}")
    return 0


def _sql(spark, cfg, args: argparse.Namespace) -> int:
    from portprint.jobs.sql import create_writable_tables, inert_frame, register_tables

    if args.write:
        create_writable_tables(spark, cfg, args.warehouse)
    register_tables(spark, cfg, args.warehouse)
    # pyspark also logs analysis errors as JSON on stderr; portprint reports them itself, in one line.
    logging.getLogger("SQLQueryContextLogger").setLevel(logging.CRITICAL)
    try:
        df = spark.sql(args.query)
    except Exception as exc:
        return _fail(str(exc).splitlines()[0])
    # Cells hold bytes from traffic and the archive: printed only after inert_frame escapes them.
    inert_frame(spark, df, args.limit).show(args.limit, truncate=60)
    return 0


def _maintain(spark, cfg, args: argparse.Namespace) -> int:
    from portprint.jobs.warehouse.maintain import run_maintain

    r = run_maintain(spark, cfg, args.warehouse, args.retain_days)
    print(f"{len(r.tables)} table(s) maintained with {r.writer}: {sum(t.files_removed for t in r.tables)} small "
          f"files compacted into {sum(t.files_added for t in r.tables)}, {sum(t.vacuumed for t in r.tables)} "
          f"unreferenced files removed (retention {r.retain_hours} h); {len(r.staging_removed)} dead staging "
          "folder(s) removed")
    return 0


def _triage(spark, cfg, args: argparse.Namespace) -> int:
    from portprint.jobs.engine.render import text
    from portprint.jobs.triage import record_verdict

    if args.date and not args.pair:
        return _fail("--date goes with --pair (a flow or a pattern verdict needs no date)")
    r = record_verdict(spark, cfg, args.warehouse, status=args.status, by=args.by, flow_id=args.flow_id,
                       pattern=args.pattern, pair=args.pair, date=args.date, note=args.note)
    target = args.flow_id or args.pattern or f"{args.pair} on {r.row['date']}"
    print(f"verdict {args.status} on {r.row['target_kind']} {text(target)} ({r.anomalies} anomalies, were "
          f"{r.old_status}) recorded by {text(args.by)}")
    _warn_rejected(spark, cfg, args.warehouse)
    return 0


def _warn_rejected(spark, cfg, warehouse: str) -> None:
    """Rows written by hand (INSERT INTO) that are ignored: listed on stderr with why, never fatal."""
    from pyspark.sql import functions as F

    from portprint.jobs.engine.render import text
    from portprint.jobs.triage import load_rules, read_verdicts

    bad = read_verdicts(spark, cfg, warehouse).where(F.col("problem").isNotNull()).limit(20).collect()
    for row in bad:
        print(f"portprint: ignored verdict row {text(row['verdict_id'])} by {text(row['recorded_by'])}: "
              f"{text(row['problem'])}", file=sys.stderr)
    for row, why in load_rules(spark, cfg, warehouse)[1][:20]:
        print(f"portprint: ignored suppressions row {text(row.get('rule_id'))}: {text(why)}", file=sys.stderr)


def _suppress(spark, cfg, args: argparse.Namespace) -> int:
    from portprint.jobs import suppress as suppressions
    from portprint.jobs import triage
    from portprint.jobs.engine.render import text

    if args.action == "add":
        row = suppressions.add_rule(spark, cfg, args.warehouse, args.kind, args.value, args.reason, args.by,
                                    args.expires)
        until = f"until {row['expires_at']:%Y-%m-%d %H:%M} UTC" if row["expires_at"] else "with no expiry"
        print(f"rule {row['rule_id']}: {row['kind']} {text(row['value'])} {until}, by {text(row['created_by'])}")
    elif args.action == "remove":
        rule = suppressions.remove_rule(spark, cfg, args.warehouse, args.rule_id, args.by)
        print(f"rule {rule.rule_id} ({rule.kind} {text(rule.value)}) removed by {text(args.by)}; the anomalies it "
              "hid are back in anomalies_triaged")
    else:
        at = triage.now()
        rules, _ = triage.load_rules(spark, cfg, args.warehouse)
        shown = [r for r in rules if args.all or r.state(at) == "active"]
        if not shown:
            print("no rules" + ("" if args.all else " in force (--all shows removed and expired ones)"))
        for r in shown:
            exp = f"{r.expires_at:%Y-%m-%d %H:%M}" if r.expires_at else "never"
            print(f"{r.rule_id}  {r.state(at):8}  {r.kind:8}  {text(r.value)}  expires {exp}  by "
                  f"{text(r.created_by)} {r.created_at:%Y-%m-%d}: {text(r.reason)}")
    _warn_rejected(spark, cfg, args.warehouse)
    return 0


def _report(spark, cfg, args: argparse.Namespace) -> int:
    from portprint.jobs.report import write_report

    r = write_report(spark, cfg, args.warehouse, args.out, args.start, args.end)
    print(f"report of {r.start}..{r.end}: {r.html}  {r.markdown}  ({len(r.plots)} plots)")
    return 0


def _export(spark, cfg, args: argparse.Namespace) -> int:
    from portprint.jobs.export import run_export

    r = run_export(spark, cfg, args.warehouse, args.format, args.out, include_all=args.all)
    print(f"exported {r.rows} anomalies to {args.out} ({args.format}); {r.left_out} left out as suppressed or "
          f"benign" + ("" if args.all else " (--all includes them)") + f"; {r.already} exported before")
    return 0


def job_main() -> None:
    """Entry point for Databricks wheel tasks, which ignore a return value: fail the task on failure."""
    code = main()
    if code:
        raise SystemExit(code)


if __name__ == "__main__":
    sys.exit(main())

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
      portprint train  --flows /data/flows --model /models/dns --end 2026-11-20
      portprint score  --flows /data/flows --model /models/dns --warehouse /data/wh --start 2026-11-21
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

    p = sub.add_parser("train", help="train the autoencoder on the site's port-53 flows and calibrate it",
                       description="Train on the port-53 flows of a date window (those the header rule "
                                   "accepts), hold some out, and set the threshold at the target "
                                   "false-positive rate. Writes model.pt, model.json and MODEL_CARD.md.")
    p.add_argument("--flows", required=True, metavar="ARCHIVE", help="flow archive root")
    p.add_argument("--model", required=True, metavar="MODEL_DIR", help="folder to write the model to")
    _dates(p, "train on")
    p.add_argument("--target-fpr", type=float, metavar="F",
                   help="false-positive rate the threshold aims at on held-out DNS (default 1e-4)")
    _common(p)

    p = sub.add_parser("score", help="score archive dates and write the anomalies and runs Delta tables",
                       description="Score every port-53 flow of the dates in range with the header rule, the "
                                   "header model and the question model; then judge each day's client-server "
                                   "pairs together (qname-pair: a day of mostly odd, new names to one server is "
                                   "a tunnel). A date's anomalies are replaced in one Delta commit, so reruns "
                                   "never duplicate rows.")
    p.add_argument("--flows", required=True, metavar="ARCHIVE", help="flow archive root")
    p.add_argument("--model", required=True, metavar="MODEL_DIR", help="a folder written by `portprint train`")
    p.add_argument("--warehouse", required=True, metavar="DIR", help="folder holding the Delta tables")
    _dates(p, "score")
    p.add_argument("--new-only", action="store_true",
                   help="skip dates already scored successfully with this model whose files have not changed "
                        "since (nightly runs; a stopped backfill resumes where it stopped)")
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
    p.add_argument("--model", required=True, metavar="MODEL_DIR", help="a folder written by `portprint train`")
    p.add_argument("--out", metavar="DIR", help="write evaluation.json, evaluation.md and plots here")
    _dates(p, "evaluate")
    _common(p)

    p = sub.add_parser("threshold", help="move a model's threshold to another false-positive rate",
                       description="Re-derive the threshold from the held-out losses stored at training time, "
                                   "without retraining. The model gets a new model_version.")
    p.add_argument("--model", required=True, metavar="MODEL_DIR", help="a folder written by `portprint train`")
    p.add_argument("--target-fpr", required=True, type=float, metavar="F", help="e.g. 1e-4")
    p.add_argument("--method", choices=["auto", "empirical", "lognormal", "pot"], default="auto",
                   help="empirical quantile, log-normal fit (Kitsune), or auto (default)")
    p.add_argument("--block", choices=["header", "qname"], default="header",
                   help="which model's threshold: the header model (default) or the question-section model")
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
    return parser


def _fail(message: str) -> int:
    print(f"portprint: error: {message}", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `portprint` console script."""
    args = build_parser().parse_args(argv)
    from portprint.jobs.archive import ArchiveError
    from portprint.jobs.config import ConfigError, load_config
    from portprint.jobs.session import EnvironmentProblem
    from portprint.models.artifact import ModelError

    try:
        cfg = load_config(args.env, args.conf)
        if args.command == "sample":
            return _sample(args)
        if args.command == "ingest":
            return _ingest(args)
        if args.command == "threshold":
            return _threshold(args)
        if args.command == "sql" and not args.write:
            from portprint.jobs.readonly import refusal

            problem = refusal(args.query)
            if problem:
                return _fail(problem)
        from portprint.jobs.session import build_session

        spark = build_session(cfg, uris=(getattr(args, "flows", None), getattr(args, "warehouse", None)),
                              verbose=args.verbose)
        return {"train": _train, "score": _score, "sql": _sql, "evaluate": _evaluate}[args.command](spark, cfg, args)
    except (ArchiveError, ConfigError, EnvironmentProblem, ModelError, ValueError) as exc:
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
    from portprint.jobs.train import run_train

    r = run_train(spark, cfg, args.flows, args.model, args.start, args.end, args.target_fpr)
    print(f"model {r.model_version} written to {r.model_dir}: header threshold {r.threshold:.6g} ({r.method}), "
          f"{r.flows_used['train']} training flows, {r.flows_used['calibration']} held out; "
          f"see {r.model_dir}/MODEL_CARD.md")
    return 0


def _score(spark, cfg, args: argparse.Namespace) -> int:
    from portprint.jobs.score import run_score

    if args.chunk_days is not None and args.chunk_days < 1:
        return _fail("--chunk-days must be at least 1")
    r = run_score(spark, cfg, args.flows, args.model, args.warehouse, args.start, args.end, new_only=args.new_only,
                  chunk_days=args.chunk_days)
    if not r.dates:
        print(f"nothing to score: all {len(r.skipped_dates)} date(s) in range are scored with model "
              f"{r.model_version} and unchanged")
        return 0
    rate = r.flows_scored / r.seconds if r.seconds else 0.0
    print(f"run {r.run_id}: {len(r.dates)} date(s), {r.flows_read} flows read, {r.flows_scored} port-53 flows "
          f"scored ({r.flows_skipped} without payload skipped), {r.anomalies} anomalies, {r.seconds:.1f}s "
          f"({rate:,.0f} flows/s), writer {r.writer}")
    print(f"tables: {r.anomalies_table}  {r.runs_table}  (and anomaly_patterns beside them)")
    return 0


def _evaluate(spark, cfg, args: argparse.Namespace) -> int:
    from portprint.jobs.evaluate import format_table, run_evaluate

    ev = run_evaluate(spark, cfg, args.flows, args.labels, args.model, args.start, args.end, args.out)
    print(format_table(ev))
    return 0


def _threshold(args: argparse.Namespace) -> int:
    from portprint.jobs.train import rethreshold

    if not 0 < args.target_fpr < 0.5:
        return _fail("--target-fpr must be between 0 and 0.5, e.g. 1e-4")
    art, th = rethreshold(args.model, args.target_fpr, args.method, args.block)
    print(f"model {art.meta.model_version}: {args.block} threshold {th.value:.6g} ({th.method}: {th.reason})")
    return 0


def _sql(spark, cfg, args: argparse.Namespace) -> int:
    from portprint.jobs.sql import register_tables

    register_tables(spark, cfg, args.warehouse)
    # pyspark also logs analysis errors as JSON on stderr; portprint reports them itself, in one line.
    logging.getLogger("SQLQueryContextLogger").setLevel(logging.CRITICAL)
    try:
        df = spark.sql(args.query)
    except Exception as exc:
        return _fail(str(exc).splitlines()[0])
    df.show(args.limit, truncate=60)
    return 0


def job_main() -> None:
    """Entry point for Databricks wheel tasks, which ignore a return value: fail the task on failure."""
    code = main()
    if code:
        raise SystemExit(code)


if __name__ == "__main__":
    sys.exit(main())

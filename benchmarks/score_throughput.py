"""Throughput of the Spark scoring job (local[2]) against a single-process plain pass on the same 2 cores.

Steps: generate a sample archive (``write_sample``), train a model on it (``run_train``), start Spark
and warm its Python workers (timed apart, not part of the throughput), warm ``run_score`` up on a small
slice, then time ``run_score`` on the whole archive. The plain pass then does the same work in one
process (pyarrow.dataset scan + filter, ``Scorer.score`` per batch, ``Scorer.explain`` on the flagged
rows, one Parquet file out) in a fresh interpreter, so its memory and CPU are its own.

Prints a table and writes the numbers to benchmarks/out/score_throughput.json. The targets (Spark
rate >= 0.5 x plain rate, peak RSS < 4 GB) are reported, never asserted: this is a benchmark.

    python benchmarks/score_throughput.py --flows 4000000 --days 2
    python benchmarks/score_throughput.py --out /tmp/bench --keep --set spark.arrow_batch_rows=16384
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

OUT_JSON = Path(__file__).resolve().parent / "out" / "score_throughput.json"
RATIO_TARGET = 0.5
RSS_TARGET = 4 * 1024**3  # 4 GiB
WARMUP_ROWS = 262_144  # one row group of the sample archive
SEED = 7
IDLE_WORKER_S = 30  # Spark stops Python workers idle for a minute: warm up again after a longer wait
START = "2026-11-01"


# ---------------------------------------------------------------------------------------------------
# Memory: peak RSS of a process tree, sampled every 0.2 s (psutil when installed, else /proc)
# ---------------------------------------------------------------------------------------------------


def _proc_stats() -> dict[int, list[str]]:
    """{pid: the /proc/PID/stat fields after the process name} of every process."""
    out: dict[int, list[str]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue
        # The name (field 2) may hold spaces and parentheses: the fields resume after the last ')'.
        out[int(entry)] = stat[stat.rfind(")") + 2 :].split()
    return out


def _tree(root: int, stats: dict[int, list[str]]) -> list[int]:
    """root and all its descendants (field 1 after the name is the ppid)."""
    tree, frontier = [], [root]
    while frontier:
        pid = frontier.pop()
        tree.append(pid)
        frontier.extend(c for c, f in stats.items() if int(f[1]) == pid)
    return tree


def _proc_tree_rss(root: int, include_root: bool) -> dict[int, tuple[str, int]]:
    """{pid: (name, rss bytes)} of root's descendants (and root itself if asked), from /proc."""
    tree = _tree(root, _proc_stats())
    out = {}
    for pid in tree if include_root else tree[1:]:
        try:
            with open(f"/proc/{pid}/status") as fh:
                fields = dict(line.split(":", 1) for line in fh if ":" in line)
        except OSError:
            continue
        if "VmRSS" in fields:  # kernel threads and zombies have none
            out[pid] = (fields["Name"].strip(), int(fields["VmRSS"].split()[0]) * 1024)
    return out


def tree_rss(root: int, include_root: bool) -> dict[int, tuple[str, int]]:
    """{pid: (name, rss bytes)} of the java and python processes of a process tree.

    Other names are left out: a JVM thread that forks a helper shows, until the exec, as a process
    named after the thread ("Executor task l") with all of the JVM's RSS, which would count it twice.
    """
    try:
        import psutil
    except ImportError:
        found = _proc_tree_rss(root, include_root)
    else:
        found = {}
        try:
            top = psutil.Process(root)
            procs = top.children(recursive=True) + ([top] if include_root else [])
        except psutil.Error:
            procs = []
        for p in procs:
            try:
                found[p.pid] = (p.name(), p.memory_info().rss)
            except psutil.Error:
                continue
    return {pid: v for pid, v in found.items() if v[0].startswith(("java", "python"))}


class PeakRss:
    """Samples the summed RSS of a process tree in a thread; ``peak`` is the largest sum seen."""

    def __init__(self, root: int, include_root: bool, interval: float = 0.2) -> None:
        self.root, self.include_root, self.interval = root, include_root, interval
        self.peak = 0
        self.at_peak: dict[str, int] = {}  # process name -> summed RSS at the peak sample
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        rss = tree_rss(self.root, self.include_root)
        total = sum(r for _, r in rss.values())
        if total > self.peak:
            self.peak = total
            by_name: dict[str, int] = {}
            for name, r in rss.values():
                by_name[name] = by_name.get(name, 0) + r
            self.at_peak = by_name

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


def _tree_cpu_ticks(root: int) -> int:
    """CPU ticks (user + system, including reaped children) of root and all its descendants."""
    stats = _proc_stats()
    # Fields 11-14 after the name: utime stime cutime cstime.
    return sum(sum(int(x) for x in stats[pid][11:15]) for pid in _tree(root, stats) if pid in stats)


def _system_busy_ticks() -> int:
    with open("/proc/stat") as fh:
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fh.readline().split()[1:9])
    return user + nice + system + irq + softirq + steal


class CpuUse:
    """CPU seconds this benchmark's process tree used during a block, and the share of the machine's
    CPU that other processes took meanwhile (above a few percent, another job competed for the cores
    and the wall-clock figures are off; the CPU seconds are then the steadier measure)."""

    def __init__(self) -> None:
        self.own_s = 0.0
        self.foreign_share = 0.0

    def __enter__(self) -> CpuUse:
        self._t0, self._sys0, self._own0 = time.monotonic(), _system_busy_ticks(), _tree_cpu_ticks(os.getpid())
        return self

    def __exit__(self, *exc: object) -> None:
        seconds = time.monotonic() - self._t0
        tick = os.sysconf("SC_CLK_TCK")
        sys_ticks = _system_busy_ticks() - self._sys0
        own_ticks = _tree_cpu_ticks(os.getpid()) - self._own0
        self.own_s = own_ticks / tick
        capacity = seconds * tick * (os.cpu_count() or 1)
        self.foreign_share = max(0.0, (sys_ticks - own_ticks) / capacity) if capacity > 0 else 0.0


def wait_for_quiet(max_wait: float, limit: float = 0.10, log: Any = None) -> float:
    """Wait (at most max_wait seconds) until other processes use < limit of the CPU over 2 s; return
    the seconds waited. On a shared machine this keeps other jobs' bursts out of the timings."""
    t0 = time.monotonic()
    while max_wait > 0:
        with CpuUse() as cpu:
            time.sleep(2.0)
        if cpu.foreign_share < limit or time.monotonic() - t0 >= max_wait:
            break
        if log:
            log(f"  waiting for a quiet machine (other processes use {cpu.foreign_share:.0%} of the CPU)")
    return time.monotonic() - t0


# ---------------------------------------------------------------------------------------------------
# Inputs: archive, warm-up slice, model (reused from --out when they match the arguments)
# ---------------------------------------------------------------------------------------------------


def _marker_matches(folder: Path, want: dict[str, Any]) -> bool:
    marker = folder / "_benchmark.json"
    return marker.is_file() and json.loads(marker.read_text()) == want


def _write_marker(folder: Path, want: dict[str, Any]) -> None:
    (folder / "_benchmark.json").write_text(json.dumps(want) + "\n")


def prepare_archive(root: Path, days: int, flows_per_day: int) -> float:
    """Write the sample archive (unless the same one is there already); return seconds spent."""
    from portprint.jobs.sample import write_sample

    want = {"days": days, "flows_per_day": flows_per_day, "seed": SEED, "start": START}
    if _marker_matches(root, want):
        return 0.0
    t0 = time.monotonic()
    write_sample(str(root), days=days, flows_per_day=flows_per_day, seed=SEED, start=START)
    _write_marker(root, want)
    return time.monotonic() - t0


def warmup_slice(archive: Path, out: Path, rows: int = WARMUP_ROWS) -> Path:
    """A one-date archive of the first ``rows`` flows of the archive's first file, in two files.

    Two files make two concurrent tasks, so all four Python workers of the timed run (a score and an
    explain worker per task) are started, and have imported torch, before the clock starts.
    """
    import pyarrow.parquet as pq

    first_dir = sorted(archive.glob("date=*"))[0]
    src = pq.ParquetFile(sorted(first_dir.glob("*.parquet"))[0])
    table = pa.Table.from_batches([next(src.iter_batches(batch_size=rows))])
    target = out / first_dir.name
    shutil.rmtree(out, ignore_errors=True)
    target.mkdir(parents=True)
    half = table.num_rows // 2
    pq.write_table(table.slice(0, half), target / "part-00000.parquet")
    pq.write_table(table.slice(half), target / "part-00001.parquet")
    return out


def train_model(spark: Any, cfg: Any, archive: Path, model_dir: Path) -> float:
    """Train (unless a model for this archive and config is there); return seconds spent."""
    from portprint.jobs.train import run_train

    want = {"archive": json.loads((archive / "_benchmark.json").read_text()), "model": asdict(cfg.model),
            "features": asdict(cfg.features)}
    want = json.loads(json.dumps(want))  # tuples -> lists, as they come back from the file
    if _marker_matches(model_dir, want):
        return 0.0
    t0 = time.monotonic()
    run_train(spark, cfg, str(archive), str(model_dir), log=lambda m: print(f"  {m}", file=sys.stderr))
    _write_marker(model_dir, want)
    return time.monotonic() - t0


# ---------------------------------------------------------------------------------------------------
# Spark
# ---------------------------------------------------------------------------------------------------


def start_spark(cfg: Any) -> tuple[Any, dict[str, float]]:
    """Build the session and run one trivial Arrow UDF job, so both Python workers exist and have
    imported torch and loaded the numba kernels. Returns (session, timings)."""
    from pyspark.sql.functions import arrow_udf

    from portprint.jobs.engine.session import build_session

    t0 = time.monotonic()
    spark = build_session(cfg)
    session_s = time.monotonic() - t0

    @arrow_udf("int")
    def warm(ids: pa.Array) -> pa.Array:
        from portprint.udfs import scoring  # noqa: F401  (imports torch, as the scoring UDF does)
        from portprint.udfs.features import features_from_arrow
        from portprint.udfs.header_rule import reasons_from_arrow

        prefix = pa.array([b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00"] * len(ids), pa.binary())
        proto, sent = np.full(len(ids), 17, np.int8), np.full(len(ids), 12, np.int64)
        features_from_arrow(prefix, proto, sent, 8, True)
        return pa.array(reasons_from_arrow(prefix, proto, sent).astype(np.int32))

    spark.range(0, 2000, numPartitions=2).select(warm("id")).collect()
    return spark, {"seconds": time.monotonic() - t0, "session_s": session_s}


def spark_pass(spark: Any, cfg: Any, archive: Path, model_dir: Path, warehouse: Path) -> dict[str, Any]:
    """Time ``run_score`` on the whole archive, sampling the JVM's and Python workers' RSS."""
    from portprint.jobs.score import run_score

    shutil.rmtree(warehouse, ignore_errors=True)
    with PeakRss(os.getpid(), include_root=False) as workers, PeakRss(os.getpid(), include_root=True) as everything, \
            CpuUse() as cpu:
        t0 = time.monotonic()
        report = run_score(spark, cfg, str(archive), str(model_dir), str(warehouse), log=lambda m: None)
        seconds = time.monotonic() - t0
    return {"seconds": seconds, "flows_read": report.flows_read, "flows_scored": report.flows_scored,
            "flows_skipped": report.flows_skipped, "anomalies": report.anomalies, "writer": report.writer,
            "peak_rss": workers.peak, "peak_rss_by_process": workers.at_peak,
            "peak_rss_with_driver": everything.peak, "cpu_s": cpu.own_s,
            "foreign_cpu_share": cpu.foreign_share}


# ---------------------------------------------------------------------------------------------------
# Plain pass: one process, pyarrow + the same Scorer (run in a fresh interpreter by the parent)
# ---------------------------------------------------------------------------------------------------

def plain_pass(archive: str, model_dir: str, out_file: str, cfg: Any) -> dict[str, Any]:
    """The same Source reader, Detect and Escalate as the Spark job (udfs/detect.py, udfs/escalate.py), row group
    by row group in this one process, with no Spark; write the flagged flows' ids and return the counts."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    import torch

    from portprint.jobs.archive.plan import plan_archive
    from portprint.jobs.archive.rowgroups import Reader, tasks
    from portprint.udfs import escalate
    from portprint.udfs.detect import detect_tables, has_payload
    from portprint.udfs.schemas import ANOMALY, COUNTS, FLOWS_IN, KIND, OUT
    from portprint.udfs.scoring import load_model

    if cfg.archive.prefix_encoding != "binary":
        raise SystemExit("the plain pass reads binary prefixes only")
    art = load_model(model_dir)
    detect = detect_tables(art, cfg, "plain", 0)
    torch.set_num_threads(2)  # one process on 2 cores (detect_tables' scorer cache set 1 for Spark tasks)
    tiny = pa.table({"flow_id": ["w"], "ts": pa.array([0], pa.timestamp("us", tz="UTC")), "src_ip": ["a"],
                     "dst_ip": ["b"], "src_port": pa.array([1], pa.int32()), "dst_port": pa.array([53], pa.int32()),
                     "proto": pa.array([17], pa.int32()), "orig_payload_prefix": [b"\0" * 12 + b"\x01a\x00\x00\x01"],
                     "orig_bytes": pa.array([17], pa.int64()), "orig_pkts": pa.array([1], pa.int64()),
                     "date": ["2000-01-01"]})
    list(detect(iter([tiny])))  # load the numba kernels before the clock starts, as the Spark workers have
    torch.set_num_threads(2)

    with CpuUse() as cpu:
        t0 = time.monotonic()
        plan = plan_archive(archive, cfg.archive.columns, "binary", None, None)  # the files Spark reads
        reader = Reader(cfg)
        work = [item for task in tasks(plan, cfg.spark.rows_per_task) for item in task]
        out = pa.Table.from_batches(list(detect(reader.scoped(p, rg, d) for p, rg, d in work)), schema=OUT)
        kinds = out[KIND]
        flagged = [out.filter(pc.equal(kinds, ANOMALY))]
        counts = out.filter(pc.equal(kinds, COUNTS))

        def again(pairs: pa.Table) -> pa.Table:  # the groups' flows read again, as the Source's flows(pairs)
            t = pa.concat_tables([reader.scoped(p, rg, d) for p, rg, d in work]).cast(FLOWS_IN)
            t = t.filter(has_payload(t["orig_payload_prefix"]))
            return t.join(pairs, ["date", "src_ip", "dst_ip"], join_type="left semi", use_threads=False)

        if cfg.escalate.enabled:
            found_t, _chosen, _history = escalate.plain(out, art, cfg, "plain", 0, flows=again)
            flagged.append(found_t.filter(pc.equal(found_t[KIND], ANOMALY)))
        found = pa.concat_tables(flagged)
        pq.write_table(found.select(["flow_id", "detector"]), out_file)
        seconds = time.monotonic() - t0
    scored = int(pc.sum(counts["_scoped"]).as_py() or 0) - int(pc.sum(counts["_skipped"]).as_py() or 0)
    return {"seconds": seconds, "flows_scored": scored, "anomalies": found.num_rows,
            "cpu_s": cpu.own_s, "foreign_cpu_share": cpu.foreign_share, "peak_rss_self": _own_peak_rss(),
            "torch_threads": torch.get_num_threads()}


def _own_peak_rss() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def run_plain_subprocess(archive: Path, model_dir: Path, out_file: Path, overrides: dict[str, Any]) -> dict[str, Any]:
    """Run the plain pass in a fresh interpreter and sample its RSS from here."""
    cmd = [sys.executable, __file__, "--plain-pass", str(archive), str(model_dir), str(out_file),
           "--overrides", json.dumps(overrides)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    with PeakRss(proc.pid, include_root=True) as rss:
        stdout, _ = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"plain pass failed (exit {proc.returncode})")
    result = json.loads(stdout.strip().splitlines()[-1])
    result["peak_rss"] = max(rss.peak, result.pop("peak_rss_self"))
    return result


# ---------------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------------


@dataclass
class Result:
    flows: int
    days: int
    flows_read: int
    flows_scored: int
    spark_startup_s: float
    spark_s: float
    spark_scored_per_s: float
    spark_read_per_s: float
    plain_s: float
    plain_scored_per_s: float
    plain_read_per_s: float
    ratio: float
    spark_cpu_s: float
    plain_cpu_s: float
    cpu_ratio: float  # plain CPU seconds / Spark CPU seconds: the ratio on a quiet machine if both fill the cores
    spark_peak_rss: int
    plain_peak_rss: int
    ratio_target_met: bool
    rss_target_met: bool
    foreign_cpu_share: float  # share of the CPU other processes took during the fastest runs (the larger of two)
    details: dict[str, Any] = field(default_factory=dict)


def _gb(n: float) -> str:
    return f"{n / 1024**3:.2f} GiB"


def _met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def print_table(r: Result) -> None:
    at_peak = r.details.get("spark", {}).get("peak_rss_by_process", {})
    by_proc = ", ".join(f"{name} {_gb(rss)}" for name, rss in sorted(at_peak.items()))
    rows = [
        ("flows in archive", f"{r.flows_read:,} ({r.days} day(s))"),
        ("port-53 flows scored", f"{r.flows_scored:,}"),
        ("Spark start-up (not in rate)", f"{r.spark_startup_s:.1f} s"),
        ("Spark run_score", f"{r.spark_s:.1f} s  {r.spark_scored_per_s:,.0f} flows/s  "
                            f"(archive {r.spark_read_per_s:,.0f} flows/s; CPU {r.spark_cpu_s:.1f} s)"),
        ("plain pass (1 process)", f"{r.plain_s:.1f} s  {r.plain_scored_per_s:,.0f} flows/s  "
                                   f"(archive {r.plain_read_per_s:,.0f} flows/s; CPU {r.plain_cpu_s:.1f} s)"),
        ("ratio spark/plain", f"{r.ratio:.2f}  (target >= {RATIO_TARGET}: {_met(r.ratio_target_met)}; "
                              f"by CPU time {r.cpu_ratio:.2f})"),
        ("peak RSS Spark JVM+workers", f"{_gb(r.spark_peak_rss)}  ({by_proc}; target < {_gb(RSS_TARGET)}: "
                                       f"{_met(r.rss_target_met)})"),
        ("peak RSS plain pass", _gb(r.plain_peak_rss)),
    ]
    width = max(len(k) for k, _ in rows)
    print()
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    if r.foreign_cpu_share > 0.05:
        print(f"\nWARNING: other processes used up to {r.foreign_cpu_share:.0%} of the CPU during a timed run; "
              "the wall-clock figures are not reliable (rerun on a quiet machine, or with --quiet-wait)")


def _parse_set(items: list[str]) -> dict[str, Any]:
    """--set a.b=value (YAML value) -> nested overrides for load_config."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or "." not in key:
            raise SystemExit(f"--set expects section.key=value, got {item!r}")
        *parents, leaf = key.split(".")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = yaml.safe_load(value)
    return out


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Measure port-53 flows/s of run_score on local[2] Spark against a single-process plain "
                    "pass (pyarrow + the same Scorer) on the same files and cores. Spark start-up is timed "
                    "apart and not part of the rate. Writes benchmarks/out/score_throughput.json.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--flows", type=int, default=4_000_000, help="flows in the generated archive (all days)")
    p.add_argument("--days", type=int, default=2, help="date partitions the flows are spread over")
    p.add_argument("--out", help="folder for archive, model and outputs (default: a temp folder); an archive "
                                 "and model left there by an earlier run with the same arguments are reused")
    p.add_argument("--keep", action="store_true", help="keep the temp folder afterwards (--out is always kept)")
    p.add_argument("--max-train-flows", type=int, default=200_000, help="model.max_train_flows for training")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="config override for the scoring runs, e.g. spark.arrow_batch_rows=16384 (repeatable)")
    p.add_argument("--repeat", type=int, default=3, help="timed runs of each pass; the fastest counts")
    p.add_argument("--quiet-wait", type=float, default=0.0, metavar="SECONDS",
                   help="before each timed run, wait up to this long for other processes to leave the CPU idle")
    p.add_argument("--json", default=str(OUT_JSON), help="where to write the results")
    p.add_argument("--plain-pass", nargs=3, metavar=("ARCHIVE", "MODEL", "OUT"), help=argparse.SUPPRESS)
    p.add_argument("--overrides", default="{}", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.flows < args.days or args.days < 1:
        p.error("--flows must be >= --days >= 1")
    if args.repeat < 1:
        p.error("--repeat must be >= 1")
    return args


def _best(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The fastest of repeated runs (its own foreign CPU share), with the largest peak RSS of all of them."""
    best = dict(min(runs, key=lambda r: r["seconds"]))
    fattest = max(runs, key=lambda r: r["peak_rss"])
    best["peak_rss"] = fattest["peak_rss"]
    if "peak_rss_by_process" in fattest:
        best["peak_rss_by_process"] = fattest["peak_rss_by_process"]
    best["all_seconds"] = [round(r["seconds"], 3) for r in runs]
    best["all_foreign_cpu_shares"] = [round(r["foreign_cpu_share"], 3) for r in runs]
    return best


def _spark_flagged(warehouse: Path) -> list[str]:
    from deltalake import DeltaTable

    return DeltaTable(str(warehouse / "anomalies")).to_pyarrow_table(columns=["flow_id"])["flow_id"].to_pylist()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from portprint.conf.config import load_config

    if args.plain_pass:  # the child process of the plain pass
        cfg = load_config("local", overrides=json.loads(args.overrides))
        print(json.dumps(plain_pass(*args.plain_pass, cfg)))
        return 0

    base = {"spark": {"master": "local[2]"}, "model": {"max_train_flows": args.max_train_flows}}
    overrides = _merge(base, _parse_set(args.set))
    cfg = load_config("local", overrides=overrides)
    work = Path(args.out or tempfile.mkdtemp(prefix="portprint-bench-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    archive, model_dir = work / "flows", work / "model"
    flows_per_day = -(-args.flows // args.days)
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    try:
        log(f"archive: {args.days} x {flows_per_day:,} flows in {archive}")
        gen_s = prepare_archive(archive, args.days, flows_per_day)
        warm_archive = warmup_slice(archive, work / "warmup-flows")

        log("spark: start-up and worker warm-up")
        spark, startup = start_spark(cfg)
        # Training uses the base settings (only the size cap changed), so --set never retrains.
        train_cfg = load_config("local", overrides=base)
        log(f"train: model in {model_dir}")
        train_s = train_model(spark, train_cfg, archive, model_dir)

        log(f"spark: warm-up run_score on {WARMUP_ROWS:,} flows")
        warm = spark_pass(spark, cfg, warm_archive, model_dir, work / "warehouse-warmup")
        spark_runs = []
        for i in range(args.repeat):
            if wait_for_quiet(args.quiet_wait, log=log) > IDLE_WORKER_S:
                spark_pass(spark, cfg, warm_archive, model_dir, work / "warehouse-warmup")  # workers were reaped
            log(f"spark: timed run_score on the whole archive ({i + 1}/{args.repeat})")
            spark_runs.append(spark_pass(spark, cfg, archive, model_dir, work / "warehouse"))
        spark.stop()
        plain_runs = []
        for i in range(args.repeat):
            wait_for_quiet(args.quiet_wait, log=log)
            log(f"plain: single-process pass ({i + 1}/{args.repeat})")
            plain_runs.append(run_plain_subprocess(archive, model_dir, work / "plain-anomalies.parquet", overrides))
        spark_ids = set(_spark_flagged(work / "warehouse"))
        plain_ids = set(pq.read_table(work / "plain-anomalies.parquet")["flow_id"].to_pylist())
    finally:
        if not args.keep and not args.out:
            shutil.rmtree(work, ignore_errors=True)

    sp, plain = _best(spark_runs), _best(plain_runs)
    # The two passes run the same Detect and Escalate: they must flag the same flows, or the ratio means nothing.
    if spark_ids != plain_ids or plain["flows_scored"] != sp["flows_scored"]:
        raise SystemExit(f"the passes disagree: spark scored {sp['flows_scored']} and flagged {len(spark_ids)} flows, "
                         f"plain scored {plain['flows_scored']} and flagged {len(plain_ids)}; "
                         f"{len(spark_ids ^ plain_ids)} flow ids differ")
    spark_rate, plain_rate = sp["flows_scored"] / sp["seconds"], plain["flows_scored"] / plain["seconds"]
    ratio = spark_rate / plain_rate
    result = Result(
        flows=args.flows, days=args.days, flows_read=sp["flows_read"], flows_scored=sp["flows_scored"],
        spark_startup_s=startup["seconds"], spark_s=sp["seconds"], spark_scored_per_s=spark_rate,
        spark_read_per_s=sp["flows_read"] / sp["seconds"], plain_s=plain["seconds"], plain_scored_per_s=plain_rate,
        plain_read_per_s=sp["flows_read"] / plain["seconds"], ratio=ratio, spark_cpu_s=sp["cpu_s"],
        plain_cpu_s=plain["cpu_s"], cpu_ratio=plain["cpu_s"] / sp["cpu_s"] if sp["cpu_s"] else 0.0,
        spark_peak_rss=sp["peak_rss"],
        plain_peak_rss=plain["peak_rss"], ratio_target_met=ratio >= RATIO_TARGET,
        rss_target_met=sp["peak_rss"] < RSS_TARGET,
        foreign_cpu_share=max(sp["foreign_cpu_share"], plain["foreign_cpu_share"]),
        details={"spark": sp, "spark_startup": startup, "spark_warmup": warm, "plain": plain, "generate_s": gen_s,
                 "train_s": train_s, "overrides": overrides, "repeat": args.repeat,
                 "loadavg": os.getloadavg(),
                 "work": str(work) if args.keep or args.out else None},
    )
    print_table(result)
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(asdict(result), indent=2) + "\n")
    log(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

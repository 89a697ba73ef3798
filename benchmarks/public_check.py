"""Detection on the capture files of peers' public test suites: genuine-DNS flows each detector flags, the
non-DNS payloads on port 53 the header rule catches, and whether suricata-verify's ``tests/dns/bug-1158``
(dns2tcp-like: 81 TXT queries over one UDP socket) is caught, and by which rule.

    # OISF/suricata-verify's tests/ and zeek/zeek's testing/btest/Traces/ checked out (or extracted from a
    # snapshot) under /tmp/pubsuites; the model: python benchmarks/shift_settings.py --split development --setting impl
    python benchmarks/public_check.py --model /tmp/portprint-shift/development-impl/model \\
        /tmp/pubsuites/suricata-verify/tests /tmp/pubsuites/zeek/testing/btest/Traces

Every .pcap/.pcapng/.cap/.trace under the given folders is ingested on its own (jobs/ingest.py ``ingest``, with
``keep_partial``); a file ingest cannot read is listed and left out, and a byte-identical copy of a file already
read is counted once (suricata-verify reuses captures across tests). Each capture becomes its own ``date`` of one
scratch archive, so names of different captures never share an escalation group. The archive is then scored as
`portprint score` scores it: the Source's row-group reader, Detect (udfs/detect.py) and Escalate
(udfs/escalate.py ``plain``), in one process, as benchmarks/tunnel_eval.py does.

Two settings, both from the ``--model`` folder (a model `portprint train` made at its defaults, e.g. by
benchmarks/shift_settings.py; the suites are a shifted setting for it):

- **rules**: what needs no training. The header model's threshold is set to infinity and the question model is
  removed, so the header rule and the Escalate rules that need no model (shape, socket, session) remain; the odd
  rule has no odd bar and stays off.
- **model**: the folder as it is: the header rule, the header and question models, and all Escalate rules.

A flow is *genuine DNS* when the header rule accepts it (reason ``ok``) and its capture is not in
``KNOWN_TUNNELS``. Rates come with the one-sided 95% Clopper-Pearson upper bound (jobs/evaluate.py ``_upper95``).
Names are printed through jobs/engine/render.py ``terminal`` (inert). The captures are read where they are and
never copied into the repository; ``--work`` keeps the ingested flows for a rerun.
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import hashlib
import math
import os
import shutil
import sys
import tempfile
from dataclasses import asdict

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tunnel_eval

SUFFIXES = (".pcap", ".pcapng", ".cap", ".trace")
KNOWN_TUNNELS = ("/dns/bug-1158/",)
DAY0 = dt.date(2001, 1, 1)  # capture k is scored as the date DAY0 + k days


def captures(roots: list[str]) -> list[str]:
    out = []
    for root in roots:
        for d, _dirs, files in os.walk(root):
            out += [os.path.join(d, f) for f in files if f.endswith(SUFFIXES)]
    return sorted(out)


def build_archive(paths: list[str], work: str) -> tuple[str, dict[str, str], dict[str, int], dict[str, str], int]:
    """(archive, date -> capture, date -> copies of that capture, unreadable capture -> why, flows ingested).
    Only captures with at least one flow get a date."""
    from portprint.jobs.ingest import CaptureError, ingest

    archive = os.path.join(work, "archive")
    shutil.rmtree(archive, ignore_errors=True)
    first: dict[str, str] = {}  # content hash -> first path with it
    copies: collections.Counter = collections.Counter()
    unreadable: dict[str, str] = {}
    date_of, n_flows, k = {}, 0, 0
    for path in paths:
        with open(path, "rb") as fh:
            digest = hashlib.sha256(fh.read()).hexdigest()
        copies[digest] += 1
        if digest in first:
            continue
        first[digest] = path
        out = os.path.join(work, "flows", digest[:20])
        if not os.path.isdir(out):  # a rerun with the same --work reuses what was ingested
            try:
                ingest([path], out, keep_partial=True)
            except (CaptureError, OSError, ValueError, EOFError) as e:
                unreadable[path] = f"{type(e).__name__}: {e}"
                os.makedirs(out, exist_ok=True)
                with open(os.path.join(out, "UNREADABLE"), "w") as fh:
                    fh.write(unreadable[path])
                continue
            os.makedirs(out, exist_ok=True)
        bad = os.path.join(out, "UNREADABLE")
        if os.path.exists(bad):
            with open(bad) as fh:
                unreadable[path] = fh.read()
            continue
        parts = [os.path.join(d, f) for d, _, fs in os.walk(out) for f in fs if f.endswith(".parquet")]
        if not parts:
            continue
        t = pa.concat_tables([pq.read_table(p) for p in sorted(parts)])
        if t.num_rows == 0:
            continue
        date = (DAY0 + dt.timedelta(days=k)).isoformat()
        k += 1
        os.makedirs(os.path.join(archive, f"date={date}"))
        pq.write_table(t.drop_columns([c for c in t.column_names if c == "date"]),
                       os.path.join(archive, f"date={date}", "part-00000.parquet"))
        date_of[date] = (digest, path)
        n_flows += t.num_rows
    return (archive, {d: p for d, (_, p) in date_of.items()}, {d: copies[h] for d, (h, _) in date_of.items()},
            unreadable, n_flows)


def rules_only(art):
    """The model folder with what needs training switched off: the header model never fires (threshold
    infinity), no question model (so no odd bar either). A new model_version, so no cache mixes the two."""
    from portprint.models.artifact import ModelArtifact, ModelMeta, content_version

    raw = asdict(art.meta) | {"threshold": math.inf, "qname": {}, "model_version": ""}
    version = content_version(art.weights, ModelMeta(**raw), None, None)
    return ModelArtifact(art.weights, ModelMeta(**(raw | {"model_version": version})), None, None)


def plain_pass(archive: str, art, cfg) -> tuple[pa.Table, pa.Table, pa.Table]:
    """(SCORES rows with dates and header reasons, anomaly rows of every detector, ESCALATED) of the archive."""
    every, anomalies, chosen, _candidates = tunnel_eval.run_plain(
        archive, art, cfg, keep=("flow_id", "date", "src_ip", "dst_ip", "header_reason", "qname_loss"),
        run_id="public-check")
    return every, anomalies, chosen


def fmt(k: int, n: int) -> str:
    from portprint.jobs.evaluate import _upper95

    return f"{k}/{n} = {k / n:.2%} (95% upper bound {_upper95(k, n):.2%})" if n else f"{k}/0"


def report(label: str, every: pa.Table, anomalies: pa.Table, capture: dict[str, str], copies: dict[str, int],
           rel, odd_bar: float) -> None:
    from portprint.jobs.engine.render import terminal

    dates = np.asarray(every["date"].to_pylist(), dtype=object)
    tunnel_date = {d for d, p in capture.items() if any(k in p for k in KNOWN_TUNNELS)}
    ok = np.asarray(every["header_reason"].to_pylist(), dtype=object) == "ok"
    tunnel = np.isin(dates, list(tunnel_date))
    genuine = ok & ~tunnel
    weight = np.array([copies[d] for d in dates], dtype=np.int64)
    n = int(genuine.sum())
    keys = zip(every["date"].to_pylist(), every["flow_id"].to_pylist(), strict=True)
    gkeys = {key for key, g in zip(keys, genuine, strict=True) if g}
    a = anomalies.select(["date", "flow_id", "src_ip", "dst_ip", "detector", "header_reason", "qname", "qtype",
                          "escalation", "escalation_reason", "prefix_text"]).to_pylist()
    fp = [r for r in a if (r["date"], r["flow_id"]) in gkeys]
    print(f"\n== {label}: genuine DNS (header rule accepts, not a known tunnel): {n} flows in "
          f"{len(set(dates[genuine]))} captures ({int(weight[genuine].sum())} counting each copy of a capture)")
    print(f"- flagged by any detector: {fmt(len(fp), n)}")
    qloss = pc.fill_null(every["qname_loss"], math.nan).to_numpy(zero_copy_only=False)
    judged = genuine & ~np.isnan(qloss)
    if not math.isnan(odd_bar):
        print(f"- the question model judges {int(judged.sum())} of them; above the odd bar ({odd_bar:.3g}): "
              f"{int((qloss[judged] > odd_bar).sum())}")
    by = collections.Counter(r["detector"] if r["detector"] != "tunnel" else f"tunnel/{r['escalation']}" for r in fp)
    for det in ("header-model", "qname-model", "tunnel/shape", "tunnel/socket", "tunnel/session", "tunnel/odd"):
        print(f"  - {det}: {fmt(by.get(det, 0), n)}")
    for r in sorted(fp, key=lambda r: (capture[r["date"]], r["qname"] or "")):
        why = r["escalation_reason"] if r["detector"] == "tunnel" else r["detector"]
        print(f"  FP {rel(capture[r['date']])}: {r['src_ip']} -> {r['dst_ip']} {r['qtype']} "
              f"{terminal(r['qname'])}: {terminal(why)}")
    nondns = [r for r in a if r["detector"] == "header-rule"]
    print(f"- payloads on port 53 the header rule rejects (not DNS, or malformed DNS): {len(nondns)} flows in "
          f"{len({r['date'] for r in nondns})} captures")
    for r in sorted(nondns, key=lambda r: capture[r["date"]]):
        print(f"  {rel(capture[r['date']])}: {r['src_ip']} -> {r['dst_ip']} {r['header_reason']}: "
              f"{terminal(r['prefix_text'][:60])}")
    flagged = {(r["date"], r["flow_id"]): r for r in a}
    for d in sorted(tunnel_date):
        rows = every.filter(pc.equal(every["date"], d)).to_pylist()
        hit = [flagged[(d, r["flow_id"])] for r in rows if (d, r["flow_id"]) in flagged]
        print(f"- known tunnel {rel(capture[d])}: {len(rows)} flows with a payload, {len(hit)} flagged")
        for r in hit:
            why = f"tunnel/{r['escalation']}: {r['escalation_reason']}" if r["detector"] == "tunnel" else r["detector"]
            print(f"  CAUGHT {r['src_ip']} -> {r['dst_ip']} {r['qtype']} {terminal(r['qname'])}: {terminal(why)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("roots", nargs="+")
    ap.add_argument("--model", required=True, help="a model folder `portprint train` made at its defaults")
    ap.add_argument("--work", default=None, help="scratch folder (kept: a rerun reuses its ingested flows)")
    args = ap.parse_args()
    from portprint.conf.config import load_config
    from portprint.udfs import escalate
    from portprint.udfs.scoring import load_model

    work = args.work or tempfile.mkdtemp(prefix="portprint-public-")
    paths = captures(args.roots)
    archive, capture, copies, unreadable, n_flows = build_archive(paths, work)
    common = os.path.commonpath([os.path.abspath(r) for r in args.roots])
    rel = lambda p: os.path.relpath(p, os.path.dirname(common))  # noqa: E731
    print(f"{len(paths)} capture files; {sum(copies.values())} with flows ({len(capture)} distinct), "
          f"{n_flows} flows; {len(unreadable)} unreadable (left out):")
    for p, why in sorted(unreadable.items()):
        print(f"  {rel(p)}: {why.splitlines()[0][:150]}")
    cfg = load_config("local", overrides={"spark": {"master": "local[2]"}})
    art = load_model(args.model)
    print(f"model {args.model} ({art.meta.model_version}); scored as {len(capture)} dates of {archive}")
    for label, a in (("rules (no training)", rules_only(art)), ("model", art)):
        every, anomalies, _chosen = plain_pass(archive, a, cfg)
        print(f"\n[{label}] {every.num_rows} port-53 flows with a payload in "
              f"{len(set(every['date'].to_pylist()))} captures")
        report(label, every, anomalies, capture, copies, rel, escalate.odd_threshold(a))
    sys.stdout.flush()


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()

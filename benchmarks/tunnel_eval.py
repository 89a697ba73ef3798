"""Tunnel detection measured on the shifted corpus's settings (tests/data/shift; docs/detection.md's tables).

For each setting and split: the model ``portprint train`` makes at its defaults on the setting's training flows
(benchmarks/shift_settings.py), then the setting's scoring archive through the same Source reader, Detect and
Escalate code as `portprint score` (udfs/detect.py, udfs/escalate.py ``plain``: one process, no Spark; the
evidence merges exactly however the flows are sliced, so Spark's tasks give the same anomalies), and the metrics of
`portprint evaluate` (jobs/evaluate.py ``metrics``): genuine-DNS false positives per category and tunnel recall
per family, with 95% bounds.

    python benchmarks/tunnel_eval.py --split development [--setting matched ...] [--json out.json] [--detail]
    python benchmarks/tunnel_eval.py --markdown out.json [...]

Discipline (docs/detection.md): design choices on ``development``, thresholds on ``validation``, ``acceptance``
run last, once.
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import os
import sys

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import shift_settings

SPLITS, SETTINGS = shift_settings.corpus_splits.SPLITS, shift_settings.corpus_splits.SETTINGS


def run_plain(archive: str, model, cfg, keep: tuple[str, ...] = ("flow_id", "loss", "qname_loss", "_fired"),
              run_id: str = "evaluate") -> tuple[pa.Table, pa.Table, pa.Table, pa.Table]:
    """(SCORES rows with the ``keep`` columns, anomaly rows of every detector, ESCALATED, candidate rows) of one
    archive, no Spark. ``model``: a model folder, or a loaded ModelArtifact."""
    from portprint.jobs.archive.plan import plan_archive
    from portprint.jobs.archive.rowgroups import Reader, tasks
    from portprint.udfs import escalate
    from portprint.udfs.detect import detect_tables, has_payload
    from portprint.udfs.schemas import ANOMALY, CANDIDATE, KIND, OUT, SCORES
    from portprint.udfs.scoring import load_model

    art = load_model(model) if isinstance(model, str) else model
    plan = plan_archive(archive, cfg.archive.columns, "binary", None, None)
    reader = Reader(cfg)
    detect = detect_tables(art, cfg, run_id, 0, scores=True)
    work = [item for task in tasks(plan, cfg.spark.rows_per_task) for item in task]
    out = pa.Table.from_batches(list(detect(reader.scoped(p, rg, d) for p, rg, d in work)), schema=OUT)

    def again(pairs: pa.Table) -> pa.Table:  # what the Source's flows(pairs) reads
        t = pa.concat_tables([reader.scoped(p, rg, d) for p, rg, d in work])
        t = t.filter(has_payload(t["orig_payload_prefix"]))
        return t.join(pairs, ["date", "src_ip", "dst_ip"], join_type="left semi", use_threads=False)

    found, chosen, _history = escalate.plain(out, art, cfg, run_id, 0, flows=again)
    kinds = out[KIND]
    anomalies = pa.concat_tables([out.filter(pc.equal(kinds, ANOMALY)), found.filter(pc.equal(found[KIND], ANOMALY))])
    every = out.filter(pc.equal(kinds, SCORES)).select(list(keep))
    return every, anomalies, chosen, out.filter(pc.equal(kinds, CANDIDATE))


def evaluate_setting(name: str, split: str, spark=None, work: str = shift_settings.WORK, cfg=None,
                     detail: bool = False) -> dict:
    from portprint.conf.config import load_config
    from portprint.jobs.evaluate import joined, metrics, read_labels
    from portprint.udfs.scoring import load_model

    cfg = cfg or load_config("local", overrides={"spark": {"master": "local[2]"}})
    paths = shift_settings.prepare(name, split, work)
    model = paths["model"] if os.path.isfile(os.path.join(paths["model"], "model.json")) else \
        shift_settings.train(spark, name, split, work)
    art = load_model(model)
    every, anomalies, chosen, cand = run_plain(paths["test"], model, cfg)
    labels = read_labels(paths["labels"])
    s = joined(every, anomalies.select(["flow_id", "detector"]), labels, art, cfg,
               {"not_in_archive_range": 0, "filtered_port": 0, "no_payload": 0})
    ev = metrics(s, art.meta.threshold, art.meta.qname.get("threshold") if art.has_qname else None)
    ev["setting"], ev["split"], ev["model_version"] = name, split, art.meta.model_version
    ev["groups_escalated"] = chosen.num_rows
    ev["candidates"] = cand.num_rows
    ev["flows_scored"] = every.num_rows
    if detail:
        ev["detail"] = details(s, anomalies, chosen, labels, paths["labels"])
    return ev


def details(s, anomalies: pa.Table, chosen: pa.Table, labels: pa.Table, labels_csv: str) -> dict:
    """What a person reads to design: the false positives by detector, rule and group; the misses by family."""
    import csv

    with open(labels_csv, newline="") as fh:
        info = {r["flow_id"]: r for r in csv.DictReader(fh)}
    a = {r["flow_id"]: r for r in anomalies.select(["flow_id", "detector", "escalation", "escalation_group",
                                                     "escalation_reason", "qname"]).to_pylist()}
    fp = collections.Counter()
    for f in s.flow_id[s.flagged & (s.label == "dns")]:
        r = a.get(f, {})
        i = info[f]
        fp[(i["category"], r.get("detector"), r.get("escalation"), r.get("escalation_group"))] += 1
    miss = collections.defaultdict(list)
    for f in s.flow_id[~s.flagged & (s.label == "dns-tunnel")]:
        i = info[f]
        miss[i["family"]].append(f"{i['leg']} {i['client']}->{i['server']} {i['qname'][:70]}")
    return {"false_positives": [[*list(k), v] for k, v in fp.most_common(30)],
            "misses": {k: [len(v), *v[:6]] for k, v in miss.items()},
            "escalated": [f"{r['rule']} {r['level']} {r['src_ip']} {r['group']} names {r['names']} hits {r['hits']}"
                          for r in chosen.to_pylist()][:60]}


def summary_line(ev: dict) -> str:
    dns = ev["per_label"].get("dns", {"flows": 0, "flagged": 0})
    hb = ev["hard_benign"]["by_category"]
    worst = max(hb.items(), key=lambda kv: kv[1]["rate"], default=(None, None))
    fam = ev["tunnel"]["by_family"]
    return (f"{ev['split']:<11} {ev['setting']:<8} FP {dns['flagged']}/{dns['flows']} = {ev['fpr']:.4%} "
            f"(<= {ev['fpr_upper95']:.3%}); worst hard {worst[0]} {worst[1]['flagged']}/{worst[1]['flows']}"
            f" (<= {worst[1]['upper95']:.2%}); tunnels mean {ev['tunnel']['family_mean']:.1%}: "
            + ", ".join(f"{k} {v['flagged']}/{v['flows']}" for k, v in fam.items())
            + f"; {ev['groups_escalated']} groups, {ev['candidates']} candidates")


def markdown(results: list[dict]) -> str:
    """One table row per split and setting, then the per-family and per-category tables."""
    fams = sorted({f for r in results for f in r["tunnel"]["by_family"]})
    lines = ["| split | setting | genuine DNS flagged (95% ub) | by the tunnel detector | worst hard-benign category "
             "(95% ub) | tunnel recall, mean over families | " + " | ".join(fams) + " |",
             "|---" * (6 + len(fams)) + "|"]
    for r in results:
        dns = r["per_label"]["dns"]
        hb = r["hard_benign"]["by_category"]
        w = max(hb.items(), key=lambda kv: (kv[1]["rate"], kv[1]["upper95"]))
        t = r["detectors"].get("tunnel", {})
        fam = r["tunnel"]["by_family"]
        cells = [f"{fam[f]['flagged']}/{fam[f]['flows']}" if f in fam else "-" for f in fams]
        lines.append(f"| {r['split']} | {r['setting']} | {dns['flagged']}/{dns['flows']} = {r['fpr']:.3%} "
                     f"(≤{r['fpr_upper95']:.3%}) | {t.get('fpr', math.nan):.3%} | {w[0]} {w[1]['flagged']}/"
                     f"{w[1]['flows']} (≤{w[1]['upper95']:.2%}) | {r['tunnel']['family_mean']:.1%} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--split", action="append", choices=SPLITS)
    ap.add_argument("--setting", action="append", choices=SETTINGS)
    ap.add_argument("--work", default=shift_settings.WORK)
    ap.add_argument("--json")
    ap.add_argument("--detail", action="store_true")
    ap.add_argument("--set", action="append", default=[], help="an escalate setting, e.g. shape_label=48")
    ap.add_argument("--markdown", nargs="+", help="print the tables of these --json files and stop")
    args = ap.parse_args()
    if args.markdown:
        results = []
        for path in args.markdown:
            with open(path) as fh:
                results += json.load(fh)
        print(markdown(results))
        return
    from portprint.conf.config import load_config

    over: dict = {"spark": {"master": "local[2]"}, "escalate": {}}
    for kv in args.set:
        k, v = kv.split("=", 1)
        over["escalate"][k] = json.loads(v)
    cfg = load_config("local", overrides=over)
    results = []
    for split in args.split or ["development"]:
        for name in args.setting or SETTINGS:
            ev = evaluate_setting(name, split, None, args.work, cfg, args.detail)
            print(summary_line(ev), flush=True)
            if args.detail:
                print(json.dumps(ev["detail"], indent=1))
            results.append(ev)
    if args.json:
        from portprint.jobs.evaluate import json_safe

        with open(args.json, "w") as fh:
            json.dump(json_safe(results), fh, indent=1)


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()

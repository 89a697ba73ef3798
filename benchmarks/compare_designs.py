"""Compare model designs the way they will be used: train narrow, test wide.

Train on a synthetic week made by one DNS implementation (dnspython, `portprint sample`), then
evaluate on the labelled corpus of real software in tests/data/corpus (five servers, six clients,
sixteen other protocols, two tunnel tools). Prints a Markdown table for the README.

    python benchmarks/compare_designs.py [--out benchmarks/out/designs]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile

from portprint.conf.config import load_config
from portprint.jobs.engine.session import build_session
from portprint.jobs.evaluate import run_evaluate
from portprint.jobs.ingest import ingest
from portprint.jobs.sample import write_sample
from portprint.jobs.train import run_train

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "..", "tests", "data", "corpus")

DESIGNS = {
    "published: 8 bytes, ID kept, raw mix": {"features": {"id_mode": "keep"},
                                             "model": {"pattern_balance": 1.0, "augment": False}},
    "ID masked, raw mix": {"model": {"pattern_balance": 1.0, "augment": False}},
    "ID masked, distinct headers": {"model": {"pattern_balance": 0.0, "augment": False}},
    "ID masked, distinct headers + legal variants (default)": {},
    "full 12-byte header, + legal variants": {"features": {"width": 12}},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(HERE, "out", "designs"))
    ap.add_argument("--flows-per-day", type=int, default=20000)
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="portprint-designs-")
    sample, corpus = os.path.join(work, "sample"), os.path.join(work, "corpus")
    write_sample(sample, days=2, flows_per_day=args.flows_per_day, seed=11)
    ingest([CORPUS], corpus)
    base = {"spark": {"master": "local[2]"}}
    spark = build_session(load_config("local", overrides=base))
    rows = []
    for name, over in DESIGNS.items():
        cfg = load_config("local", overrides=base | over)
        model = os.path.join(work, f"model-{len(rows)}")
        run_train(spark, cfg, sample, model, end="2026-11-01", log=lambda m: None)
        wide = run_evaluate(spark, cfg, corpus, os.path.join(CORPUS, "labels.csv"), model, log=lambda m: None)
        own = run_evaluate(spark, cfg, sample, os.path.join(sample, "_labels.parquet"), model, start="2026-11-02",
                           log=lambda m: None)
        rows.append((name, wide, own))
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "designs.json"), "w") as f:
        json.dump({n: {"corpus": w, "sample_day2": o} for n, w, o in rows}, f, indent=2, default=float)
    print("| design | model FP on real DNS | model recall (16 protocols) | worst protocol | "
          "rule + model FP | rule + model recall | model FP on unseen sample day |")
    print("|---|---|---|---|---|---|---|")
    for name, w, o in rows:
        m, c = w["detectors"]["header-model"], w["detectors"]["combined"]
        model_only = {lab: row["model_flagged"] / row["flows"] for lab, row in w["per_label"].items()
                      if lab in w["recall_per_protocol"]}
        worst = min(model_only, key=model_only.get)
        print(f"| {name} | {m['fpr']:.2%} | {m['recall']:.2%} | {worst} {model_only[worst]:.0%} | "
              f"{c['fpr']:.2%} | {c['recall']:.2%} | {o['detectors']['header-model']['fpr']:.3%} |")


if __name__ == "__main__":
    main()

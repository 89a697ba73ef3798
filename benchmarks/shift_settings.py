"""The shifted corpus's settings as archives and models: what benchmarks/tunnel_eval.py and the acceptance test
score.

For one setting on one split (tests/data/corpus_splits.py): the training archive (its training flows, by id) and
the scoring archive (every flow of the capture files that hold its scored flows, as docs/corpus.md says to
ingest them), each a Hive-partitioned Parquet folder; the labels of the scored flows as CSV; and the model
``portprint train`` makes at its defaults on the training archive. Everything is cached under a work folder.

    python benchmarks/shift_settings.py --split development [--setting matched ...] [--work DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "..", "tests", "data")
CORPUS = os.path.join(DATA, "shift")
sys.path.insert(0, DATA)
import corpus_splits  # noqa: E402

WORK = os.path.join(tempfile.gettempdir(), "portprint-shift")


def corpus_archive(work: str = WORK) -> str:
    """Every capture of the corpus ingested once (about 10 s)."""
    out = os.path.join(work, "archive")
    if not os.path.isdir(out):
        from portprint.jobs.ingest import ingest

        tmp = out + ".tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        ingest([CORPUS], tmp)
        os.rename(tmp, out)
    return out


def _write(t: pa.Table, out: str) -> None:
    tmp = out + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    for d in sorted(set(t["date"].to_pylist())):
        part = os.path.join(tmp, f"date={d}")
        os.makedirs(part)
        pq.write_table(t.filter(pc.equal(t["date"], d)).drop(["date"]), os.path.join(part, "part-0.parquet"))
    os.rename(tmp, out)


def prepare(name: str, split: str, work: str = WORK, rows: list[dict] | None = None) -> dict[str, str]:
    """{train, test, labels}: the setting's training archive, scoring archive and labels CSV (cached)."""
    base = os.path.join(work, f"{split}-{name}")
    paths = {"train": os.path.join(base, "train"), "test": os.path.join(base, "test"),
             "labels": os.path.join(base, "labels.csv"), "model": os.path.join(base, "model")}
    if all(os.path.exists(paths[k]) for k in ("train", "test", "labels")):
        return paths
    os.makedirs(base, exist_ok=True)
    rows = corpus_splits.read_labels(CORPUS) if rows is None else rows
    s = corpus_splits.setting(CORPUS, name, split, rows)
    flows = ds.dataset(corpus_archive(work), format="parquet", partitioning="hive").to_table()
    flows = flows.set_column(flows.schema.get_field_index("date"), "date", pc.cast(flows["date"], pa.string()))
    if not os.path.exists(paths["train"]):
        _write(flows.filter(pc.is_in(flows["flow_id"], value_set=pa.array(s.train_flow_ids))), paths["train"])
    if not os.path.exists(paths["test"]):
        files = set(s.test_files)
        ids = [r["flow_id"] for r in rows if r["file"] in files and r["day"] == s.test_day]
        _write(flows.filter(pc.is_in(flows["flow_id"], value_set=pa.array(ids))), paths["test"])
    corpus_splits.write_labels(s, paths["labels"])
    return paths


def train(spark, name: str, split: str, work: str = WORK, cfg=None) -> str:
    """The model folder ``portprint train`` writes at its defaults on the setting's training archive (cached)."""
    paths = prepare(name, split, work)
    model = paths["model"]
    if os.path.isfile(os.path.join(model, "model.json")):
        return model
    from portprint.conf.config import load_config
    from portprint.jobs.train import run_train

    cfg = cfg or load_config("local", overrides={"spark": {"master": "local[2]"}, "registry": {"enabled": False}})
    shutil.rmtree(model, ignore_errors=True)
    run_train(spark, cfg, paths["train"], model, days=0, log=lambda m: print(m, file=sys.stderr))
    return model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--split", action="append", choices=corpus_splits.SPLITS, required=True)
    ap.add_argument("--setting", action="append", choices=corpus_splits.SETTINGS)
    ap.add_argument("--work", default=WORK)
    args = ap.parse_args()
    from portprint.conf.config import load_config
    from portprint.jobs.engine.session import build_session

    spark = build_session(load_config("local", overrides={"spark": {"master": "local[2]"}}))
    rows = corpus_splits.read_labels(CORPUS)
    for split in args.split:
        for name in args.setting or corpus_splits.SETTINGS:
            prepare(name, split, args.work, rows)
            print(f"{split} {name}: {train(spark, name, split, args.work)}", file=sys.stderr)
    spark.stop()


if __name__ == "__main__":
    main()

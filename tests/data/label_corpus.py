"""Write corpus/labels.csv: one row per flow of every capture, labelled from manifest.csv.

manifest.csv is written by the scenario scripts while they run the tools: each rule says which capture
file and which initiator address (``*`` = any) belong to which label/tool/server. portprint's ingest is
used only to find the flows and their flow_id; the labels never come from portprint's own logic.
"""

from __future__ import annotations

import csv
import sys
import tempfile
from pathlib import Path

import pyarrow.dataset as ds

from portprint.jobs.ingest import ingest

FIELDS = [
    "file",
    "flow_id",
    "ts",
    "proto",
    "src_ip",
    "src_port",
    "dst_ip",
    "dst_port",
    "label",
    "tool",
    "server",
]


def main(corpus: Path) -> None:
    rules: dict[str, list[dict[str, str]]] = {}
    with open(corpus / "manifest.csv", newline="") as fh:
        for r in csv.DictReader(fh):
            rules.setdefault(r["file"], []).append(r)
    rows, unlabelled = [], 0
    for name in sorted(rules):
        if not (corpus / name).exists() or (corpus / name).stat().st_size <= 24:
            print(f"skip {name}: no packets", file=sys.stderr)
            continue
        with tempfile.TemporaryDirectory() as tmp:
            ingest([str(corpus / name)], tmp)
            flows = ds.dataset(tmp, format="parquet", partitioning="hive").to_table().to_pylist()
        for f in sorted(flows, key=lambda f: (f["ts"], f["flow_id"])):
            specific = [r for r in rules[name] if r["initiator_ip"] == f["src_ip"]]
            match = (specific or [r for r in rules[name] if r["initiator_ip"] == "*"] or [None])[0]
            if match is None:
                unlabelled += 1
                print(
                    f"unlabelled flow in {name}: {f['src_ip']}:{f['src_port']} -> {f['dst_ip']}",
                    file=sys.stderr,
                )
                continue
            rows.append(
                {
                    "file": name,
                    "flow_id": f["flow_id"],
                    "ts": f["ts"].isoformat(),
                    "proto": f["proto"],
                    "src_ip": f["src_ip"],
                    "src_port": f["src_port"],
                    "dst_ip": f["dst_ip"],
                    "dst_port": f["dst_port"],
                    "label": match["label"],
                    "tool": match["tool"],
                    "server": match["server"],
                }
            )
    with open(corpus / "labels.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=FIELDS)
        w.writeheader()
        w.writerows(rows)
    print(f"{len(rows)} labelled flows, {unlabelled} unlabelled", file=sys.stderr)


if __name__ == "__main__":
    main(Path(sys.argv[1]))

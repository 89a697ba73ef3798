"""Write corpus/labels.csv: one row per flow of every capture, labelled from manifest.csv.

manifest.csv is written by the scenario scripts while they run the tools: each rule says which capture
file and which initiator address (``*`` = any) belong to which label/tool/server. portprint's ingest is
used only to find the flows and their flow_id; the labels never come from portprint's own logic.

Optional rule columns (corpus_names.sh uses them; empty = no condition):
  category      the flow's category; ``@names`` = look the flow's QNAME up in names.tsv (written by
                names.py: every name the scenario asked, with its kind), ``ordinary`` when absent.
                Empty: ``ordinary`` for dns, the tool for dns-tunnel, the label for anything else.
  responder_ip  the responder's address must match (fnmatch pattern, like initiator_ip).
  qname         a regex the flow's first QNAME (lowercased, no trailing dot, ``.`` for the root) must
                fully match. The QNAME is read here from the capture's own packets (the first query
                the initiator sent in that flow), not from portprint.
The rule with the most conditions wins (a qname condition outweighs the address ones); ties go to the
rule written first.

A manifest with the columns ``client,leg,family,scenario`` (tests/data/shift, made by make_shift_corpus.sh) gets
labels.csv with more columns after the original ones: the flow's first QNAME, the client implementation, the
leg (``stub``: a client asking a resolver; ``upstream``: a resolver's or forwarder's own queries), the zone the
QNAME falls in (longest suffix in zones.tsv, else its top-level domain), the tunnel family, the scenario, the
UTC day and the split (days.tsv).
"""

from __future__ import annotations

import bisect
import csv
import re
import socket
import sys
import tempfile
from datetime import timezone
from fnmatch import fnmatchcase
from pathlib import Path

import dpkt
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
    "category",
]
EXTRA = ["qname", "client", "leg", "zone", "family", "scenario", "day", "split"]


def _qname(payload: bytes) -> str | None:
    """QNAME of a DNS query message (None if it is not one), lowercased, without the trailing dot."""
    if len(payload) < 13 or payload[2] & 0x80 or int.from_bytes(payload[4:6], "big") == 0:
        return None
    i, labels = 12, []
    while i < len(payload):
        n = payload[i]
        if n == 0:
            return ".".join(labels).lower() or "."
        if n > 63 or i + 1 + n > len(payload):
            return None
        labels.append(payload[i + 1 : i + 1 + n].decode("latin-1"))
        i += 1 + n
    return None


def first_queries(path: Path) -> dict[tuple, list[tuple[float, str | None]]]:
    """(proto, src, sport, dst, dport) -> [(ts, qname)] of every packet with payload, in capture order."""
    out: dict[tuple, list[tuple[float, str | None]]] = {}
    with open(path, "rb") as fh:
        reader = dpkt.pcap.Reader(fh)
        raw = reader.datalink() in (12, 14, 101)  # raw IP (the shifted corpus), else Ethernet
        for ts, buf in reader:
            try:
                if raw:
                    ip = dpkt.ip.IP(buf) if buf[0] >> 4 == 4 else dpkt.ip6.IP6(buf)
                else:
                    ip = dpkt.ethernet.Ethernet(buf).data
            except (dpkt.UnpackError, IndexError):
                continue
            if not isinstance(ip, (dpkt.ip.IP, dpkt.ip6.IP6)):
                continue
            seg = ip.data
            if isinstance(seg, dpkt.udp.UDP):
                proto, payload = 17, bytes(seg.data)
            elif isinstance(seg, dpkt.tcp.TCP):
                proto, payload = 6, bytes(seg.data)[2:]
            else:
                continue
            if not seg.data:
                continue
            fam = socket.AF_INET if isinstance(ip, dpkt.ip.IP) else socket.AF_INET6
            key = (proto, socket.inet_ntop(fam, ip.src), seg.sport, socket.inet_ntop(fam, ip.dst), seg.dport)
            out.setdefault(key, []).append((float(ts), _qname(payload)))
    return out


def flow_qname(queries: dict, f: dict) -> str | None:
    """The QNAME of the first query the initiator sent in this flow (at or after the flow's start)."""
    seen = queries.get((f["proto"], f["src_ip"], f["src_port"], f["dst_ip"], f["dst_port"]), [])
    i = bisect.bisect_left(seen, f["ts"].timestamp() - 2e-6, key=lambda e: e[0])
    return seen[i][1] if i < len(seen) else None


def load_names(corpus: Path) -> dict[str, str]:
    if not (corpus / "names.tsv").exists():
        return {}
    with open(corpus / "names.tsv", newline="") as fh:
        return {r["name"]: r["category"] for r in csv.DictReader(fh, delimiter="\t")}


def load_zones(corpus: Path) -> set[str]:
    if not (corpus / "zones.tsv").exists():
        return set()
    with open(corpus / "zones.tsv", newline="") as fh:
        return {r["zone"] for r in csv.DictReader(fh, delimiter="\t")}


def zone_of(qname: str | None, zones: set[str]) -> str:
    """The longest zone in zones.tsv that the name falls in; else its top-level domain ('.' for the root)."""
    if not qname or qname == ".":
        return "."
    labels = qname.split(".")
    for i in range(len(labels)):
        if ".".join(labels[i:]) in zones:
            return ".".join(labels[i:])
    return labels[-1]


def pick(rules: list[dict[str, str]], f: dict, qname: str | None) -> dict[str, str] | None:
    best, best_score = None, -1
    for r in rules:
        score = 0
        if r["initiator_ip"] != "*":
            if not fnmatchcase(f["src_ip"], r["initiator_ip"]):
                continue
            score += 1
        if r.get("responder_ip"):
            if not fnmatchcase(f["dst_ip"], r["responder_ip"]):
                continue
            score += 1
        if r.get("qname"):
            if qname is None or not re.fullmatch(r["qname"], qname):
                continue
            score += 10
        if score > best_score:
            best, best_score = r, score
    return best


def category(rule: dict[str, str], qname: str | None, names: dict[str, str]) -> str:
    cat = rule.get("category") or ""
    if cat == "@names":
        return names.get(qname or "", "ordinary")
    if cat:
        return cat
    return {"dns": "ordinary", "dns-tunnel": rule["tool"]}.get(rule["label"], rule["label"])


def main(corpus: Path) -> None:
    rules: dict[str, list[dict[str, str]]] = {}
    with open(corpus / "manifest.csv", newline="") as fh:
        for r in csv.DictReader(fh):
            rules.setdefault(r["file"], []).append(r)
    names = load_names(corpus)
    zones = load_zones(corpus)
    extended = bool(rules) and "leg" in next(iter(rules.values()))[0]
    split_of: dict[str, str] = {}
    if (corpus / "days.tsv").exists():
        with open(corpus / "days.tsv", newline="") as fh:
            split_of = {r["day"]: r["split"] for r in csv.DictReader(fh, delimiter="\t")}
    rows, unlabelled = [], 0
    for name in sorted(rules):
        if not (corpus / name).exists() or (corpus / name).stat().st_size <= 24:
            print(f"skip {name}: no packets", file=sys.stderr)
            continue
        with tempfile.TemporaryDirectory() as tmp:
            ingest([str(corpus / name)], tmp)
            flows = ds.dataset(tmp, format="parquet", partitioning="hive").to_table().to_pylist()
        queries = first_queries(corpus / name)
        for f in sorted(flows, key=lambda f: (f["ts"], f["flow_id"])):
            qname = flow_qname(queries, f)
            match = pick(rules[name], f, qname)
            if match is None:
                unlabelled += 1
                print(
                    f"unlabelled flow in {name}: {f['src_ip']}:{f['src_port']} -> {f['dst_ip']}",
                    file=sys.stderr,
                )
                continue
            row = {
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
                "category": category(match, qname, names),
            }
            if extended:
                day = f["ts"].astimezone(timezone.utc).date().isoformat()
                row.update(
                    qname=qname if qname is not None else "",
                    client=match["client"] or match["tool"],
                    leg=match["leg"],
                    zone=zone_of(qname, zones),
                    family=match["family"],
                    scenario=match["scenario"],
                    day=day,
                    split=split_of.get(day, ""),
                )
            rows.append(row)
    with open(corpus / "labels.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=FIELDS + EXTRA if extended else FIELDS)
        w.writeheader()
        w.writerows(rows)
    print(f"{len(rows)} labelled flows, {unlabelled} unlabelled", file=sys.stderr)


if __name__ == "__main__":
    main(Path(sys.argv[1]))

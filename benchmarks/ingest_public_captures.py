"""Run `portprint ingest` over other projects' public test captures and compare port-53 packets with tcpdump.

The captures are not part of this repository: clone (or fetch a snapshot of) zeek/zeek and
OISF/suricata-verify, then point this script at the clones. Each capture is ingested on its own; for every
file it prints the outcome (read, unsupported link type, damaged) and, where tcpdump sees port-53 packets
(tcpdump decodes IP-in-IP, GRE, VXLAN, Geneve and MPLS too), whether ingest's port-53 flows hold the same
number of packets.

    python benchmarks/ingest_public_captures.py ~/src/zeek ~/src/suricata-verify [--out benchmarks/out/captures.json]

Needs tcpdump on the PATH. A difference is a lead to read by hand, not a verdict: tcpdump prints a first
IPv6 fragment without its port, and does not open GRE over UDP 4754.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import shutil
import subprocess
import tempfile

import pyarrow.dataset as ds

from portprint.jobs.ingest import CaptureError, UnsupportedLinkType, ingest

SUFFIXES = (".pcap", ".pcapng", ".cap", ".trace")
# A port-53 endpoint as tcpdump -nn prints it: a.b.c.d.53 or an IPv6 address followed by .53.
PORT53 = re.compile(r"(\b\d+\.\d+\.\d+\.\d+|[0-9a-f]*:[0-9a-f:]+)\.53[: ]")
TUNNEL = re.compile(r"\bgre(?![a-z])|\b(vxlan|geneve|mpls|erspan)|[46]in[46]", re.I)


def one(path: str, work: str) -> dict:
    out = os.path.join(work, "archive")
    r: dict = {"file": path}
    try:
        rep = ingest([path], out)
        r.update(status="read", packets=rep.packets, flows=rep.flows, dns_flows=0, dns_packets=0)
        if rep.flows:
            rows = ds.dataset(out, format="parquet", partitioning="hive").to_table(
                columns=["src_port", "dst_port", "orig_pkts", "resp_pkts"]).to_pylist()
            dns = [x for x in rows if 53 in (x["src_port"], x["dst_port"])]
            r.update(dns_flows=len(dns), dns_packets=sum(x["orig_pkts"] + x["resp_pkts"] for x in dns))
    except UnsupportedLinkType as exc:
        r.update(status="unsupported link type", why=str(exc).split(": ")[1])
    except CaptureError as exc:
        r.update(status="damaged", why=exc.reason)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    try:
        p = subprocess.run(["tcpdump", "-nn", "-r", path], capture_output=True, text=True, timeout=120)
        r["tcpdump_dns_packets"] = sum(1 for line in p.stdout.splitlines() if PORT53.search(line))
    except subprocess.TimeoutExpired:
        r["tcpdump_dns_packets"] = None
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("roots", nargs="+", help="folders to search for captures")
    ap.add_argument("--out", help="write every file's result here as JSON")
    args = ap.parse_args()
    files = sorted(os.path.join(d, n) for root in args.roots for d, _, names in os.walk(root) for n in names
                   if n.lower().endswith(SUFFIXES) and os.path.getsize(os.path.join(d, n)) > 0)
    with tempfile.TemporaryDirectory() as work:
        results = [one(f, work) for f in files]
    print(f"{len(results)} captures: " + ", ".join(f"{n} {k}" for k, n in
                                                   collections.Counter(r["status"] for r in results).items()))
    for r in results:
        if r["status"] != "read":
            print(f"  {r['status']}: {r['file']}: {r['why']} (tcpdump: {r['tcpdump_dns_packets']} port-53 packets)")
    dns = [r for r in results if r["status"] == "read" and (r["tcpdump_dns_packets"] or r["dns_packets"])]
    same = [r for r in dns if r["dns_packets"] == r["tcpdump_dns_packets"]]
    print(f"{len(dns)} captures with port-53 traffic read; {len(same)} hold as many port-53 packets as tcpdump shows")
    for r in dns:
        if r not in same:
            print(f"  differs: {r['file']}: ingest {r['dns_packets']}, tcpdump {r['tcpdump_dns_packets']}")
    print("captures named after a tunnel (flows / port-53 flows / port-53 packets, tcpdump's):")
    for r in results:
        if TUNNEL.search(os.path.basename(r["file"])) and r["status"] == "read":
            print(f"  {os.path.basename(r['file'])}: {r['flows']} / {r['dns_flows']} / {r['dns_packets']} "
                  f"({r['tcpdump_dns_packets']})")
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as fh:
            json.dump(results, fh, indent=1)


if __name__ == "__main__":
    main()

"""Place a capture on its corpus day, and cut responses short (make_shift_corpus.sh calls it after each capture).

``retime.py IN OUT --start 2026-12-04T09:20:00 [--span SECONDS] [--resp-bytes N]``

- Every timestamp moves by one constant, so the first packet falls at ``--start`` (UTC): captures made in one
  sitting become the days of the corpus, as ``editcap -t`` would do it.
- ``--span``: a scenario that pauses between its lookups (low-and-slow exfiltration, beacons) is run with short
  pauses, and every pause of at least ``MIN_GAP`` seconds is stretched by one common factor so that the pauses
  add up to ``--span`` seconds. Packets closer together than ``MIN_GAP`` (a query and its answer, a resolver's
  iterations for that query) keep their spacing, so flows keep their real durations.
- ``--resp-bytes``: UDP datagrams sent from port 53 (answers) are cut to that many bytes of DNS payload, as a
  smaller snaplen would; the UDP length field still tells the real size, so flow byte counts are unchanged.
  Queries stay whole (the labeller reads their names). Keeps the committed corpus small.

dpkt reads and writes the pcap records (the file format is dpkt's, not ours).
"""

from __future__ import annotations

import argparse
import itertools
from datetime import datetime, timezone

import dpkt

MIN_GAP = 0.5


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("inp")
    ap.add_argument("out")
    ap.add_argument("--start", required=True)
    ap.add_argument("--span", type=float, default=0.0)
    ap.add_argument("--resp-bytes", type=int, default=0)
    a = ap.parse_args()
    start = datetime.fromisoformat(a.start).replace(tzinfo=timezone.utc).timestamp()
    with open(a.inp, "rb") as fh:
        rd = dpkt.pcap.Reader(fh)
        link, snap = rd.datalink(), rd.snaplen
        recs = list(rd)
    if not recs:
        open(a.out, "wb").close()
        return
    gaps = [t1 - t0 for (t0, _), (t1, _) in itertools.pairwise(recs)]
    big = sum(g for g in gaps if g >= MIN_GAP)
    factor = a.span / big if a.span and big else 1.0
    with open(a.out, "wb") as fh:
        wr = dpkt.pcap.Writer(fh, snaplen=snap, linktype=link, nano=False)
        t = start
        for i, (_ts, buf) in enumerate(recs):
            if i:
                g = gaps[i - 1]
                t += g * factor if g >= MIN_GAP else g
            wr.writepkt(cut(buf, a.resp_bytes) if a.resp_bytes else buf, ts=t)


def cut(buf: bytes, n: int) -> bytes:
    """The frame with a UDP answer's payload cut to n bytes (Ethernet + IPv4/IPv6 only; anything else whole)."""
    try:
        eth = dpkt.ethernet.Ethernet(buf)
    except dpkt.UnpackError:
        return buf
    ip = eth.data
    if not isinstance(ip, (dpkt.ip.IP, dpkt.ip6.IP6)) or not isinstance(ip.data, dpkt.udp.UDP):
        return buf
    udp = ip.data
    if udp.sport != 53 or udp.dport == 53:
        return buf
    hdr = 14 + (ip.hl * 4 if isinstance(ip, dpkt.ip.IP) else 40) + 8
    return buf[: hdr + n]


if __name__ == "__main__":
    main()

"""Place a capture on its corpus day, and cut responses short (make_shift_corpus.sh calls it after each capture).

``retime.py IN OUT --start 2026-12-04T09:20:00 [--span SECONDS] [--resp-bytes N] [--raw]``

- Every timestamp moves by one constant, so the first packet falls at ``--start`` (UTC): captures made in one
  sitting become the days of the corpus, as ``editcap -t`` would do it.
- ``--span``: a scenario that pauses between its lookups (low-and-slow exfiltration, beacons) is run with short
  pauses, and every pause of at least ``MIN_GAP`` seconds is stretched by one common factor so that the pauses
  add up to ``--span`` seconds. Packets closer together than ``MIN_GAP`` (a query and its answer, a resolver's
  iterations for that query) keep their spacing, so flows keep their real durations.
- ``--resp-bytes``: UDP datagrams sent from port 53 (answers) are cut to that many bytes of DNS payload, as a
  smaller snaplen would; the UDP length field still tells the real size, so flow byte counts are unchanged.
  Queries stay whole (the labeller reads their names). Keeps the committed corpus small.
- ``--raw``: drop the (all-zero) Ethernet header that tcpdump writes on loopback and store the IP packets as
  LINKTYPE_RAW, which readers of the archive contract (portprint's ingest, tcpdump, Wireshark) read as well.
- ``--start keep``: keep the capture's own times (only cut and convert).

``retime.py --merge OUT IN...`` writes the packets of several (already placed) captures into one, in time order,
as mergecap does: the slow tunnels of a day run at once, each captured on its own, and are stored as one file so
that no two captures of a day overlap in time (an ingest reading files one after the other then sees time go
forward only).

dpkt reads and writes the pcap records (the file format is dpkt's, not ours).
"""

from __future__ import annotations

import argparse
import itertools
import sys
from datetime import datetime, timezone

import dpkt

MIN_GAP = 0.5
LINKTYPE_RAW = 101  # https://www.tcpdump.org/linktypes.html


def merge(out: str, inputs: list[str]) -> None:
    recs, link, snap = [], None, 0
    for path in inputs:
        with open(path, "rb") as fh:
            rd = dpkt.pcap.Reader(fh)
            if link is not None and rd.datalink() != link:
                raise SystemExit(f"{path}: link type {rd.datalink()}, the others {link}")
            link, snap = rd.datalink(), max(snap, rd.snaplen)
            recs += [(ts, i, buf) for i, (ts, buf) in enumerate(rd)]
    recs.sort(key=lambda r: (r[0], r[1]))
    with open(out, "wb") as fh:
        wr = dpkt.pcap.Writer(fh, snaplen=snap, linktype=link, nano=False)
        for ts, _i, buf in recs:
            wr.writepkt(buf, ts=ts)


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--merge":
        merge(sys.argv[2], sys.argv[3:])
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("inp")
    ap.add_argument("out")
    ap.add_argument("--start", required=True)
    ap.add_argument("--span", type=float, default=0.0)
    ap.add_argument("--resp-bytes", type=int, default=0)
    ap.add_argument("--raw", action="store_true")
    a = ap.parse_args()
    with open(a.inp, "rb") as fh:
        rd = dpkt.pcap.Reader(fh)
        link, snap = rd.datalink(), rd.snaplen
        recs = list(rd)
    if not recs:
        open(a.out, "wb").close()
        return
    if a.start == "keep":
        start = recs[0][0]
    else:
        start = datetime.fromisoformat(a.start).replace(tzinfo=timezone.utc).timestamp()
    if link == dpkt.pcap.DLT_EN10MB and a.raw:
        recs = [(ts, buf[14:]) for ts, buf in recs]
        link = LINKTYPE_RAW
    elif link not in (dpkt.pcap.DLT_EN10MB, LINKTYPE_RAW):
        raise SystemExit(f"{a.inp}: link type {link}; retime.py handles Ethernet and raw IP captures")
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
            wr.writepkt(cut(buf, a.resp_bytes, 0 if link == LINKTYPE_RAW else 14) if a.resp_bytes else buf, ts=t)


def cut(buf: bytes, n: int, link_hdr: int) -> bytes:
    """The frame with a UDP answer's payload cut to n bytes (IPv4/IPv6 after link_hdr bytes; else whole)."""
    try:
        ip = dpkt.ip.IP(buf[link_hdr:]) if buf[link_hdr] >> 4 == 4 else dpkt.ip6.IP6(buf[link_hdr:])
    except (dpkt.UnpackError, IndexError):
        return buf
    if not isinstance(ip.data, dpkt.udp.UDP):
        return buf
    udp = ip.data
    if udp.sport != 53 or udp.dport == 53:
        return buf
    hdr = link_hdr + (ip.hl * 4 if isinstance(ip, dpkt.ip.IP) else 40) + 8
    return buf[: hdr + n]


if __name__ == "__main__":
    main()

"""benchmarks/public_check.py's scratch archive: one date per distinct capture (however many days its packets
span), a byte-identical copy counted once with its number of copies, an unreadable capture listed and left out.
No Spark, no model: pcap files written here with dpkt, the archive read back with pyarrow."""

from __future__ import annotations

import os
import shutil
import socket
import struct
import sys

import dns.message
import dpkt
import pyarrow.dataset as ds

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "benchmarks"))
import public_check

DAY = 86_400.0
T0 = 1_764_800_000.0  # 2025-12-03 22:13 UTC: the second capture's packets cross midnight


def frame(src: str, sport: int, name: str) -> bytes:
    q = dns.message.make_query(name, "A").to_wire()
    u = bytes(dpkt.udp.UDP(sport=sport, dport=53, ulen=8 + len(q), data=q))
    ip = dpkt.ip.IP(src=socket.inet_aton(src), dst=socket.inet_aton("192.0.2.53"), p=17, ttl=64, data=u)
    ip.len = 20 + len(u)
    return b"\x02\x00\x00\x00\x00\x01\x02\x00\x00\x00\x00\x02" + struct.pack(">H", 0x0800) + bytes(ip)


def write(path, frames: list[tuple[float, bytes]], linktype: int = dpkt.pcap.DLT_EN10MB) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as fh:
        w = dpkt.pcap.Writer(fh, linktype=linktype)
        for ts, f in frames:
            w.writepkt(f, ts=ts)
    return str(path)


def test_each_distinct_capture_is_one_date_copies_are_counted_once_and_unreadable_ones_are_listed(tmp_path):
    root = tmp_path / "suite"
    a = write(root / "t1" / "input.pcap", [(T0, frame("10.0.0.1", 40000, "www.example.org."))])
    a_copy = str(root / "t2" / "input.pcap")
    os.makedirs(os.path.dirname(a_copy))
    shutil.copyfile(a, a_copy)
    b = write(root / "t3" / "two-days.pcap", [(T0, frame("10.0.0.2", 40001, "one.example.net.")),
                                              (T0 + DAY, frame("10.0.0.2", 40002, "two.example.net."))])
    wifi = write(root / "t4" / "wifi.pcap", [(T0, b"\x00" * 40)], linktype=105)
    (root / "t4" / "notes.txt").write_text("not a capture")

    paths = public_check.captures([str(root)])
    assert paths == sorted([a, a_copy, b, wifi])
    archive, capture, copies, unreadable, flows = public_check.build_archive(paths, str(tmp_path / "work"))

    assert sorted(capture.values()) == sorted([a, b])  # the copy is not scored again
    by_path = {p: d for d, p in capture.items()}
    assert copies[by_path[a]] == 2 and copies[by_path[b]] == 1
    assert list(unreadable) == [wifi] and "105" in unreadable[wifi]
    assert flows == 3
    rows = ds.dataset(archive, format="parquet", partitioning="hive").to_table().to_pylist()
    dates = {r["src_ip"]: set() for r in rows}
    for r in rows:
        dates[r["src_ip"]].add(str(r["date"]))
    # Both of the second capture's flows, a day apart, are on its one date; the first capture has its own.
    assert dates == {"10.0.0.1": {by_path[a]}, "10.0.0.2": {by_path[b]}}

"""Tests of the pcap ingest against facts that do not come from the ingest itself.

Tiny captures are crafted here with dpkt; the corpus under tests/data/corpus/ was captured from real
servers and clients (tests/data/make_corpus.sh) and is cross-checked with an independent dpkt pass and
with dnspython.
"""

from __future__ import annotations

import csv
import hashlib
import socket
import struct
from collections.abc import Iterable
from pathlib import Path

import dns.message
import dpkt
import pyarrow.dataset as ds
import pytest

from portprint.jobs.ingest import SCHEMA, CaptureError, ingest

CORPUS = Path(__file__).parent / "data" / "corpus"
T0 = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC


# ------------------------------------------------------------------------------------------ helpers
def ip4(src: str, dst: str, l4: dpkt.Packet, p: int) -> dpkt.ip.IP:
    pkt = dpkt.ip.IP(src=socket.inet_aton(src), dst=socket.inet_aton(dst), p=p, data=l4, ttl=64)
    pkt.len = len(pkt)
    return pkt


def ip6(src: str, dst: str, l4: dpkt.Packet, p: int) -> dpkt.ip6.IP6:
    pkt = dpkt.ip6.IP6(
        src=socket.inet_pton(socket.AF_INET6, src), dst=socket.inet_pton(socket.AF_INET6, dst), nxt=p, hlim=64
    )
    pkt.data = l4
    pkt.plen = len(bytes(l4))
    return pkt


def tcp(sport: int, dport: int, seq: int, flags: int, data: bytes = b"", ack: int = 0) -> dpkt.tcp.TCP:
    return dpkt.tcp.TCP(sport=sport, dport=dport, seq=seq, ack=ack, flags=flags, data=data)


def udp(sport: int, dport: int, data: bytes) -> dpkt.udp.UDP:
    return dpkt.udp.UDP(sport=sport, dport=dport, data=data, ulen=8 + len(data))


def eth(ip: dpkt.Packet) -> bytes:
    etype = 0x86DD if isinstance(ip, dpkt.ip6.IP6) else 0x0800
    return b"\x02" * 6 + b"\x04" * 6 + struct.pack(">H", etype) + bytes(ip)


def write_pcap(path: Path, frames: Iterable[tuple[float, bytes]], linktype: int = dpkt.pcap.DLT_EN10MB) -> Path:
    with open(path, "wb") as fh:
        w = dpkt.pcap.Writer(fh, linktype=linktype)
        for ts, frame in frames:
            w.writepkt(frame, ts=ts)
    return path


def read_flows(out: Path) -> list[dict]:
    table = ds.dataset(str(out), format="parquet", partitioning="hive").to_table()
    return sorted(table.to_pylist(), key=lambda r: (r["ts"], r["flow_id"]))


def dns_query(name: str, qid: int) -> bytes:
    msg = dns.message.make_query(name, "A")
    msg.id = qid
    return msg.to_wire()


# ------------------------------------------------------------------------------------------ crafted
def test_known_number_of_dns_transactions(tmp_path: Path) -> None:
    frames = []
    for i in range(25):
        q = dns_query(f"h{i}.corpus.test", i)
        r = dns.message.make_response(dns.message.from_wire(q)).to_wire()
        frames.append((T0 + i, eth(ip4("10.0.0.1", "10.0.0.53", udp(40000 + i, 53, q), 17))))
        frames.append((T0 + i + 0.001, eth(ip4("10.0.0.53", "10.0.0.1", udp(53, 40000 + i, r), 17))))
    rep = ingest([str(write_pcap(tmp_path / "dns.pcap", frames))], str(tmp_path / "out"))
    flows = read_flows(tmp_path / "out")
    assert rep.packets == 50 and rep.flows == 25 == len(flows) and not rep.partial
    for i, f in enumerate(flows):
        assert (f["src_ip"], f["src_port"], f["dst_ip"], f["dst_port"], f["proto"]) == (
            "10.0.0.1",
            40000 + i,
            "10.0.0.53",
            53,
            17,
        )
        assert dns.message.from_wire(f["orig_payload_prefix"]).id == i
        assert f["orig_pkts"] == f["resp_pkts"] == 1
        assert f["resp_payload_prefix"][:2] == struct.pack(">H", i)


def test_schema_partitioning_and_rerun_is_identical(tmp_path: Path) -> None:
    day2 = T0 + 86400
    frames = [
        (T0, eth(ip4("10.0.0.1", "10.0.0.2", udp(1111, 53, b"x" * 100), 17))),
        (day2, eth(ip4("10.0.0.1", "10.0.0.2", udp(1112, 53, b"y"), 17))),
    ]
    pcap = write_pcap(tmp_path / "two-days.pcap", frames)
    out = tmp_path / "out"
    rep = ingest([str(pcap)], str(out))
    assert rep.dates == ["2023-11-14", "2023-11-15"]
    files = sorted(out.rglob("*.parquet"))
    assert [p.parent.name for p in files] == ["date=2023-11-14", "date=2023-11-15"]
    import pyarrow.parquet as pq

    assert pq.read_schema(files[0]).remove_metadata() == SCHEMA  # `date` is only the directory
    first = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in files}
    ingest([str(pcap)], str(out))
    assert {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.rglob("*.parquet"))} == first
    flows = read_flows(out)
    assert flows[0]["orig_payload_prefix"] == b"x" * 64 and flows[0]["orig_bytes"] == 100
    assert flows[0]["resp_payload_prefix"] is None  # the responder never answered


def test_tcp_reassembly_out_of_order_and_retransmission(tmp_path: Path) -> None:
    c, s = ("10.1.0.1", 50000), ("10.1.0.2", 53)
    A, PA, SYN, SA = dpkt.tcp.TH_ACK, dpkt.tcp.TH_PUSH | dpkt.tcp.TH_ACK, dpkt.tcp.TH_SYN, 0x12

    def fwd(seq: int, flags: int, data: bytes = b"") -> bytes:
        return eth(ip4(c[0], s[0], tcp(c[1], s[1], seq, flags, data), 6))

    def rev(seq: int, flags: int, data: bytes = b"") -> bytes:
        return eth(ip4(s[0], c[0], tcp(s[1], c[1], seq, flags, data), 6))

    isn, risn = 0xFFFFFFF0, 5000  # the client's sequence numbers wrap around 2**32
    o = (isn + 1) & 0xFFFFFFFF
    frames = [
        fwd(isn, SYN),
        rev(risn, SA),
        fwd(o, A),
        fwd(o, PA, b"AAAA"),
        fwd((o + 8) & 0xFFFFFFFF, PA, b"CCCC"),  # arrives before BBBB
        fwd((o + 4) & 0xFFFFFFFF, PA, b"BBBB"),
        fwd(o, PA, b"AAAA"),  # retransmission
        fwd((o + 2) & 0xFFFFFFFF, PA, b"XXXXXX"),  # overlapping retransmission: first copy wins
        fwd((o + 12) & 0xFFFFFFFF, PA, b"D" * 100),  # more than the 64-byte prefix
        rev(risn + 1, PA, b"hello"),
        fwd((o + 112) & 0xFFFFFFFF, dpkt.tcp.TH_FIN | A),
        rev(risn + 6, dpkt.tcp.TH_FIN | A),
    ]
    pcap = write_pcap(tmp_path / "ooo.pcap", [(T0 + i * 0.01, f) for i, f in enumerate(frames)])
    ingest([str(pcap)], str(tmp_path / "out"))
    (f,) = read_flows(tmp_path / "out")
    assert f["orig_payload_prefix"] == (b"AAAABBBBCCCC" + b"D" * 100)[:64]
    assert f["resp_payload_prefix"] == b"hello"
    assert (f["src_ip"], f["src_port"], f["proto"]) == ("10.1.0.1", 50000, 6)
    assert f["orig_pkts"] == 9 and f["resp_pkts"] == 3
    assert f["duration"] == pytest.approx(0.11)


def test_gap_in_stream_stops_prefix_and_synack_first_sets_initiator(tmp_path: Path) -> None:
    # The SYN is missing: the receiver of the SYN-ACK is still the initiator.
    frames = [
        eth(ip4("10.2.0.2", "10.2.0.1", tcp(53, 41000, 700, 0x12), 6)),
        eth(ip4("10.2.0.1", "10.2.0.2", tcp(41000, 53, 101, dpkt.tcp.TH_ACK, b"abc"), 6)),
        eth(ip4("10.2.0.1", "10.2.0.2", tcp(41000, 53, 110, dpkt.tcp.TH_ACK, b"zzz"), 6)),  # gap at 104
    ]
    pcap = write_pcap(tmp_path / "gap.pcap", [(T0 + i, f) for i, f in enumerate(frames)])
    ingest([str(pcap)], str(tmp_path / "out"))
    (f,) = read_flows(tmp_path / "out")
    assert (f["src_ip"], f["src_port"], f["dst_port"]) == ("10.2.0.1", 41000, 53)
    assert f["orig_payload_prefix"] == b"abc" and f["orig_bytes"] == 6
    assert f["resp_payload_prefix"] == b""  # the responder sent packets but no payload


def test_udp_idle_timeout_splits_flows(tmp_path: Path) -> None:
    frames = [
        (T0, eth(ip4("10.3.0.1", "10.3.0.2", udp(5000, 53, b"one"), 17))),
        (T0 + 30, eth(ip4("10.3.0.2", "10.3.0.1", udp(53, 5000, b"two"), 17))),
        (T0 + 200, eth(ip4("10.3.0.1", "10.3.0.2", udp(5000, 53, b"three"), 17))),
    ]
    pcap = write_pcap(tmp_path / "idle.pcap", frames)
    rep = ingest([str(pcap)], str(tmp_path / "a"), idle_timeout=60)
    assert rep.flows == 2
    assert [f["orig_payload_prefix"] for f in read_flows(tmp_path / "a")] == [b"one", b"three"]
    assert ingest([str(pcap)], str(tmp_path / "b"), idle_timeout=600).flows == 1


def _link_frames() -> dict[int, list[bytes]]:
    v4 = bytes(ip4("10.4.0.1", "10.4.0.2", udp(3000, 53, b"v4-payload"), 17))
    v6 = bytes(ip6("2001:db8::1", "2001:db8::53", tcp(3001, 53, 1, dpkt.tcp.TH_SYN), 6))
    vlan = b"\x02" * 6 + b"\x04" * 6 + b"\x81\x00\x00\x64\x08\x00" + v4
    qinq = b"\x02" * 6 + b"\x04" * 6 + b"\x88\xa8\x00\x0a\x81\x00\x00\x64\x86\xdd" + v6
    sll = struct.pack(">HHH8sH", 0, 772, 6, b"\0" * 8, 0x0800) + v4
    sll6 = struct.pack(">HHH8sH", 4, 772, 6, b"\0" * 8, 0x86DD) + v6
    sll2 = struct.pack(">HHIHBB8s", 0x0800, 0, 1, 772, 0, 6, b"\0" * 8) + v4
    return {
        dpkt.pcap.DLT_EN10MB: [vlan, qinq],
        113: [sll, sll6],  # LINUX_SLL
        276: [sll2],  # LINUX_SLL2
        dpkt.pcap.DLT_NULL: [struct.pack("<I", 2) + v4, struct.pack("<I", 30) + v6],
        108: [struct.pack(">I", 2) + v4],  # DLT_LOOP (OpenBSD): network byte order
        101: [v4, v6],  # LINKTYPE_RAW
    }


@pytest.mark.parametrize("linktype", list(_link_frames()))
def test_link_types(tmp_path: Path, linktype: int) -> None:
    frames = _link_frames()[linktype]
    pcap = write_pcap(tmp_path / "l.pcap", [(T0 + i, f) for i, f in enumerate(frames)], linktype=linktype)
    rep = ingest([str(pcap)], str(tmp_path / "out"))
    flows = read_flows(tmp_path / "out")
    assert rep.flows == len(frames) == len(flows)
    for f in flows:
        if f["proto"] == 17:
            assert (f["src_ip"], f["orig_payload_prefix"]) == ("10.4.0.1", b"v4-payload")
        else:
            assert (f["src_ip"], f["dst_ip"], f["dst_port"]) == ("2001:db8::1", "2001:db8::53", 53)


def test_pcapng_and_folder(tmp_path: Path) -> None:
    folder = tmp_path / "caps"
    folder.mkdir()
    with open(folder / "a.pcapng", "wb") as fh:
        w = dpkt.pcapng.Writer(fh)
        w.writepkt(eth(ip4("10.5.0.1", "10.5.0.2", udp(1, 53, b"ng"), 17)), ts=T0)
    write_pcap(folder / "b.pcap", [(T0, eth(ip4("10.5.0.1", "10.5.0.2", udp(2, 53, b"classic"), 17)))])
    (folder / "notes.txt").write_text("not a capture; ignored in a folder")
    seen: list[tuple[int, int]] = []
    rep = ingest([str(folder)], str(tmp_path / "out"), progress=lambda d, t: seen.append((d, t)))
    assert rep.files == 2 and rep.flows == 2
    assert {f["orig_payload_prefix"] for f in read_flows(tmp_path / "out")} == {b"ng", b"classic"}
    assert seen and seen[-1][0] == seen[-1][1]


def _three_flow_pcap(path: Path) -> tuple[Path, int]:
    frames = [(T0 + i, eth(ip4("10.6.0.1", "10.6.0.2", udp(7000 + i, 53, b"q%d" % i), 17))) for i in range(3)]
    write_pcap(path, frames)
    last_record = 24 + 2 * (16 + len(frames[0][1]))  # file header + two complete records
    return path, last_record


def test_truncated_pcap_raises_with_file_and_offset(tmp_path: Path) -> None:
    pcap, last_record = _three_flow_pcap(tmp_path / "cut.pcap")
    pcap.write_bytes(pcap.read_bytes()[:-5])
    with pytest.raises(CaptureError) as exc:
        ingest([str(pcap)], str(tmp_path / "out"))
    assert str(pcap) in str(exc.value) and f"offset {last_record}" in str(exc.value)
    assert "--keep-partial" in str(exc.value)
    assert exc.value.offset == last_record
    assert not (tmp_path / "out").exists()  # nothing written without --keep-partial
    rep = ingest([str(pcap)], str(tmp_path / "out"), keep_partial=True)
    assert rep.partial and rep.flows == 2
    assert [f["src_port"] for f in read_flows(tmp_path / "out")] == [7000, 7001]


def test_truncated_record_header_and_corrupt_pcapng(tmp_path: Path) -> None:
    pcap, last_record = _three_flow_pcap(tmp_path / "hdr.pcap")
    pcap.write_bytes(pcap.read_bytes()[: last_record + 7])  # cut inside the record header
    with pytest.raises(CaptureError, match=f"offset {last_record}"):
        ingest([str(pcap)], str(tmp_path / "o1"))
    ng = tmp_path / "bad.pcapng"
    with open(ng, "wb") as fh:
        w = dpkt.pcapng.Writer(fh)
        for i in range(2):
            w.writepkt(eth(ip4("10.7.0.1", "10.7.0.2", udp(9000 + i, 53, b"x"), 17)), ts=T0 + i)
    raw = bytearray(ng.read_bytes())
    size_before = len(raw)
    raw += struct.pack("<II", 6, 0xFFFFFF00)  # a block claiming a length no file has
    ng.write_bytes(bytes(raw))
    with pytest.raises(CaptureError, match=f"offset {size_before}"):
        ingest([str(ng)], str(tmp_path / "o2"))
    assert ingest([str(ng)], str(tmp_path / "o2"), keep_partial=True).flows == 2
    junk = tmp_path / "junk.pcap"
    junk.write_bytes(b"hello, I am not a capture")
    with pytest.raises(CaptureError, match="offset 0"):
        ingest([str(junk)], str(tmp_path / "o3"))


# ------------------------------------------------------------------------------------------ corpus
def _labels() -> list[dict[str, str]]:
    with open(CORPUS / "labels.csv", newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def corpus_flows(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict]]:
    """Ingest each corpus capture on its own: file name -> flows."""
    out: dict[str, list[dict]] = {}
    for pcap in sorted(CORPUS.glob("*.pcap")):
        d = tmp_path_factory.mktemp(pcap.stem)
        rep = ingest([str(pcap)], str(d))
        out[pcap.name] = read_flows(d) if rep.flows else []
    return out


def test_every_label_matches_an_ingested_flow(corpus_flows: dict[str, list[dict]]) -> None:
    labels = _labels()
    assert labels
    by_id = {(name, f["flow_id"]): f for name, flows in corpus_flows.items() for f in flows}
    for row in labels:
        f = by_id[(row["file"], row["flow_id"])]
        assert (f["src_ip"], f["src_port"], f["dst_ip"], f["dst_port"], f["proto"]) == (
            row["src_ip"],
            int(row["src_port"]),
            row["dst_ip"],
            int(row["dst_port"]),
            int(row["proto"]),
        )
    assert len(by_id) == len(labels)  # and every ingested flow is labelled


def test_corpus_flow_count_matches_independent_dpkt_count(corpus_flows: dict[str, list[dict]]) -> None:
    # Each DNS client query uses a fresh source port, so distinct 5-tuples = transactions (UDP and TCP).
    for name in [n for n in corpus_flows if n.startswith("dns-")]:
        tuples = set()
        with open(CORPUS / name, "rb") as fh:
            for _ts, buf in dpkt.pcap.Reader(fh):
                ip = dpkt.ethernet.Ethernet(buf).data
                l4 = ip.data
                a, b = (ip.src, l4.sport), (ip.dst, l4.dport)
                tuples.add((ip.p, *sorted([a, b])))
        assert len(corpus_flows[name]) == len(tuples), name


def test_corpus_dns_prefixes_are_dns(corpus_flows: dict[str, list[dict]]) -> None:
    labels = {(r["file"], r["flow_id"]): r for r in _labels()}
    checked_tcp = checked_udp = 0
    for name, flows in corpus_flows.items():
        for f in flows:
            if labels[(name, f["flow_id"])]["label"] not in ("dns", "dns-tunnel"):
                continue
            p = f["orig_payload_prefix"]
            if f["proto"] == 6 and p:
                length = struct.unpack(">H", p[:2])[0]
                assert length + 2 <= f["orig_bytes"]
                if length + 2 <= len(p):  # the whole first message is in the prefix: parse it
                    dns.message.from_wire(p[2 : 2 + length], question_only=True)
                    checked_tcp += 1
            elif f["proto"] == 17 and f["orig_bytes"] <= 64:
                msg = dns.message.from_wire(p, question_only=True)
                assert len(p) == f["orig_bytes"] and msg.opcode() in (0, 4, 5)
                checked_udp += 1
    assert checked_tcp >= 10 and checked_udp >= 50


# What each protocol's client sends first, from the protocols' specifications.
FIRST_BYTES = {
    "ssh": lambda p: p.startswith(b"SSH-2.0-"),
    "http": lambda p: p.startswith((b"GET ", b"POST ")),
    "redis": lambda p: p.startswith(b"*"),  # RESP array
    "tls": lambda p: p[:2] == b"\x16\x03",  # handshake record
    # SSLRequest, or a StartupMessage (protocol 3.0) when psql runs with sslmode=disable
    "postgresql": lambda p: p[:8] == b"\x00\x00\x00\x08\x04\xd2\x16\x2f" or p[4:8] == b"\x00\x03\x00\x00",
    "socks5": lambda p: p[0] == 5,  # version 5 greeting
    "mqtt": lambda p: p[0] == 0x10,  # CONNECT
    # P_CONTROL_HARD_RESET_CLIENT_V2, after a 2-byte length over TCP (static-key mode has no opcode)
    "openvpn": lambda p: p[0] == 0x38 or p[2] == 0x38,
    "ntp": lambda p: p[0] & 7 == 3 and len(p) == 48,  # mode 3 = client
    "snmp": lambda p: p[0] == 0x30,  # ASN.1 SEQUENCE
    "syslog": lambda p: p.startswith(b"<"),  # <PRI>
    "tftp": lambda p: p[:2] in (b"\x00\x01", b"\x00\x02"),  # RRQ / WRQ
    "sip": lambda p: p.startswith((b"INVITE ", b"ACK ", b"BYE ", b"OPTIONS ")),
    "radius": lambda p: p[0] in (1, 4, 12),  # Access-Request, Accounting-Request, Status-Server
    "stun": lambda p: p[4:8] == b"\x21\x12\xa4\x42",  # magic cookie
}


@pytest.mark.parametrize("label", sorted(FIRST_BYTES))
def test_corpus_protocol_prefixes(corpus_flows: dict[str, list[dict]], label: str) -> None:
    labels = {(r["file"], r["flow_id"]): r for r in _labels()}
    flows = [
        f
        for n, fl in corpus_flows.items()
        for f in fl
        if labels[(n, f["flow_id"])]["label"] == label and labels[(n, f["flow_id"])]["tool"] != "openvpn-static-key"
    ]
    with_data = [f for f in flows if f["orig_payload_prefix"]]
    assert with_data, label
    assert all(FIRST_BYTES[label](f["orig_payload_prefix"]) for f in with_data), label
    if label == "ssh":
        assert all(f["resp_payload_prefix"].startswith(b"SSH-2.0-OpenSSH") for f in with_data)


def test_nanosecond_pcap_and_fragments(tmp_path: Path) -> None:
    first = ip4("10.8.0.1", "10.8.0.2", udp(6000, 53, b"A" * 40), 17)
    first.mf = 1  # first fragment: carries the UDP header, so it starts the flow
    later = dpkt.ip.IP(src=first.src, dst=first.dst, p=17, offset=48, data=b"B" * 40)
    later.len = len(later)
    path = tmp_path / "nano.pcap"
    with open(path, "wb") as fh:
        w = dpkt.pcap.Writer(fh, nano=True)
        w.writepkt(eth(first), ts=T0 + 0.123456789)
        w.writepkt(eth(later), ts=T0 + 0.2)  # no ports: not attributed to any flow
    rep = ingest([str(path)], str(tmp_path / "out"))
    (f,) = read_flows(tmp_path / "out")
    assert rep.packets == 2 and f["orig_pkts"] == 1 and f["orig_payload_prefix"] == b"A" * 40
    assert f["ts"].timestamp() == pytest.approx(T0 + 0.123457, abs=1e-6)


def test_unsupported_link_type_is_named(tmp_path: Path) -> None:
    pcap = write_pcap(tmp_path / "wifi.pcap", [(T0, b"\x00" * 40)], linktype=105)  # 802.11
    with pytest.raises(CaptureError, match="unsupported link type 105"):
        ingest([str(pcap)], str(tmp_path / "out"))


def test_corpus_tunnels_look_like_dns_queries(corpus_flows: dict[str, list[dict]]) -> None:
    # iodine, dns2tcp and a dig exfiltration loop speak well-formed DNS: a query header with one question.
    labels = {(r["file"], r["flow_id"]): r for r in _labels()}
    tunnels = [(n, f) for n, fl in corpus_flows.items() for f in fl
               if labels[(n, f["flow_id"])]["label"] == "dns-tunnel"]
    assert {"iodine", "dns2tcp"} <= {labels[(n, f["flow_id"])]["tool"] for n, f in tunnels}
    assert len(tunnels) >= 300
    for name, f in tunnels:
        p = f["orig_payload_prefix"]
        flags, qdcount = struct.unpack(">HH", p[2:6])
        assert flags & 0x8000 == 0 and (flags >> 11) & 0xF == 0 and qdcount == 1
        if not name.startswith("net-"):  # the first captures: one client socket per tunnel session
            assert f["orig_pkts"] > 5 and f["resp_pkts"] > 0


def test_streamed_row_groups_and_failed_rerun_leaves_archive_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pyarrow.parquet as pq

    import portprint.jobs.ingest as ingest_module

    monkeypatch.setattr(ingest_module, "BATCH_ROWS", 2)  # force several row groups and early staging
    frames = [(T0 + i, eth(ip4("10.9.0.1", "10.9.0.2", udp(8000 + i, 53, b"z"), 17))) for i in range(5)]
    good = write_pcap(tmp_path / "good.pcap", frames)
    out = tmp_path / "out"
    assert ingest([str(good)], str(out)).flows == 5
    (part,) = out.rglob("*.parquet")
    assert pq.ParquetFile(part).metadata.num_row_groups == 3
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    bad, _ = _three_flow_pcap(tmp_path / "bad.pcap")
    bad.write_bytes(bad.read_bytes()[:-3])
    with pytest.raises(CaptureError):
        ingest([str(good), str(bad)], str(out))
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert [p.name for p in out.iterdir()] == ["date=2023-11-14"]  # no staging folder left behind

"""ingest opens the tunnels Zeek and Suricata open, and names link types it cannot read.

Every capture here is built around real DNS messages (dnspython's wire format). IP, UDP, TCP and Ethernet
come from dpkt; the tunnel headers (GRE, MPLS, VXLAN, Geneve) are packed by hand from their RFCs, so the
parser under test never checks its own writer. The expected rows are the inner flow as the test built it.
"""

from __future__ import annotations

import socket
import struct
from pathlib import Path

import dns.message
import dns.rrset
import dpkt
import pyarrow.dataset as ds
import pytest

from portprint.jobs.ingest import CaptureError, UnsupportedLinkType, ingest

T0 = 1_700_000_000.0
CLIENT, SERVER = "10.20.0.7", "10.20.0.53"
CLIENT6, SERVER6 = "2001:db8:20::7", "2001:db8:20::53"
OUTER_A, OUTER_B = "192.0.2.1", "192.0.2.2"
OUTER6_A, OUTER6_B = "2001:db8:ff::1", "2001:db8:ff::2"


# ------------------------------------------------------------------------------------------ builders
def query(name: str, qid: int) -> bytes:
    msg = dns.message.make_query(name, "TXT")
    msg.id = qid
    return msg.to_wire()


def response(name: str, qid: int) -> bytes:
    q = dns.message.make_query(name, "TXT")
    q.id = qid
    r = dns.message.make_response(q)
    r.answer.append(dns.rrset.from_text(name.rstrip(".") + ".", 60, "IN", "TXT", '"hello"'))
    return r.to_wire()


def v4(src: str, dst: str, p: int, payload: bytes) -> bytes:
    pkt = dpkt.ip.IP(src=socket.inet_aton(src), dst=socket.inet_aton(dst), p=p, ttl=64, data=payload)
    pkt.len = 20 + len(payload)
    return bytes(pkt)


def v6(src: str, dst: str, nxt: int, payload: bytes) -> bytes:
    pkt = dpkt.ip6.IP6(src=socket.inet_pton(socket.AF_INET6, src), dst=socket.inet_pton(socket.AF_INET6, dst),
                       nxt=nxt, hlim=64, plen=len(payload))
    pkt.data = payload
    return bytes(pkt)


def udp(sport: int, dport: int, data: bytes) -> bytes:
    return bytes(dpkt.udp.UDP(sport=sport, dport=dport, ulen=8 + len(data), data=data))


def tcp(sport: int, dport: int, seq: int, flags: int, data: bytes = b"") -> bytes:
    return bytes(dpkt.tcp.TCP(sport=sport, dport=dport, seq=seq, flags=flags, data=data))


def ether(payload: bytes, etype: int) -> bytes:
    return b"\x02\x00\x00\x00\x00\x01" + b"\x02\x00\x00\x00\x00\x02" + struct.pack(">H", etype) + payload


def ether_ip(ip: bytes) -> bytes:
    return ether(ip, 0x86DD if ip[0] >> 4 == 6 else 0x0800)


def gre(payload: bytes, ptype: int, key: int | None = None, seq: int | None = None) -> bytes:
    """RFC 2784/2890: flags (C, K, S bits), version 0, protocol type, then key and sequence when flagged."""
    flags = (0x2000 if key is not None else 0) | (0x1000 if seq is not None else 0)
    head = struct.pack(">HH", flags, ptype)
    head += struct.pack(">I", key) if key is not None else b""
    head += struct.pack(">I", seq) if seq is not None else b""
    return head + payload


def mpls(payload: bytes, labels: list[int]) -> bytes:
    """RFC 3032 label stack entries: label (20 bits), traffic class (3), bottom of stack (1), TTL (8)."""
    out = b""
    for i, label in enumerate(labels):
        bottom = 1 if i == len(labels) - 1 else 0
        out += struct.pack(">I", (label << 12) | (bottom << 8) | 64)
    return out + payload


def vxlan(frame: bytes, vni: int) -> bytes:
    """RFC 7348: flags (I bit 0x08), 24 reserved bits, the 24-bit VNI, 8 reserved bits."""
    return struct.pack(">B3s", 0x08, b"\0\0\0") + struct.pack(">I", vni << 8) + frame


def geneve(payload: bytes, ptype: int, vni: int, options: bytes = b"") -> bytes:
    """RFC 8926: version 0 and option length in 4-byte words, flags, protocol type, VNI, reserved; options."""
    assert len(options) % 4 == 0
    return struct.pack(">BBH", len(options) // 4, 0, ptype) + struct.pack(">I", vni << 8) + options + payload


def dns_udp(ip_v6: bool = False, sport: int = 33000) -> tuple[bytes, bytes, bytes, bytes]:
    """(query IP packet, response IP packet, query wire, response wire) of one DNS exchange."""
    q, r = query("tunnelled.example.org", 0x1234), response("tunnelled.example.org", 0x1234)
    if ip_v6:
        return (v6(CLIENT6, SERVER6, 17, udp(sport, 53, q)), v6(SERVER6, CLIENT6, 17, udp(53, sport, r)), q, r)
    return v4(CLIENT, SERVER, 17, udp(sport, 53, q)), v4(SERVER, CLIENT, 17, udp(53, sport, r)), q, r


def outer_v4(p: int, inner: bytes, reverse: bool = False) -> bytes:
    a, b = (OUTER_B, OUTER_A) if reverse else (OUTER_A, OUTER_B)
    return ether_ip(v4(a, b, p, inner))


def outer_v6(nxt: int, inner: bytes, reverse: bool = False) -> bytes:
    a, b = (OUTER6_B, OUTER6_A) if reverse else (OUTER6_A, OUTER6_B)
    return ether_ip(v6(a, b, nxt, inner))


def outer_udp(dport: int, inner: bytes, reverse: bool = False) -> bytes:
    return outer_v4(17, udp(51000, dport, inner), reverse)


# Each case: the two frames of one DNS exchange inside a tunnel, and whether the inner flow is IPv6.
def _cases() -> dict[str, tuple[list[bytes], bool]]:
    q4, r4, _, _ = dns_udp()
    q6, r6, _, _ = dns_udp(ip_v6=True)
    cases = {
        "ipip-4in4": ([outer_v4(4, q4), outer_v4(4, r4, True)], False),
        "ipip-6in4": ([outer_v4(41, q6), outer_v4(41, r6, True)], True),
        "ipip-4in6": ([outer_v6(4, q4), outer_v6(4, r4, True)], False),
        "ipip-6in6": ([outer_v6(41, q6), outer_v6(41, r6, True)], True),
        "gre-ip": ([outer_v4(47, gre(q4, 0x0800)), outer_v4(47, gre(r4, 0x0800), True)], False),
        "gre-key-seq-ipv6": ([outer_v6(47, gre(q6, 0x86DD, key=7, seq=1)),
                              outer_v6(47, gre(r6, 0x86DD, key=7, seq=2), True)], True),
        "gre-ethernet": ([outer_v4(47, gre(ether_ip(q4), 0x6558)), outer_v4(47, gre(ether_ip(r4), 0x6558), True)],
                         False),
        "gre-mpls": ([outer_v4(47, gre(mpls(q4, [16, 17]), 0x8847)),
                      outer_v4(47, gre(mpls(r4, [18]), 0x8847), True)], False),
        "mpls-ethernet": ([ether(mpls(q4, [100, 200]), 0x8847), ether(mpls(r4, [300]), 0x8847)], False),
        "mpls-ethernet-ipv6": ([ether(mpls(q6, [100]), 0x8847), ether(mpls(r6, [100]), 0x8847)], True),
        "vxlan": ([outer_udp(4789, vxlan(ether_ip(q4), 42)), outer_udp(4789, vxlan(ether_ip(r4), 42), True)],
                  False),
        "vxlan-vlan-ipv6": ([outer_udp(4789, vxlan(ether(b"\x00\x64\x86\xdd" + q6, 0x8100), 9)),
                             outer_udp(4789, vxlan(ether(b"\x00\x64\x86\xdd" + r6, 0x8100), 9), True)], True),
        "geneve-ethernet-options": ([outer_udp(6081, geneve(ether_ip(q4), 0x6558, 5, options=b"\x01" * 8)),
                                     outer_udp(6081, geneve(ether_ip(r4), 0x6558, 5, options=b"\x02" * 12), True)],
                                    False),
        "geneve-ipv6": ([outer_udp(6081, geneve(q6, 0x86DD, 5)), outer_udp(6081, geneve(r6, 0x86DD, 5), True)], True),
        "gre-udp": ([outer_udp(4754, gre(q4, 0x0800)), outer_udp(4754, gre(r4, 0x0800), True)], False),
        # Tunnels in tunnels: VXLAN in GRE in IPv6, and MPLS in GRE in IPv4-in-IPv4.
        "vxlan-in-gre": ([outer_v6(47, gre(v4(OUTER_A, OUTER_B, 17, udp(5, 4789, vxlan(ether_ip(q4), 1))), 0x0800)),
                          outer_v6(47, gre(v4(OUTER_B, OUTER_A, 17, udp(5, 4789, vxlan(ether_ip(r4), 1))), 0x0800),
                                   True)], False),
        "mpls-in-gre-in-ipip": ([outer_v4(4, v4(OUTER_A, OUTER_B, 47, gre(mpls(q4, [5]), 0x8847))),
                                 outer_v4(4, v4(OUTER_B, OUTER_A, 47, gre(mpls(r4, [5]), 0x8847)), True)], False),
    }
    return cases


def write_pcap(path: Path, frames: list[bytes], linktype: int = dpkt.pcap.DLT_EN10MB) -> Path:
    with open(path, "wb") as fh:
        w = dpkt.pcap.Writer(fh, linktype=linktype)
        for i, frame in enumerate(frames):
            w.writepkt(frame, ts=T0 + i * 0.01)
    return path


def rows(out: Path) -> list[dict]:
    return sorted(ds.dataset(str(out), format="parquet", partitioning="hive").to_table().to_pylist(),
                  key=lambda r: (r["ts"], r["flow_id"]))


# ------------------------------------------------------------------------------------------ tests
@pytest.mark.parametrize("case", list(_cases()))
def test_dns_inside_a_tunnel_lands_as_the_inner_flow(tmp_path, case):
    frames, is6 = _cases()[case]
    _, _, q, r = dns_udp()
    rep = ingest([str(write_pcap(tmp_path / f"{case}.pcap", frames))], str(tmp_path / "out"))
    got = rows(tmp_path / "out")
    assert rep.packets == 2 and rep.flows == len(got) == 1, got  # the tunnel itself makes no flow
    f = got[0]
    client, server = (CLIENT6, SERVER6) if is6 else (CLIENT, SERVER)
    assert (f["src_ip"], f["dst_ip"], f["src_port"], f["dst_port"], f["proto"]) == (client, server, 33000, 53, 17)
    assert f["orig_payload_prefix"] == q[:64] and f["resp_payload_prefix"] == r[:64]
    assert (f["orig_bytes"], f["resp_bytes"], f["orig_pkts"], f["resp_pkts"]) == (len(q), len(r), 1, 1)
    assert f["ts"].timestamp() == pytest.approx(T0, abs=1e-6)
    assert dns.message.from_wire(f["orig_payload_prefix"]).question[0].name.to_text() == "tunnelled.example.org."


def test_dns_over_tcp_inside_vxlan_is_reassembled(tmp_path):
    q = query("tcp.tunnelled.example.org", 77)
    framed = struct.pack(">H", len(q)) + q
    S, A, PA = dpkt.tcp.TH_SYN, dpkt.tcp.TH_ACK, dpkt.tcp.TH_PUSH | dpkt.tcp.TH_ACK

    def wrap(src: str, dst: str, seg: bytes, back: bool) -> bytes:
        return outer_udp(4789, vxlan(ether_ip(v4(src, dst, 6, seg)), 3), back)

    frames = [wrap(CLIENT, SERVER, tcp(40000, 53, 100, S), False),
              wrap(SERVER, CLIENT, tcp(53, 40000, 900, S | A), True),
              wrap(CLIENT, SERVER, tcp(40000, 53, 101 + 20, PA, framed[20:]), False),  # second half first
              wrap(CLIENT, SERVER, tcp(40000, 53, 101, PA, framed[:20]), False)]
    ingest([str(write_pcap(tmp_path / "t.pcap", frames))], str(tmp_path / "out"))
    (f,) = rows(tmp_path / "out")
    assert (f["src_ip"], f["dst_port"], f["proto"]) == (CLIENT, 53, 6)
    assert f["orig_payload_prefix"] == framed[:64] and f["orig_bytes"] == len(framed)


def test_tunnels_without_ip_or_too_deep_make_no_flow_and_udp_4789_that_is_not_vxlan_is_a_flow(tmp_path):
    q4 = dns_udp()[0]
    arp = ether(b"\x00\x01\x08\x00\x06\x04\x00\x01" + b"\x00" * 20, 0x0806)
    deep = q4
    for _ in range(6):
        deep = v4(OUTER_A, OUTER_B, 4, deep)
    not_vxlan = b"\x00" * 8 + b"some other protocol on 4789"  # the I flag is clear
    frames = [outer_udp(4789, vxlan(arp, 1)), ether_ip(deep), outer_udp(4789, not_vxlan)]
    rep = ingest([str(write_pcap(tmp_path / "x.pcap", frames))], str(tmp_path / "out"))
    got = rows(tmp_path / "out")
    assert rep.flows == 1
    assert (got[0]["dst_port"], got[0]["src_ip"], got[0]["orig_payload_prefix"]) == (4789, OUTER_A, not_vxlan[:64])


@pytest.mark.parametrize("keep_partial", [False, True])
def test_an_unsupported_link_type_is_named_not_called_damaged(tmp_path, keep_partial):
    good = write_pcap(tmp_path / "a-good.pcap", [ether_ip(dns_udp()[0])])
    fddi = write_pcap(tmp_path / "b-ring.pcap", [b"\x50" + b"\x00" * 12 + b"\xaa\xaa\x03\x00\x00\x00\x08\x00"
                                                 + dns_udp()[0]], linktype=10)
    with pytest.raises(UnsupportedLinkType) as info:
        ingest([str(good), str(fddi)], str(tmp_path / "out"), keep_partial=keep_partial)
    text = str(info.value)
    assert text.startswith(f"{fddi}: unsupported link type 10 (FDDI)")
    assert "unreadable" not in text and "damaged" not in text and "--keep-partial" not in text
    assert isinstance(info.value, CaptureError)  # the command line reports it like any capture problem
    assert not (tmp_path / "out").exists()  # nothing written, and nothing labelled partial


def test_a_pcapng_that_ends_in_a_statistics_block_is_read_whole(tmp_path):
    """Capture tools end a pcapng with an Interface Statistics Block (type 5, RFC draft pcapng §4.6): no packet,
    and no damage either."""
    path = tmp_path / "stats.pcapng"
    q4, r4, q, _ = dns_udp()
    with open(path, "wb") as fh:
        w = dpkt.pcapng.Writer(fh)
        w.writepkt(ether_ip(q4), ts=T0)
        w.writepkt(ether_ip(r4), ts=T0 + 0.01)
        body = struct.pack("<III", 0, 0, 0)  # interface 0, timestamp high and low; no options
        fh.write(struct.pack("<II", 5, 12 + len(body)) + body + struct.pack("<I", 12 + len(body)))
    rep = ingest([str(path)], str(tmp_path / "out"))
    (f,) = rows(tmp_path / "out")
    assert rep.packets == 2 and not rep.partial and f["orig_payload_prefix"] == q[:64] and f["resp_pkts"] == 1

"""Turn pcap/pcapng captures into a flow archive (see shared README §1 for the contract).

The file formats and the link/IP/TCP/UDP headers are parsed by dpkt; this module only keeps the flow
table: it pairs the two directions of a 5-tuple, reassembles the first 64 bytes of each TCP stream
(as Arkime does: by sequence number, so retransmissions and out-of-order segments land where they
belong) and writes one Parquet file per UTC day under ``out/date=YYYY-MM-DD/``.

Tunnels are opened as Zeek and Suricata open them: IP-in-IP (4in4, 6in4, 4in6, 6in6), GRE (IP, Ethernet,
MPLS, PPP payloads; also GRE over UDP 4754), VXLAN (UDP 4789), Geneve (UDP 6081) and MPLS label stacks.
The innermost flow is what lands in the archive; the tunnel's own outer packets make no flow.
Called by `portprint ingest` (jobs/cli.py).
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import socket
import struct
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, BinaryIO

import dpkt
import pyarrow as pa
import pyarrow.parquet as pq

from portprint.jobs.warehouse.tables import FLOWS

PREFIX_LEN = 64
# Arkime's default tcpTimeout: an open TCP connection silent this long is considered gone.
TCP_IDLE_TIMEOUT = 480.0
# No sane capture record is bigger than this; a larger length field means the file is corrupt
# (and must not make us allocate gigabytes).
MAX_RECORD_BYTES = 64 * 1024 * 1024
CAPTURE_SUFFIXES = (".pcap", ".pcapng", ".cap", ".dmp")
PROGRESS_EVERY = 20_000
SWEEP_EVERY = 50_000
BATCH_ROWS = 65_536  # rows per Parquet row group, and the most rows held in memory per date

SCHEMA = FLOWS

TCP, UDP = 6, 17
_FIN, _SYN, _RST, _ACK = dpkt.tcp.TH_FIN, dpkt.tcp.TH_SYN, dpkt.tcp.TH_RST, dpkt.tcp.TH_ACK
_PCAP_MAGICS = {
    b"\xa1\xb2\xc3\xd4",
    b"\xd4\xc3\xb2\xa1",
    b"\xa1\xb2\x3c\x4d",
    b"\x4d\x3c\xb2\xa1",
}
_PCAPNG_MAGIC = b"\x0a\x0d\x0d\x0a"
# Link types (https://www.tcpdump.org/linktypes.html).
_DLT_NULL, _DLT_EN10MB, _DLT_LOOP = 0, 1, 108
_DLT_RAW = {12, 14, 101}
_DLT_IPV4, _DLT_IPV6 = 228, 229
_DLT_SLL, _DLT_SLL2 = 113, 276


@dataclass(frozen=True)
class IngestReport:
    """What one ingest did."""

    files: int
    packets: int
    flows: int
    dates: list[str]
    seconds: float
    packets_per_s: float
    partial: bool  # True when a corrupt file was cut short and keep_partial kept its flows


class CaptureError(ValueError):
    """A capture file is truncated, corrupt or not a capture at all."""

    def __init__(self, path: str, offset: int, reason: str):
        self.path = path
        self.offset = offset
        self.reason = reason
        super().__init__(
            f"{path}: unreadable capture at byte offset {offset}: {reason}. "
            "Re-run with --keep-partial to keep the flows read before that offset, "
            "or repair the file (e.g. `pcapfix`, or `editcap` to cut it) and ingest again."
        )


class UnsupportedLinkType(CaptureError):
    """A capture whose link layer ingest cannot read (not damage: the file may be perfectly fine)."""

    def __init__(self, path: str, linktype: int):
        ValueError.__init__(
            self,
            f"{path}: unsupported link type {linktype} ({link_type_name(linktype)}): ingest reads Ethernet, Linux "
            "cooked (SLL, SLL2), loopback (NULL, LOOP) and raw IPv4/IPv6 captures. Capture again on an Ethernet "
            "interface or with `tcpdump -i any` (Linux cooked), or leave this file out.",
        )
        self.path, self.offset, self.reason, self.linktype = path, 0, f"unsupported link type {linktype}", linktype


def link_type_name(linktype: int) -> str:
    """The link type's name from dpkt's table of tcpdump's LINKTYPE values (e.g. 10 -> FDDI)."""
    names = sorted(n[4:] for n in dir(dpkt.pcap) if n.startswith("DLT_") and getattr(dpkt.pcap, n) == linktype)
    return " or ".join(names) if names else "unknown"


class _Unsupported(Exception):
    def __init__(self, linktype: int):
        super().__init__(f"unsupported link type {linktype}")
        self.linktype = linktype


class _Corrupt(Exception):
    """Raised by _CheckedFile; turned into CaptureError with the file name."""

    def __init__(self, offset: int, reason: str):
        super().__init__(reason)
        self.offset = offset
        self.reason = reason


class _CheckedFile(io.RawIOBase):
    """A read-only file wrapper that notices short reads.

    dpkt silently stops (pcapng) or yields a short packet (pcap) at a truncated record; this wrapper
    turns any short read that does not fall on a record boundary into an error with the offset of
    the record that was cut.
    """

    def __init__(self, f: BinaryIO):
        super().__init__()
        self._f = f
        self.pos = 0
        self.record_start = 0  # set by the reader loop after each complete record
        # pcapng: dpkt reads every block as an 8-byte header (type, length) and then the rest, and skips
        # blocks that hold no packet (statistics, name resolution) inside its own loop; a read of exactly
        # the header's size therefore starts a block, and an end of file there is a clean end.
        self.block_header = 0

    def readable(self) -> bool:
        return True

    def seek(self, pos: int, whence: int = 0) -> int:
        self.pos = self._f.seek(pos, whence)
        self.record_start = self.pos
        return self.pos

    def tell(self) -> int:
        return self.pos

    def read(self, n: int = -1) -> bytes:  # type: ignore[override]
        if n is None or n < 0 or n > MAX_RECORD_BYTES:
            raise _Corrupt(self.record_start, f"impossible record length {n}")
        if n == self.block_header:
            self.record_start = self.pos
        buf = self._f.read(n)
        self.pos += len(buf)
        if len(buf) < n and (buf or self.pos != self.record_start):
            raise _Corrupt(self.record_start, f"record cut short ({n} bytes wanted, {len(buf)} left)")
        return buf


class _Dir:
    """One direction of a flow: counters and the first PREFIX_LEN bytes of its stream."""

    __slots__ = ("base", "buf", "bytes", "contig", "fin", "first", "mask", "pkts")

    def __init__(self) -> None:
        self.pkts = 0
        self.bytes = 0
        self.first: bytes | None = None  # UDP: payload of the first datagram
        self.base: int | None = None  # TCP: sequence number of stream byte 0
        self.buf: bytearray | None = None
        self.mask: bytearray | None = None
        self.contig = 0
        self.fin = False

    def add_segment(self, seq: int, data: bytes) -> None:
        """Place a TCP segment's bytes by sequence number; the first copy of a byte wins."""
        if self.contig >= PREFIX_LEN:
            return
        if self.base is None:
            self.base = seq
        rel = (seq - self.base) & 0xFFFFFFFF
        if rel >= 0x80000000:  # starts before byte 0 (retransmission overlapping the start)
            rel -= 0x100000000
            data = data[-rel:]
            rel = 0
        if rel >= PREFIX_LEN or not data:
            return
        if self.buf is None:
            self.buf = bytearray(PREFIX_LEN)
            self.mask = bytearray(PREFIX_LEN)
        buf, mask = self.buf, self.mask
        assert mask is not None
        end = min(PREFIX_LEN, rel + len(data))
        if mask.find(1, rel, end) < 0:  # common case: nothing there yet
            buf[rel:end] = data[: end - rel]
            mask[rel:end] = b"\x01" * (end - rel)
        else:
            for i in range(rel, end):
                if not mask[i]:
                    buf[i] = data[i - rel]
                    mask[i] = 1
        contig = mask.find(0, self.contig)
        self.contig = PREFIX_LEN if contig < 0 else contig

    def prefix(self, proto: int) -> bytes:
        if proto == UDP:
            return self.first or b""
        return bytes(self.buf[: self.contig]) if self.buf is not None else b""


class _Flow:
    __slots__ = (
        "closed",
        "dport",
        "dst",
        "first_ts",
        "last_ts",
        "orig",
        "proto",
        "resp",
        "sport",
        "src",
        "syn_seq",
    )

    def __init__(self, proto: int, src: bytes, sport: int, dst: bytes, dport: int, ts: float):
        self.proto, self.src, self.sport, self.dst, self.dport = proto, src, sport, dst, dport
        self.first_ts = self.last_ts = ts
        self.orig, self.resp = _Dir(), _Dir()
        self.closed = False
        self.syn_seq: int | None = None

    def expired(self, now: float, idle_timeout: float) -> bool:
        if self.proto == UDP or self.closed:
            return now - self.last_ts > idle_timeout
        return now - self.last_ts > max(idle_timeout, TCP_IDLE_TIMEOUT)


def _ip_text(raw: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET if len(raw) == 4 else socket.AF_INET6, raw)


def flow_id(proto: int, src_ip: str, src_port: int, dst_ip: str, dst_port: int, ts_us: int) -> str:
    """Deterministic id of a flow: a hash of its initiator-ordered 5-tuple and first timestamp (µs)."""
    key = f"{proto}|{src_ip}|{src_port}|{dst_ip}|{dst_port}|{ts_us}".encode()
    return hashlib.blake2b(key, digest_size=10).hexdigest()


class _Sink:
    """Streams flow rows to one Parquet file per UTC date, in a staging folder inside ``out``.

    Rows go out in row groups of BATCH_ROWS, so memory stays bounded however long the capture.
    ``commit`` swaps each staged date in place of the old one (a rerun overwrites, never appends);
    ``abort`` leaves the archive as it was.
    """

    def __init__(self, out: str) -> None:
        self.out = out
        self.created_out = not os.path.exists(out)
        self.stage: str | None = None
        self.rows: dict[str, list[tuple[Any, ...]]] = {}
        self.writers: dict[str, pq.ParquetWriter] = {}
        self.count = 0
        self._days: dict[int, str] = {}

    def emit(self, f: _Flow) -> None:
        ts_us = round(f.first_ts * 1_000_000)
        src, dst = _ip_text(f.src), _ip_text(f.dst)
        day_no = ts_us // 86_400_000_000
        day = self._days.get(day_no)
        if day is None:
            day = self._days[day_no] = datetime.fromtimestamp(day_no * 86_400, tz=timezone.utc).strftime("%Y-%m-%d")
        resp_prefix = f.resp.prefix(f.proto) if f.resp.pkts else None
        row = (
            flow_id(f.proto, src, f.sport, dst, f.dport, ts_us),
            ts_us,
            src,
            dst,
            f.sport,
            f.dport,
            f.proto,
            f.orig.prefix(f.proto),
            resp_prefix,
            f.orig.bytes,
            f.resp.bytes,
            f.orig.pkts,
            f.resp.pkts,
            float(f.last_ts - f.first_ts),
        )
        rows = self.rows.setdefault(day, [])
        rows.append(row)
        self.count += 1
        if len(rows) >= BATCH_ROWS:
            self._flush(day)

    def _flush(self, day: str) -> None:
        rows = self.rows.pop(day, None)
        if not rows:
            return
        cols = list(zip(*rows, strict=True))
        table = pa.Table.from_arrays(
            [pa.array(col, type=field.type) for col, field in zip(cols, SCHEMA, strict=True)], schema=SCHEMA
        )
        writer = self.writers.get(day)
        if writer is None:
            if self.stage is None:
                os.makedirs(self.out, exist_ok=True)
                # A dot-folder: Spark and pyarrow skip it if someone reads the archive meanwhile.
                self.stage = tempfile.mkdtemp(prefix=".ingest-", dir=self.out)
            os.makedirs(os.path.join(self.stage, f"date={day}"))
            path = os.path.join(self.stage, f"date={day}", "part-00000.parquet")
            writer = self.writers[day] = pq.ParquetWriter(path, SCHEMA, compression="zstd")
        writer.write_table(table)

    def commit(self) -> list[str]:
        for day in list(self.rows):
            self._flush(day)
        for w in self.writers.values():
            w.close()
        days = sorted(self.writers)
        for day in days:
            final = os.path.join(self.out, f"date={day}")
            if os.path.isdir(final):
                shutil.rmtree(final)
            assert self.stage is not None
            os.replace(os.path.join(self.stage, f"date={day}"), final)
        if self.stage is not None:
            shutil.rmtree(self.stage)
        return days

    def abort(self) -> None:
        for w in self.writers.values():
            w.close()
        if self.stage is not None:
            shutil.rmtree(self.stage, ignore_errors=True)
        if self.created_out and os.path.isdir(self.out) and not os.listdir(self.out):
            os.rmdir(self.out)


class _FlowTable:
    def __init__(self, idle_timeout: float, sink: _Sink):
        self.flows: dict[tuple[Any, ...], _Flow] = {}
        self.idle_timeout = idle_timeout
        self.sink = sink
        self.now = 0.0

    def sweep(self) -> None:
        now, timeout = self.now, self.idle_timeout
        dead = [k for k, f in self.flows.items() if f.expired(now, timeout)]
        for k in dead:
            self.sink.emit(self.flows.pop(k))

    def flush(self) -> None:
        for f in self.flows.values():
            self.sink.emit(f)
        self.flows.clear()

    def packet(
        self,
        ts: float,
        proto: int,
        src: bytes,
        sport: int,
        dst: bytes,
        dport: int,
        seg: Any,
        payload: bytes,
        plen: int,
    ) -> None:
        if ts > self.now:
            self.now = ts
        key = (proto, src, sport, dst, dport) if (src, sport) <= (dst, dport) else (proto, dst, dport, src, sport)
        f = self.flows.get(key)
        flags = seg.flags if proto == TCP else 0
        if f is not None:
            new_syn = proto == TCP and flags & (_SYN | _ACK) == _SYN and f.syn_seq != seg.seq
            if f.expired(ts, self.idle_timeout) or new_syn:
                self.sink.emit(self.flows.pop(key))
                f = None
        if f is None:
            if proto == TCP and flags & (_SYN | _ACK) == (_SYN | _ACK):
                # We missed the SYN: the receiver of the SYN-ACK is the initiator.
                f = _Flow(proto, dst, dport, src, sport, ts)
            else:
                f = _Flow(proto, src, sport, dst, dport, ts)
            self.flows[key] = f
        f.last_ts = max(f.last_ts, ts)
        d = f.orig if (src == f.src and sport == f.sport) else f.resp
        d.pkts += 1
        d.bytes += plen
        if proto == UDP:
            if d.first is None:
                d.first = payload[:PREFIX_LEN]
            return
        seq = seg.seq
        if flags & _SYN:
            if d is f.orig and not flags & _ACK:
                f.syn_seq = seq
            if d.base is None:
                d.base = (seq + 1) & 0xFFFFFFFF
            seq = (seq + 1) & 0xFFFFFFFF  # data on a SYN (TCP Fast Open) starts after the SYN
        if payload:
            d.add_segment(seq, payload)
        if flags & _FIN:
            d.fin = True
        if flags & _RST or (f.orig.fin and f.resp.fin):
            f.closed = True


def _decode_link(linktype: int) -> Callable[[bytes], Any]:
    """Return a function frame -> dpkt IP/IP6 object (or something else, which is skipped)."""

    if linktype == _DLT_EN10MB:
        ip4, ip6, eth = dpkt.ip.IP, dpkt.ip6.IP6, dpkt.ethernet.Ethernet

        def ethernet(buf: bytes) -> Any:
            # Untagged IPv4/IPv6 is nearly all traffic: hand the IP header straight to dpkt, which
            # doubles throughput; everything else (VLAN/QinQ, MPLS, LLC) goes through dpkt.ethernet.
            etype = buf[12:14]
            if etype == b"\x08\x00":
                return ip4(buf[14:])
            if etype == b"\x86\xdd":
                return ip6(buf[14:])
            return eth(buf).data

        return ethernet
    if linktype in (_DLT_NULL, _DLT_LOOP):  # 4-byte address family, byte order varies by host
        return lambda buf: _by_version(buf[4:])
    if linktype in _DLT_RAW or linktype in (_DLT_IPV4, _DLT_IPV6):
        return _by_version
    if linktype == _DLT_SLL:
        return lambda buf: dpkt.sll.SLL(buf).data
    if linktype == _DLT_SLL2:
        return lambda buf: dpkt.sll2.SLL2(buf).data
    raise _Unsupported(linktype)


# Tunnels (see the module docstring). Zeek's Tunnel::max_depth is 2; real captures nest a little deeper
# (MPLS + GRE + VXLAN), so allow four before giving up on a packet.
MAX_TUNNEL_DEPTH = 4
VXLAN_PORT, GENEVE_PORT, GRE_UDP_PORT = 4789, 6081, 4754
_ETH_TEB, _ETH_IP4, _ETH_IP6, _ETH_MPLS = 0x6558, 0x0800, 0x86DD, (0x8847, 0x8848)
_ETH_ERSPAN2, _ETH_ERSPAN3 = 0x88BE, 0x22EB


def _ip_of(obj: Any) -> Any:
    """The IP packet inside a decoded link or tunnel payload (Ethernet, PPP, ...), or None."""
    for _ in range(4):
        if isinstance(obj, (dpkt.ip.IP, dpkt.ip6.IP6)):
            return obj
        if isinstance(obj, (dpkt.ethernet.Ethernet, dpkt.ppp.PPP)):
            obj = obj.data
        else:
            return None
    return None


def _by_version(buf: bytes) -> Any:
    if not buf:
        return None
    v = buf[0] >> 4
    return dpkt.ip.IP(buf) if v == 4 else dpkt.ip6.IP6(buf) if v == 6 else None


def _mpls(buf: bytes) -> Any:
    """IP under an MPLS label stack carried as raw bytes (GRE payload 0x8847): the stack ends at the label with
    the bottom-of-stack bit; what follows is IPv4 or IPv6 by its version nibble, else a pseudowire Ethernet
    frame (with or without a control word), the same guess dpkt makes for MPLS in Ethernet."""
    for _ in range(24):
        if len(buf) < 4:
            return None
        bottom = buf[2] & 0x01
        buf = buf[4:]
        if bottom:
            break
    if buf and buf[0] >> 4 in (4, 6):
        return _by_version(buf)
    if buf[:2] == b"\x00\x00":
        buf = buf[4:]
    return _ip_of(dpkt.ethernet.Ethernet(buf))


def _ethertype_payload(ptype: int, buf: bytes) -> Any:
    if ptype == _ETH_TEB:
        return _ip_of(dpkt.ethernet.Ethernet(buf))
    if ptype == _ETH_IP4:
        return dpkt.ip.IP(buf)
    if ptype == _ETH_IP6:
        return dpkt.ip6.IP6(buf)
    if ptype in _ETH_MPLS:
        return _mpls(buf)
    return None


def _gre(g: dpkt.gre.GRE) -> Any:
    """The IP packet a GRE packet carries (dpkt decodes IP, Ethernet and PPP payloads; MPLS and ERSPAN not)."""
    inner = _ip_of(g.data)
    if inner is not None or not isinstance(g.data, bytes):
        return inner
    if g.p in _ETH_MPLS:
        return _mpls(g.data)
    if g.p == _ETH_ERSPAN2:  # ERSPAN type II: an 8-byte header, then the mirrored frame; type I (no GRE
        skip = 8 if g.flags & dpkt.gre.GRE_SP else 0  # sequence number, as Zeek tells them apart) has none
        return _ip_of(dpkt.ethernet.Ethernet(g.data[skip:])) if len(g.data) > skip else None
    if g.p == _ETH_ERSPAN3 and len(g.data) > 12:  # type III: 12 bytes, 8 more when its O bit says so
        skip = 12 + (8 if g.data[11] & 0x01 else 0)
        return _ip_of(dpkt.ethernet.Ethernet(g.data[skip:]))
    return None


_NOT_A_TUNNEL = object()


def _udp_tunnel(seg: dpkt.udp.UDP) -> Any:
    """The IP packet inside VXLAN, Geneve or GRE-over-UDP; None when the payload is not IP; _NOT_A_TUNNEL when
    the datagram is not a valid tunnel header after all (then it is an ordinary UDP flow).

    dpkt 1.9.8 has no VXLAN or Geneve parser; both headers are 8 bytes (RFC 7348, RFC 8926), so they are
    read here: VXLAN carries an Ethernet frame; Geneve adds options (their length in 4-byte words is the low
    6 bits of byte 0) and names its payload with an ethertype in bytes 2-3."""
    buf = seg.data
    if seg.dport == VXLAN_PORT and len(buf) > 8 and buf[0] & 0x08:  # the I flag: a valid VNI follows
        return _ip_of(dpkt.ethernet.Ethernet(buf[8:]))
    if seg.dport == GENEVE_PORT and len(buf) >= 8 and buf[0] >> 6 == 0:  # version 0
        start = 8 + 4 * (buf[0] & 0x3F)
        return _ethertype_payload(int.from_bytes(buf[2:4], "big"), buf[start:])
    if seg.dport == GRE_UDP_PORT and len(buf) >= 4:  # RFC 8086
        return _gre(dpkt.gre.GRE(buf))
    return _NOT_A_TUNNEL


def _decapsulate(ipo: Any) -> Any:
    """The innermost IP packet of the tunnels in ``ipo`` (``ipo`` itself when it is no tunnel); None for a
    tunnel whose payload is not IP (ARP, keepalives) or nested deeper than MAX_TUNNEL_DEPTH."""
    for _ in range(MAX_TUNNEL_DEPTH + 1):
        if isinstance(ipo, dpkt.ip.IP) and ipo.offset:
            return ipo  # a non-first fragment: nothing to open
        data = ipo.data
        if isinstance(data, (dpkt.ip.IP, dpkt.ip6.IP6)):  # IP-in-IP: protocol 4 or 41
            inner = data
        elif isinstance(data, dpkt.gre.GRE):
            inner = _gre(data)
        elif isinstance(data, dpkt.udp.UDP) and data.dport in (VXLAN_PORT, GENEVE_PORT, GRE_UDP_PORT):
            inner = _udp_tunnel(data)
            if inner is _NOT_A_TUNNEL:
                return ipo
        else:
            return ipo
        if inner is None:
            return None
        ipo = inner
    return None


def _transport(ipo: Any) -> tuple[int, bytes, int, bytes, int, Any, bytes, int] | None:
    """Pick the TCP/UDP header out of a decoded IP packet, inside its tunnels; None for what we do not track."""
    if isinstance(ipo, (dpkt.ip.IP, dpkt.ip6.IP6)):
        ipo = _decapsulate(ipo)
    if ipo is None:
        return None
    if isinstance(ipo, dpkt.ip.IP):
        if ipo.offset:  # a non-first fragment carries no ports
            return None
    elif isinstance(ipo, dpkt.ip6.IP6):
        frag = ipo.extension_hdrs.get(dpkt.ip.IP_PROTO_FRAGMENT)
        if frag is not None and frag.frag_off:
            return None
    else:
        return None
    seg = ipo.data
    if isinstance(seg, dpkt.tcp.TCP):
        payload = seg.data
        return TCP, ipo.src, seg.sport, ipo.dst, seg.dport, seg, payload, len(payload)
    if isinstance(seg, dpkt.udp.UDP):
        # ulen counts the whole datagram even when only its first fragment is captured.
        plen = max(seg.ulen - 8, len(seg.data))
        return UDP, ipo.src, seg.sport, ipo.dst, seg.dport, seg, seg.data, plen
    return None


def _expand(paths: list[str]) -> list[str]:
    files: list[str] = []
    for p in paths:
        if os.path.isdir(p):
            for root, _dirs, names in sorted(os.walk(p)):
                files.extend(os.path.join(root, n) for n in sorted(names) if n.lower().endswith(CAPTURE_SUFFIXES))
        else:
            files.append(p)
    if not files:
        raise FileNotFoundError(f"no capture files ({', '.join(CAPTURE_SUFFIXES)}) in {paths}")
    return files


def _records(path: str, fh: _CheckedFile) -> Iterator[tuple[float, bytes, int]]:
    """Yield (ts, frame, linktype); raise _Corrupt on a bad record."""
    magic = fh._f.read(4)
    fh._f.seek(0)
    try:
        if magic in _PCAP_MAGICS:
            reader: Any = dpkt.pcap.Reader(fh)
        elif magic == _PCAPNG_MAGIC:
            fh.block_header = 8
            reader = dpkt.pcapng.Reader(fh)
        else:
            raise _Corrupt(0, f"not a pcap or pcapng file (magic {magic.hex() or 'empty'})")
        linktype = reader.datalink()
    except (dpkt.UnpackError, struct.error, ValueError) as e:
        raise _Corrupt(0, f"bad file header: {e}") from e
    fh.record_start = fh.pos
    it = iter(reader)
    while True:
        try:
            ts, buf = next(it)
        except StopIteration:
            return
        except (dpkt.UnpackError, struct.error, ValueError) as e:
            raise _Corrupt(fh.record_start, f"unreadable record: {e}") from e
        fh.record_start = fh.pos
        yield ts, buf, linktype


def ingest(
    paths: list[str],
    out: str,
    *,
    idle_timeout: float = 60.0,
    keep_partial: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> IngestReport:
    """Read pcap/pcapng files (or folders of them) and write their flows to ``out`` as Parquet.

    ``progress(done_bytes, total_bytes)`` is called every few thousand packets and after each file.
    Raises CaptureError on a truncated or corrupt file unless ``keep_partial`` is set, in which case
    the flows read before the bad record are kept, the remaining files are still read, and the report
    says ``partial``. Nothing is written when an error is raised.
    """
    t0 = time.perf_counter()
    files = _expand(paths)
    total_bytes = sum(os.path.getsize(p) for p in files)
    sink = _Sink(out)
    table = _FlowTable(idle_timeout, sink)
    packets = 0
    done_before = 0
    partial = False
    decode_errors = (dpkt.UnpackError, struct.error, IndexError, ValueError)
    try:
        for path in files:
            with open(path, "rb") as raw:
                fh = _CheckedFile(raw)
                decoders: dict[int, Callable[[bytes], Any]] = {}
                try:
                    for ts, buf, linktype in _records(path, fh):
                        packets += 1
                        dec = decoders.get(linktype)
                        if dec is None:
                            try:
                                dec = decoders[linktype] = _decode_link(linktype)
                            except _Unsupported as e:  # not damage: --keep-partial does not apply
                                raise UnsupportedLinkType(path, e.linktype) from None
                        try:
                            tr = _transport(dec(buf))
                        except decode_errors:
                            continue  # a mangled or snapped frame: skip it, as tcpdump would
                        if tr is not None:
                            table.packet(float(ts), *tr)
                        if packets % SWEEP_EVERY == 0:
                            table.sweep()
                        if progress is not None and packets % PROGRESS_EVERY == 0:
                            progress(done_before + fh.pos, total_bytes)
                except _Corrupt as e:
                    if not keep_partial:
                        raise CaptureError(path, e.offset, e.reason) from None
                    partial = True
            done_before += os.path.getsize(path)
            if progress is not None:
                progress(done_before, total_bytes)
        table.flush()
        dates = sink.commit()
    except BaseException:
        sink.abort()  # nothing is written when the ingest fails
        raise
    seconds = time.perf_counter() - t0
    return IngestReport(
        files=len(files),
        packets=packets,
        flows=sink.count,
        dates=dates,
        seconds=seconds,
        packets_per_s=packets / seconds if seconds > 0 else 0.0,
        partial=partial,
    )

"""Sample archive, the building blocks: message templates frozen into numpy arrays, where per-flow fields go,
and the random helpers every generator uses. Used by the other jobs/sample/ modules."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from portprint.jobs.warehouse.tables import FLOWS

PREFIX_LEN = 64
# Working width of the byte matrices: two spare columns let a 2-byte field that starts at byte 63
# be written without bounds checks; the spare bytes are cut off before output.
_W = PREFIX_LEN + 2

FLOW_SCHEMA = FLOWS
# chaos=True appends this column: real archives carry extras the scorer must ignore.
_SENSOR_FIELD = pa.field("sensor", pa.string())
LABEL_SCHEMA = pa.schema([("flow_id", pa.string()), ("label", pa.string()), ("date", pa.string())])

LABELS = ("dns", "ssh", "http", "tls", "openvpn", "random", "empty", "other-port", "dns-tunnel")
NON_DNS_LABELS = ("ssh", "http", "tls", "openvpn", "random")
TUNNEL_LABELS = ("dns-tunnel",)  # well-formed DNS that carries data in its names (chaos only)

_CHUNK_ROWS = 262_144  # rows per generated batch / Parquet row group: bounds memory for big days
_TCP, _UDP = 6, 17
_MSS = 1448


# --------------------------------------------------------------------------------------------
# Templates: one encoded first flight per direction, plus where the per-flow fields go.
# --------------------------------------------------------------------------------------------


@dataclass
class _T:
    orig: bytes | None  # initiator stream / first datagram; None = prefix not captured (null)
    orig_total: int  # payload bytes of one exchange (all messages, TCP length prefixes included)
    orig_msgs: int = 1
    resp: bytes | None = None  # None = responder sent nothing
    resp_total: int = 0
    resp_msgs: int = 0
    orig_ids: tuple[int, int] = (-1, -1)  # byte offsets of DNS IDs of message 1 and 2 (-1: none)
    resp_ids: tuple[int, int] = (-1, -1)
    orig_rand: list[tuple[int, int]] = field(default_factory=list)  # [a, b) ranges made random
    orig_alphabet: bytes = b""  # what orig_rand's bytes are drawn from (empty: any byte)
    resp_rand: list[tuple[int, int]] = field(default_factory=list)
    echo: list[tuple[int, int, int]] = field(default_factory=list)  # (resp_at, orig_at, length)
    orig_ts: int = -1  # offset of a 4-byte big-endian Unix time (OpenVPN tls-auth)
    resp_ts: int = -1


def _id_pos(offsets: list[int]) -> tuple[int, int]:
    pos = [*(p if p < PREFIX_LEN else -1 for p in offsets[:2]), -1, -1]
    return pos[0], pos[1]


def _dns_tmpl(queries: list[bytes], responses: list[bytes], tcp: bool, *, extra_resp: int = 0,
              extra_resp_msgs: int = 0) -> _T:
    """Template for a DNS exchange; IDs are left at 0 and patched per row."""

    def stream(msgs: list[bytes]) -> tuple[bytes | None, int, tuple[int, int]]:
        if not msgs:
            return None, 0, (-1, -1)
        if not tcp:  # the prefix is the first datagram; later datagrams only count in bytes
            return msgs[0], sum(len(m) for m in msgs), (0, -1)
        out, offs = b"", []
        for m in msgs:
            offs.append(len(out) + 2)
            out += struct.pack("!H", len(m)) + m
        return out, len(out), _id_pos(offs)

    o, o_total, o_ids = stream(queries)
    r, r_total, r_ids = stream(responses)
    return _T(o, o_total, len(queries), r, r_total + extra_resp, len(responses) + extra_resp_msgs,
              o_ids, r_ids)


class _Table:
    """Templates frozen into numpy arrays, plus named [start, stop) sets for the categories."""

    def __init__(self) -> None:
        self._items: list[_T] = []
        self.sets: dict[str, tuple[int, int]] = {}

    def add(self, name: str, items: list[_T]) -> None:
        if not items:
            raise ValueError(f"empty template set {name}")
        self.sets[name] = (len(self._items), len(self._items) + len(items))
        self._items.extend(items)

    def freeze(self) -> None:
        t = len(self._items)
        self.o_head = np.zeros((t, _W), np.uint8)
        self.r_head = np.zeros((t, _W), np.uint8)
        self.o_len = np.zeros(t, np.int64)
        self.r_len = np.zeros(t, np.int64)
        self.o_null = np.zeros(t, bool)
        self.r_has = np.zeros(t, bool)
        self.o_total = np.zeros(t, np.int64)
        self.r_total = np.zeros(t, np.int64)
        self.o_msgs = np.zeros(t, np.int64)
        self.r_msgs = np.zeros(t, np.int64)
        self.o_ids = np.full((t, 2), -1, np.int64)
        self.r_ids = np.full((t, 2), -1, np.int64)
        self.o_mask = np.zeros((t, _W), bool)
        # Per template, a random byte -> the byte written (the identity, or onto the template's alphabet).
        self.o_lut = np.tile(np.arange(256, dtype=np.uint8), (t, 1))
        self.r_mask = np.zeros((t, _W), bool)
        self.echo = np.full((t, _W), -1, np.int64)
        self.o_ts = np.full(t, -1, np.int64)
        self.r_ts = np.full(t, -1, np.int64)
        for i, it in enumerate(self._items):
            if it.orig is None:
                self.o_null[i] = True
            else:
                head = it.orig[:PREFIX_LEN]
                self.o_head[i, : len(head)] = np.frombuffer(head, np.uint8)
                self.o_len[i] = len(head)
            if it.resp is not None:
                self.r_has[i] = True
                head = it.resp[:PREFIX_LEN]
                self.r_head[i, : len(head)] = np.frombuffer(head, np.uint8)
                self.r_len[i] = len(head)
            self.o_total[i], self.r_total[i] = it.orig_total, it.resp_total
            self.o_msgs[i], self.r_msgs[i] = it.orig_msgs, it.resp_msgs
            self.o_ids[i], self.r_ids[i] = it.orig_ids, it.resp_ids
            for a, b in it.orig_rand:
                self.o_mask[i, a : min(b, PREFIX_LEN)] = True
            if it.orig_alphabet:
                alphabet = np.frombuffer(it.orig_alphabet, np.uint8)
                self.o_lut[i] = alphabet[np.arange(256) % len(alphabet)]
            for a, b in it.resp_rand:
                self.r_mask[i, a : min(b, PREFIX_LEN)] = True
            for at, src, n in it.echo:
                for k in range(n):
                    if at + k < PREFIX_LEN and src + k < PREFIX_LEN:
                        self.echo[i, at + k] = src + k
            self.o_ts[i] = it.orig_ts if 0 <= it.orig_ts <= PREFIX_LEN - 4 else -1
            self.r_ts[i] = it.resp_ts if 0 <= it.resp_ts <= PREFIX_LEN - 4 else -1
        self.o_rand_any = self.o_mask.any(axis=1)
        self.r_rand_any = self.r_mask.any(axis=1)
        self.echo_any = (self.echo >= 0).any(axis=1)
        del self._items
        for v in vars(self).values():  # shared between calls through the pool cache
            if isinstance(v, np.ndarray):
                v.setflags(write=False)


# --------------------------------------------------------------------------------------------


def _pick(rng: np.random.Generator, seq, p=None):
    if p is None:
        return seq[int(rng.integers(len(seq)))]
    # rng.choice(p=...) validates p on every call, which dominated pool building
    return seq[min(int(np.searchsorted(np.cumsum(p), rng.random() * sum(p), side="right")), len(seq) - 1)]


def _hex(rng: np.random.Generator, n: int) -> str:
    return rng.bytes((n + 1) // 2).hex()[:n]


def _b32(rng: np.random.Generator, n: int) -> str:
    alphabet = "abcdefghijklmnopqrstuvwxyz234567"
    return "".join(alphabet[i] for i in rng.integers(0, 32, n))




def _b64(rng: np.random.Generator, nbytes: int) -> str:
    import base64

    return base64.b64encode(rng.bytes(nbytes)).decode()


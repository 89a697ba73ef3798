"""Tunnel evidence: per flow, per slice of flows (a Spark task) and merged on the driver, for the Escalate stage.

Called by udfs/detect.py (``SliceEvidence``, per Spark task of Detect), by jobs/engine/pipeline.py (``merge`` of
every task's rows on the driver) and by udfs/escalate.py (``flow_groups`` and ``name_flags`` in its decision and
per-flow step). numpy/pyarrow only; the per-name work is in the numba kernels of udfs/names.py.

A flow's **group** is what a tunnel cannot spread its names out of:

- a complete name: ``z:<registered domain>``. A tunnel needs a zone whose authoritative server its operator
  runs, so all its names share one registered domain;
- a name cut off by the prefix (its domain is invisible): ``s:<server>/<its longest token's length bucket>/<that
  token's class>``, so a host's few 63-byte base32 labels are not diluted among its other lookups through the
  same resolver, and a counter label in front of them changes nothing.

One slice's evidence is one row per (date, client, server, group) holding the group's distinct names as packed
records (``REC``: name key, asks, its longest data token and that token's alphabet, its data bytes, its
facts as bits and its tag, a hash of an id-like token). Records merge exactly: the driver concatenates the
rows of every task and sums asks per (date, client, group, name), so every distinct count the decision makes
is the same however the flows were sliced. The row is compact: 20 bytes per distinct name of a client and
server, never one row per flow.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from portprint.udfs.features import UDP
from portprint.udfs.names import ALPHABETS, BINARY, DIGITS, HEX, NONE, Names

# One distinct name of a (date, client, server, group) in a slice: 20 bytes, little-endian.
REC = np.dtype([("key", "<u8"), ("asks", "<u4"), ("token", "u1"), ("token_alpha", "u1"), ("data_bytes", "u1"),
                ("bits", "u1"), ("tag", "<u4")])
STRANGE, RARE, CARRIER, WORDY, ODD, SOCKET, JUDGED, COUNTED = (1 << i for i in range(8))
BITS = {"strange": STRANGE, "rare": RARE, "carrier": CARRIER, "wordy": WORDY, "odd": ODD, "socket": SOCKET,
        "judged": JUDGED, "counted": COUNTED}

# Record types tunnel tools use for their downstream that ordinary clients almost never ask: NULL, iodine's
# PRIVATE (65399). And those tunnels use that ordinary clients ask too: CNAME, MX, TXT, KEY, SRV.
RARE_QTYPES = (10, 0xFF00 + 119)
CARRIER_QTYPES = (5, 15, 16, 25, 33)
SHAPE_BUCKET = 16  # first-label length buckets of cut-off names: 0-15, 16-31, 32-47, 48-63

# The evidence rows of one slice (an OUT row each, udfs/schemas.py: ``_group``, ``_evidence``).
# ``kept``: the slice kept every flow of the group that a shape or socket escalation could flag as a candidate
# (udfs/detect.py); when not, an escalated group's flows to that server are read again.
EVIDENCE = pa.schema([("date", pa.string()), ("src_ip", pa.string()), ("dst_ip", pa.string()),
                      ("group", pa.string()), ("records", pa.binary()), ("kept", pa.bool_())])
# The driver's merged evidence: one row per (date, client, group, name).
NAMES = pa.schema([("date", pa.string()), ("src_ip", pa.string()), ("group", pa.string()), ("key", pa.uint64()),
                   ("asks", pa.int64()), ("token", pa.int32()), ("token_alpha", pa.int8()),
                   ("data_bytes", pa.int32()), ("bits", pa.uint8()), ("tag", pa.uint32())])
NAME_KEY = ("date", "src_ip", "group", "key")


def shape_class(alphabet: np.ndarray) -> np.ndarray:
    """The alphabet class of a cut-off name's longest token in its group: ``hex`` (digits too), ``text`` (letters
    and digits, with '+', '/', '=' or not: base32, base36, base64 of one tunnel vary in which of those a token
    happens to show), ``binary`` or ``none``."""
    a = np.asarray(alphabet)
    return np.where(np.isin(a, (DIGITS, HEX)), "hex", np.where(a == BINARY, "binary",
                                                              np.where(a == NONE, "none", "text")))


def flow_groups(names: Names, dst_ip: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Each flow's group (object array; None where the flow has no name a tunnel could use)."""
    n = len(names.key)
    out = np.full(n, None, dtype=object)
    has = names.key != 0
    whole = np.flatnonzero(has & names.complete)
    if len(whole):
        zones, inv = np.unique(names.zone[whole].astype(str), return_inverse=True)
        out[whole] = np.array(["z:" + z for z in zones], dtype=object)[inv.ravel()]
    cut = np.flatnonzero(has & ~names.complete)
    if len(cut):
        dst = np.asarray(pc.fill_null(dst_ip, "").to_numpy(zero_copy_only=False), dtype=object)[cut]
        bucket = np.minimum(names.token[cut] // SHAPE_BUCKET, 63 // SHAPE_BUCKET)
        parts = np.stack([dst.astype(str), bucket.astype(str), shape_class(names.token_alpha[cut])], axis=1)
        combos, inv = np.unique(parts, axis=0, return_inverse=True)
        out[cut] = np.array([f"s:{d}/{b}/{c}" for d, b, c in combos], dtype=object)[inv.ravel()]
    return out


def flow_bits(names: Names, qloss: np.ndarray, odd_threshold: float, proto: np.ndarray, pkts: np.ndarray | None,
              socket_pkts: int) -> np.ndarray:
    """Per flow, its record's bits: the name's facts, the question model's verdict (JUDGED: it judged the name;
    ODD: above ``odd_threshold``, NaN never) and SOCKET (a UDP flow of ``socket_pkts`` datagrams or more from the
    client; ``pkts`` None: the archive does not map the counter, so never)."""
    bits = np.zeros(len(names.key), np.uint8)
    bits |= np.where(names.strange, STRANGE, 0).astype(np.uint8)
    bits |= np.where(np.isin(names.qtype, RARE_QTYPES), RARE, 0).astype(np.uint8)
    bits |= np.where(np.isin(names.qtype, CARRIER_QTYPES), CARRIER, 0).astype(np.uint8)
    bits |= np.where(names.wordy, WORDY, 0).astype(np.uint8)
    bits |= np.where(names.counted, COUNTED, 0).astype(np.uint8)
    q = np.asarray(qloss, dtype=np.float64)
    bits |= np.where(~np.isnan(q), JUDGED, 0).astype(np.uint8)
    with np.errstate(invalid="ignore"):
        bits |= np.where(q > odd_threshold, ODD, 0).astype(np.uint8)
    if pkts is not None:
        sock = (np.asarray(proto) == UDP) & (np.asarray(pkts) >= socket_pkts)
        bits |= np.where(sock, SOCKET, 0).astype(np.uint8)
    return bits


def _records_table(date, src, dst, group, names: Names, bits: np.ndarray, rows: np.ndarray) -> pa.Table:
    """One row per flow (of ``rows``): the keys and facts a record holds."""
    take = pa.array(rows)
    return pa.table({
        "date": pc.take(date, take).cast(pa.string()), "src_ip": pc.take(src, take).cast(pa.string()),
        "dst_ip": pc.take(dst, take).cast(pa.string()), "group": pa.array(group[rows], pa.string()),
        "key": pa.array(names.key[rows]), "asks": pa.array(np.ones(len(rows), np.int64)),
        "token": pa.array(np.minimum(names.token[rows], 255).astype(np.int32)),
        "token_alpha": pa.array(names.token_alpha[rows].astype(np.int8)),
        "data_bytes": pa.array(np.minimum(names.data_bytes[rows], 255).astype(np.int32)),
        "tag": pa.array(names.tag[rows]),
        **{b: pa.array((bits[rows] & v) > 0) for b, v in BITS.items()}})


def _aggregate(t: pa.Table, keys: list[str]) -> pa.Table:
    """Rows of ``_records_table`` (or its aggregate) summed per ``keys``: asks added, facts max, bits any."""
    g = t.group_by(keys, use_threads=False).aggregate(
        [("asks", "sum"), ("token", "max"), ("token_alpha", "max"), ("data_bytes", "max"), ("tag", "max"),
         *[(b, "max") for b in BITS]])
    return g.rename_columns([c.removesuffix("_sum").removesuffix("_max") for c in g.column_names])


def _pack_bits(t: pa.Table) -> np.ndarray:
    bits = np.zeros(t.num_rows, np.uint8)
    for b, v in BITS.items():
        bits |= np.where(t[b].to_numpy(zero_copy_only=False), v, 0).astype(np.uint8)
    return bits


class SliceEvidence:
    """One slice's evidence (a Spark task, or a plain process): ``add`` per batch of flows, ``table`` once."""

    def __init__(self) -> None:
        self.pieces: list[pa.Table] = []
        self.uncovered: set[tuple[str, str, str, str]] = set()  # (date, client, server, group) not all kept

    def not_kept(self, rows: pa.Table, group: np.ndarray, dropped: np.ndarray) -> None:
        """Note the groups some of whose flows (``dropped``) the slice did not keep as candidates."""
        if not dropped.any():
            return
        t = rows.select(["date", "src_ip", "dst_ip"]).filter(pa.array(dropped)).append_column(
            "group", pa.array(group[dropped], pa.string()))
        t = t.group_by(t.column_names, use_threads=False).aggregate([])
        self.uncovered.update(zip(*[t[c].to_pylist() for c in ("date", "src_ip", "dst_ip", "group")], strict=True))

    def add(self, rows: pa.Table, names: Names, group: np.ndarray, bits: np.ndarray) -> pa.Table:
        """Add a batch (``rows``: date, src_ip, dst_ip; per flow its ``names``, ``group`` and record ``bits``).
        Returns the batch's records per (date, client, group, name) (asks within the batch)."""
        has = np.flatnonzero(names.key != 0)
        if len(has) == 0:
            return _aggregate(_records_table(rows["date"], rows["src_ip"], rows["dst_ip"], group, names, bits,
                                             has), ["date", "src_ip", "dst_ip", "group", "key"])
        t = _aggregate(_records_table(rows["date"], rows["src_ip"], rows["dst_ip"], group, names, bits, has),
                       ["date", "src_ip", "dst_ip", "group", "key"])
        self.pieces.append(t)
        return t

    def table(self) -> pa.Table:
        """EVIDENCE rows: per (date, client, server, group) its distinct names' records, packed."""
        pieces = [p for p in self.pieces if p.num_rows]
        uncovered, self.pieces, self.uncovered = self.uncovered, [], set()
        if not pieces:
            return EVIDENCE.empty_table()
        t = _aggregate(pa.concat_tables(pieces), ["date", "src_ip", "dst_ip", "group", "key"])
        t = t.sort_by([("date", "ascending"), ("src_ip", "ascending"), ("dst_ip", "ascending"),
                       ("group", "ascending"), ("key", "ascending")])
        rec = np.zeros(t.num_rows, REC)
        rec["key"] = t["key"].to_numpy()
        rec["asks"] = np.minimum(t["asks"].to_numpy(), np.iinfo(np.uint32).max)
        rec["token"] = t["token"].to_numpy()
        rec["token_alpha"] = t["token_alpha"].to_numpy()
        rec["data_bytes"] = t["data_bytes"].to_numpy()
        rec["tag"] = t["tag"].to_numpy()
        rec["bits"] = _pack_bits(t)
        heads = t.select(["date", "src_ip", "dst_ip", "group"])
        same = np.ones(t.num_rows - 1, bool)
        for c in heads.column_names:
            v = heads[c].to_numpy(zero_copy_only=False)
            same &= v[1:] == v[:-1]
        starts = np.flatnonzero(np.concatenate([[True], ~same]))
        bounds = np.append(starts, t.num_rows)
        blobs = [rec[a:b].tobytes() for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True)]
        heads = heads.take(pa.array(starts))
        kept = [tuple(r.values()) not in uncovered for r in heads.to_pylist()] if uncovered else [True] * len(blobs)
        return (heads.append_column("records", pa.array(blobs, pa.binary()))
                .append_column("kept", pa.array(kept, pa.bool_())).cast(EVIDENCE))


def unpack(evidence: pa.Table) -> pa.Table:
    """EVIDENCE rows as one row per record (date, src_ip, dst_ip, group, key, asks, facts, bit columns)."""
    blobs = [b or b"" for b in evidence["records"].to_pylist()]
    counts = np.array([len(b) for b in blobs], dtype=np.int64) // REC.itemsize
    # One buffer, one view: concatenating a structured array per row costs seconds at a day's groups.
    rec = np.frombuffer(b"".join(blobs), REC)
    idx = pa.array(np.repeat(np.arange(len(blobs)), counts))
    t = evidence.select(["date", "src_ip", "dst_ip", "group"]).take(idx)  # ``kept`` stays with the rows
    cols = {"key": pa.array(rec["key"]), "asks": pa.array(rec["asks"].astype(np.int64)),
            "token": pa.array(rec["token"].astype(np.int32)),
            "token_alpha": pa.array(rec["token_alpha"].astype(np.int8)),
            "data_bytes": pa.array(rec["data_bytes"].astype(np.int32)), "tag": pa.array(rec["tag"])}
    cols |= {b: pa.array((rec["bits"] & v) > 0) for b, v in BITS.items()}
    for name, col in cols.items():
        t = t.append_column(name, col)
    return t


def merge(evidence: pa.Table) -> pa.Table:
    """NAMES: the EVIDENCE rows of any number of slices merged to one row per (date, client, group, name), asks
    summed over slices and servers, facts and bits of any ask. Exact and associative: however the flows were
    sliced, the same rows."""
    if evidence.num_rows == 0:
        return NAMES.empty_table()
    t = _aggregate(unpack(evidence), list(NAME_KEY))
    t = t.append_column("bits_", pa.array(_pack_bits(t), pa.uint8()))
    t = t.drop(list(BITS)).rename_columns({"bits_": "bits"})
    return t.select(NAMES.names).cast(NAMES).sort_by([(c, "ascending") for c in NAME_KEY])


__all__ = ["ALPHABETS", "BITS", "EVIDENCE", "NAMES", "REC", "SliceEvidence", "flow_bits", "flow_groups", "merge",
           "shape_class", "unpack"]

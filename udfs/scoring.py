"""Scoring of Arrow batches: the header rule plus the autoencoder, and the explanations of flagged flows.

``Scorer`` is plain numpy/numba/torch and is used everywhere a verdict is made (the Spark UDFs,
training's calibration, the benchmark's plain pass), so every path gives the same verdict.
The Spark UDFs close over the model's bytes only; each Python worker builds the model once and
keeps it in a module-level cache (no SparkContext, so this also works on Spark Connect).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from portprint.models.autoencoder import feature_weights, model_from_bytes, reconstruction_loss, squared_errors
from portprint.udfs.features import (
    binary_buffers,
    decode_headers,
    dedup_possible,
    encode_features,
    pattern_keys,
)
from portprint.udfs.header_rule import header_reasons

FIELD_OF_BYTE = ("id", "id", "flags", "flags", "qdcount", "qdcount", "ancount", "ancount",
                 "nscount", "nscount", "arcount", "arcount")
SCORE_TYPE = "struct<loss:double,reason:tinyint>"
EXPLAIN_TYPE = (
    "struct<prefix_text:string,dns_id:int,qr:int,opcode:int,rcode:int,qdcount:int,ancount:int,"
    "tcp_len:int,failed_bytes:array<int>,failed_fields:string>"
)
# Printable ASCII as itself, everything else as '.', like hexdump -C and Zeek's weird logs.
_PRINTABLE = np.array([c if 0x20 <= c < 0x7F else ord(".") for c in range(256)], dtype=np.uint8)


def field_of_byte(offset: int) -> str:
    """Which DNS field a message byte belongs to (offset after any TCP length prefix)."""
    return FIELD_OF_BYTE[offset] if offset < len(FIELD_OF_BYTE) else "question"


class Scorer:
    """The model and rule of one model version, applied to Arrow arrays."""

    def __init__(self, weights: bytes, width: int, id_mode: str, hidden: tuple[int, ...]) -> None:
        self.width = width
        self.mask_id = id_mode == "mask"
        self.weights = feature_weights(width, id_mode)
        self.model = model_from_bytes(weights, width * 8 + 2, tuple(hidden))
        self.dedup = dedup_possible(width, self.mask_id)

    @staticmethod
    def _columns(proto: pa.Array, orig_bytes: pa.Array) -> tuple[np.ndarray, np.ndarray]:
        # Nulls in the numeric columns mean "unknown": proto 0 matches neither TCP nor UDP framing,
        # orig_bytes -1 switches off the size checks.
        p = np.asarray(pc.fill_null(proto, 0).to_numpy(zero_copy_only=False), dtype=np.int8)
        o = np.asarray(pc.fill_null(orig_bytes, -1).to_numpy(zero_copy_only=False), dtype=np.int64)
        return p, o

    def losses(self, prefix: pa.Array, proto: np.ndarray, orig_bytes: np.ndarray) -> np.ndarray:
        """Reconstruction loss per flow. Equal feature rows are scored once per batch: a site's DNS
        has few distinct ID-less headers, so this removes most of the matrix work."""
        buf = binary_buffers(prefix)
        args = (buf.offsets, buf.data, buf.validity, buf.bit_offset, proto, orig_bytes, self.width, self.mask_id)
        if len(proto) == 0:
            return np.zeros(0, np.float64)
        feats = encode_features(*args)
        if not self.dedup:
            return reconstruction_loss(self.model, feats, self.weights)
        _, first, inverse = np.unique(pattern_keys(*args), return_index=True, return_inverse=True)
        return reconstruction_loss(self.model, feats[first], self.weights)[inverse]

    def score(self, prefix: pa.Array, proto: pa.Array, orig_bytes: pa.Array,
              prefix_len: pa.Array | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Return (loss float64, rule reason uint8) per flow."""
        p, o = self._columns(proto, orig_bytes)
        buf = binary_buffers(prefix)
        if prefix_len is None:
            plen = np.diff(buf.offsets).astype(np.int32)
        else:
            plen = np.asarray(pc.fill_null(prefix_len, 0).to_numpy(zero_copy_only=False), dtype=np.int32)
        reasons = header_reasons(buf.offsets, buf.data, buf.validity, buf.bit_offset, p, o, plen)
        return self.losses(prefix, p, o), reasons

    def explain(self, prefix: pa.Array, proto: pa.Array, orig_bytes: pa.Array, top: int) -> pa.StructArray:
        """Decoded header, printable rendering and the worst-reconstructed bytes, per flow."""
        p, o = self._columns(proto, orig_bytes)
        buf = binary_buffers(prefix)
        n = len(p)
        hdr = decode_headers(buf.offsets, buf.data, buf.validity, buf.bit_offset, p)
        feats = encode_features(buf.offsets, buf.data, buf.validity, buf.bit_offset, p, o, self.width,
                                self.mask_id)
        err = squared_errors(self.model, feats)
        byte_err = (err[:, : self.width * 8] * self.weights[: self.width * 8]).reshape(n, self.width, 8).sum(2)
        order = np.argsort(-byte_err, axis=1, kind="stable")[:, :top]
        worst_vals = np.take_along_axis(byte_err, order, axis=1)
        failed: list[list[int]] = []
        fields: list[str] = []
        for row, vals in zip(order, worst_vals, strict=True):
            keep = [int(b) for b, v in zip(row, vals, strict=True) if v > 0.25]  # > a quarter bit wrong
            failed.append(keep)
            fields.append(",".join(dict.fromkeys(field_of_byte(b) for b in keep)))
        text = printable(prefix)
        flags = hdr[:, 1]

        def col(values: np.ndarray) -> pa.Array:
            return pa.array(values, type=pa.int32(), mask=values < 0)

        has_flags = flags >= 0
        return pa.StructArray.from_arrays(
            [text, col(hdr[:, 0]), col(np.where(has_flags, flags >> 15, -1)),
             col(np.where(has_flags, (flags >> 11) & 0xF, -1)), col(np.where(has_flags, flags & 0xF, -1)),
             col(hdr[:, 2]), col(hdr[:, 3]), col(hdr[:, 6]),
             pa.array(failed, type=pa.list_(pa.int32())), pa.array(fields, type=pa.string())],
            names=["prefix_text", "dns_id", "qr", "opcode", "rcode", "qdcount", "ancount", "tcp_len",
                   "failed_bytes", "failed_fields"],
        )


def printable(prefix: pa.Array) -> pa.Array:
    """Render bytes as printable ASCII ('.' for the rest): safe to show, since the bytes are the sender's."""
    if isinstance(prefix, pa.ChunkedArray):
        prefix = prefix.combine_chunks()
    buf = binary_buffers(prefix)
    start, stop = int(buf.offsets[0]), int(buf.offsets[-1])
    data = _PRINTABLE[buf.data[start:stop]]
    offsets = (buf.offsets - start).astype(np.int32 if buf.offsets.dtype == np.int32 else np.int64)
    typ = pa.string() if offsets.dtype == np.int32 else pa.large_string()
    # is_valid() is a fresh boolean array at offset 0, so its bits line up with the rebased offsets.
    validity = prefix.is_valid().buffers()[1] if prefix.null_count else None
    out = pa.Array.from_buffers(typ, len(prefix), [validity, pa.py_buffer(offsets), pa.py_buffer(data)],
                                null_count=prefix.null_count)
    return out.cast(pa.string())


# ---- per-worker cache: the model is built once per Python worker, not per batch or per row ----
_CACHE: dict[str, Scorer] = {}
_LOCK = threading.Lock()


def cached_scorer(version: str, weights: bytes, width: int, id_mode: str, hidden: tuple[int, ...],
                  torch_threads: int) -> Scorer:
    """Build (once per process) or fetch the Scorer of a model version."""
    scorer = _CACHE.get(version)
    if scorer is None:
        with _LOCK:
            scorer = _CACHE.get(version)
            if scorer is None:
                torch.set_num_threads(torch_threads)
                scorer = Scorer(weights, width, id_mode, hidden)
                _CACHE[version] = scorer
    return scorer


def make_udfs(weights: bytes, version: str, width: int, id_mode: str, hidden: tuple[int, ...],
              torch_threads: int, top_bytes: int):
    """The Spark arrow UDFs (score, explain). Their closures hold the weights' bytes: Spark ships
    them once per task with the plan, and ``cached_scorer`` builds the model once per worker."""
    from pyspark.sql.functions import arrow_udf  # Spark only where Spark is used

    hidden = tuple(hidden)

    @arrow_udf(SCORE_TYPE)
    def score_udf(batches: Iterator[tuple[pa.Array, pa.Array, pa.Array, pa.Array]]) -> Iterator[pa.Array]:
        scorer = cached_scorer(version, weights, width, id_mode, hidden, torch_threads)
        for prefix, proto, orig_bytes, prefix_len in batches:
            loss, reason = scorer.score(prefix, proto, orig_bytes, prefix_len)
            yield pa.StructArray.from_arrays([pa.array(loss), pa.array(reason.astype(np.int8))],
                                             names=["loss", "reason"])

    @arrow_udf(EXPLAIN_TYPE)
    def explain_udf(batches: Iterator[tuple[pa.Array, pa.Array, pa.Array]]) -> Iterator[pa.Array]:
        scorer = cached_scorer(version, weights, width, id_mode, hidden, torch_threads)
        for prefix, proto, orig_bytes in batches:
            yield scorer.explain(prefix, proto, orig_bytes, top_bytes)

    # Spark must not duplicate or reorder these around the filter on their output: run each once.
    return score_udf.asNondeterministic(), explain_udf.asNondeterministic()

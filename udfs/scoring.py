"""The per-flow verdict: the header rule, the header autoencoder and the question-section autoencoder over
Arrow arrays, the one decision between them, and the explanation of flagged flows.

Called by udfs/detect.py and udfs/escalate.py (which every path runs: Spark tasks, `evaluate`, the benchmark's
plain pass) and by training's calibration, so every path gives the same verdict. Spark tasks close over the
model's bytes only; each Python worker builds the models once and keeps them in a module-level cache (no
SparkContext, so this also works on Spark Connect).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from dns import rdatatype

from portprint.models.artifact import ModelArtifact, ModelError, ModelMeta
from portprint.models.autoencoder import feature_weights, model_from_bytes, reconstruction_loss, squared_errors
from portprint.udfs.features import (
    FEATURE_VERSION,
    BinaryBuffers,
    binary_buffers,
    decode_headers,
    dedup_possible,
    encode_features,
    pattern_keys,
)
from portprint.udfs.header_rule import REASONS, header_reasons
from portprint.udfs.qname import (
    N_QNAME_INPUTS,
    QNAME_VERSION,
    input_owner,
    judged,
    model_inputs,
    question_features,
    question_keys,
    render_qname,
)
from portprint.udfs.schemas import ANOMALIES, DETECTORS, ESCALATION

FIELD_OF_BYTE = ("id", "id", "flags", "flags", "qdcount", "qdcount", "ancount", "ancount",
                 "nscount", "nscount", "arcount", "arcount")
# Printable ASCII as itself, everything else as '.', like hexdump -C and Zeek's weird logs.
_PRINTABLE = np.array([c if 0x20 <= c < 0x7F else ord(".") for c in range(256)], dtype=np.uint8)


def load_model(model_dir: str) -> ModelArtifact:
    """A model folder, checked against the feature versions this code computes."""
    art = ModelArtifact.load(model_dir)
    if art.meta.feature_version != FEATURE_VERSION:
        raise ModelError(f"model {model_dir} uses features {art.meta.feature_version}, this portprint computes "
                         f"{FEATURE_VERSION}: retrain with `portprint train`")
    if art.has_qname and art.meta.qname.get("feature_version") != QNAME_VERSION:
        raise ModelError(f"model {model_dir} has question features {art.meta.qname.get('feature_version')}, this "
                         f"portprint computes {QNAME_VERSION}: retrain with `portprint train`")
    return art


def field_of_byte(offset: int) -> str:
    """Which DNS field a message byte belongs to (offset after any TCP length prefix)."""
    return FIELD_OF_BYTE[offset] if offset < len(FIELD_OF_BYTE) else "question"


TUNNEL = DETECTORS.index("tunnel")
# What the one UDF returns per flow: null when no detector fired, else the verdict and its explanation,
# typed as the same columns of `anomalies` (defined once, in udfs/schemas.py).
DETECTION = pa.struct([ANOMALIES.field(name) for name in (
    "detector", "header_verdict", "header_reason", "loss", "qname_loss", "prefix_hex", "prefix_text", "dns_id",
    "qr", "opcode", "rcode", "qdcount", "ancount", "tcp_len", "failed_bytes", "failed_fields", "qname",
    "qname_complete", "qtype")])


@dataclass(frozen=True)
class Verdicts:
    """Per flow: the header model's loss, the rule's reason code, the question model's loss (NaN where
    it has nothing to judge), which detector fired (index into DETECTORS), and the question's key
    (``question_keys``: what the question model scored)."""

    loss: np.ndarray
    reason: np.ndarray
    qloss: np.ndarray
    detector: np.ndarray
    qkey: np.ndarray | None = None


class Scorer:
    """The rule and both models of one model version, applied to Arrow arrays."""

    def __init__(self, art: ModelArtifact) -> None:
        m = art.meta
        self.width = m.width
        self.mask_id = m.id_mode == "mask"
        self.weights = feature_weights(m.width, m.id_mode)
        self.model = model_from_bytes(art.weights, m.width * 8 + 2, tuple(m.hidden))
        self.dedup = dedup_possible(m.width, self.mask_id)
        self.threshold = m.threshold
        self.qmodel = (model_from_bytes(art.qname_weights, N_QNAME_INPUTS, tuple(m.qname["hidden"]))
                       if art.has_qname else None)
        self.qthreshold = float(m.qname.get("threshold", math.inf)) if art.has_qname else math.inf
        # The site's own names (asked on two days or more of the training window), sorted: never judged.
        self.known = np.frombuffer(art.qname_known, "<u8") if art.qname_known else np.zeros(0, np.uint64)
        self.qweights = np.ones(N_QNAME_INPUTS, dtype=np.float32)
        self.qowner = np.asarray(input_owner())

    @staticmethod
    def _columns(proto: pa.Array, orig_bytes: pa.Array) -> tuple[np.ndarray, np.ndarray]:
        # Nulls in the numeric columns mean "unknown": proto 0 matches neither TCP nor UDP framing,
        # orig_bytes -1 switches off the size checks.
        p = np.asarray(pc.fill_null(proto, 0).to_numpy(zero_copy_only=False), dtype=np.int8)
        o = np.asarray(pc.fill_null(orig_bytes, -1).to_numpy(zero_copy_only=False), dtype=np.int64)
        return p, o

    def losses(self, prefix: pa.Array, proto: np.ndarray, orig_bytes: np.ndarray) -> np.ndarray:
        """Header-model loss per flow. Equal feature rows are scored once per batch: a site's DNS
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

    def qname_losses(self, prefix: pa.Array, proto: np.ndarray) -> np.ndarray:
        """Question-model loss per flow, NaN where the model does not judge: no name byte visible, a
        complete name of one or two labels, a name the site asked on two days of the training window,
        or no such model."""
        return self.qname_keys_losses(prefix, proto)[1]

    def qname_keys_losses(self, prefix: pa.Array, proto: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(name key, question-model loss) per flow; the loss as ``qname_losses``.
        Each distinct name (case-folded) is featurised and scored once per batch."""
        n = len(proto)
        out = np.full(n, np.nan)
        if self.qmodel is None or n == 0:
            return np.zeros(n, np.uint64), out
        buf = binary_buffers(prefix)
        keys = question_keys(buf.offsets, buf.data, buf.validity, buf.bit_offset, proto)
        _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
        feats = question_features(buf.offsets, buf.data, buf.validity, buf.bit_offset, proto, first)
        # NaN too for names no tunnel can use (see qname.judged) and for the site's own (known) names.
        visible = judged(feats) & ~self._known(keys[first])
        loss = np.full(len(first), np.nan)
        if visible.any():
            loss[visible] = reconstruction_loss(self.qmodel, model_inputs(feats[visible]), self.qweights)
        return keys, loss[inverse.ravel()]

    def _known(self, keys: np.ndarray) -> np.ndarray:
        if len(self.known) == 0:
            return np.zeros(len(keys), bool)
        pos = np.minimum(np.searchsorted(self.known, keys), len(self.known) - 1)
        return self.known[pos] == keys

    def score(self, prefix: pa.Array, proto: pa.Array, orig_bytes: pa.Array,
              prefix_len: pa.Array | None = None) -> Verdicts:
        """Every detector's view of every flow, and the one decision (rule, then header model, then
        question model: the first that fired is named)."""
        if isinstance(prefix, pa.ChunkedArray):
            prefix = prefix.combine_chunks()
        p, o = self._columns(proto, orig_bytes)
        buf = binary_buffers(prefix)
        if prefix_len is None:
            plen = np.diff(buf.offsets).astype(np.int32)
        else:
            plen = np.asarray(pc.fill_null(prefix_len, 0).to_numpy(zero_copy_only=False), dtype=np.int32)
        reasons = header_reasons(buf.offsets, buf.data, buf.validity, buf.bit_offset, p, o, plen)
        loss = self.losses(prefix, p, o)
        qkey, qloss = self.qname_keys_losses(prefix, p)
        rule, model, qmodel = self.fired(loss, reasons, qloss)
        detector = np.zeros(len(p), dtype=np.int8)
        detector[qmodel] = 3
        detector[model] = 2
        detector[rule] = 1
        return Verdicts(loss, reasons, qloss, detector, qkey)

    def fired(self, loss: np.ndarray, reasons: np.ndarray, qloss: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Which per-flow detectors fire, each on its own: the rule (a reason beyond "ok" and "empty": an empty
        prefix has nothing to judge), the header model (loss above its threshold) and the question model
        (loss above its threshold; NaN, nothing to judge, never is). The one place thresholds are compared."""
        with np.errstate(invalid="ignore"):
            qmodel = qloss > self.qthreshold
        return reasons > 1, (loss > self.threshold) & (reasons != 1), qmodel & (reasons != 1)

    def detect(self, prefix: pa.Array, proto: pa.Array, orig_bytes: pa.Array, top: int,
               verdicts: Verdicts | None = None) -> pa.StructArray:
        """One DETECTION per flow: null where nothing fired, else the verdict and its explanation.
        Only flagged flows are explained, so the explanation costs nothing on clean traffic."""
        if isinstance(prefix, pa.ChunkedArray):
            prefix = prefix.combine_chunks()
        v = verdicts if verdicts is not None else self.score(prefix, proto, orig_bytes)
        hit = np.flatnonzero(v.detector > 0)
        if len(hit) == 0:
            return pa.nulls(len(v.detector), DETECTION)
        # Each flow's row in the explained subset, null where nothing fired.
        take = pa.array(np.where(v.detector > 0, np.cumsum(v.detector > 0) - 1, 0), pa.int64(),
                        mask=v.detector == 0)
        idx = pa.array(hit)
        small = self.explain(prefix.take(idx), pc.take(proto, idx), pc.take(orig_bytes, idx), top,
                             Verdicts(v.loss[hit], v.reason[hit], v.qloss[hit], v.detector[hit]))
        return small.take(take)

    def explain(self, prefix: pa.Array, proto: pa.Array, orig_bytes: pa.Array, top: int,
                verdicts: Verdicts | None = None) -> pa.StructArray:
        """Decoded header and name, printable rendering, and what failed to reconstruct, per flow."""
        if isinstance(prefix, pa.ChunkedArray):
            prefix = prefix.combine_chunks()
        v = verdicts if verdicts is not None else self.score(prefix, proto, orig_bytes)
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
        qworst = self._worst_qname_features(buf, p, top) if self.qmodel is not None else [""] * n
        failed: list[list[int]] = []
        fields: list[str] = []
        for i, (row, vals) in enumerate(zip(order, worst_vals, strict=True)):
            keep = [int(b) for b, val in zip(row, vals, strict=True) if val > 0.25]  # > a quarter bit wrong
            failed.append(keep)
            if v.detector[i] >= 3:  # qname-model or tunnel
                fields.append(qworst[i])
            else:
                fields.append(",".join(dict.fromkeys(field_of_byte(b) for b in keep)))
        raws = prefix.to_pylist()
        names, complete, qtypes = [], [], []
        for raw, proto_i in zip(raws, p.tolist(), strict=True):
            name, done, qtype = render_qname(raw, proto_i)
            names.append(name)
            complete.append(done if name is not None else None)
            qtypes.append(None if qtype is None else rdatatype.to_text(qtype))
        flags = hdr[:, 1]

        def col(values: np.ndarray) -> pa.Array:
            return pa.array(values, type=pa.int32(), mask=values < 0)

        has_flags = flags >= 0
        arrays = {
            "detector": pa.array(np.asarray(DETECTORS, dtype=object)[v.detector], pa.string()),
            "header_verdict": pa.array(np.where(v.reason > 1, "invalid", "valid"), pa.string()),
            "header_reason": pa.array(np.asarray(REASONS, dtype=object)[v.reason], pa.string()),
            "loss": pa.array(v.loss, pa.float64()),
            "qname_loss": pa.array(v.qloss, pa.float64(), mask=np.isnan(v.qloss)),
            "prefix_hex": pa.array([None if b is None else b.hex() for b in raws], pa.string()),
            "prefix_text": printable(prefix),
            "dns_id": col(hdr[:, 0]),
            "qr": col(np.where(has_flags, flags >> 15, -1)),
            "opcode": col(np.where(has_flags, (flags >> 11) & 0xF, -1)),
            "rcode": col(np.where(has_flags, flags & 0xF, -1)),
            "qdcount": col(hdr[:, 2]),
            "ancount": col(hdr[:, 3]),
            "tcp_len": col(hdr[:, 6]),
            "failed_bytes": pa.array(failed, type=pa.list_(pa.int32())),
            "failed_fields": pa.array(fields, type=pa.string()),
            "qname": pa.array(names, pa.string()),
            "qname_complete": pa.array(complete, pa.bool_()),
            "qtype": pa.array(qtypes, pa.string()),
        }
        return pa.StructArray.from_arrays([arrays[f.name] for f in DETECTION], fields=list(DETECTION))

    def _worst_qname_features(self, buf: BinaryBuffers, proto: np.ndarray, top: int) -> list[str]:
        """The question features the model reconstructed worst, per flow ('max_label,entropy_longest')."""
        feats = question_features(buf.offsets, buf.data, buf.validity, buf.bit_offset, proto)
        err = squared_errors(self.qmodel, model_inputs(feats))
        out = []
        for row in err:
            per_feature: dict[str, float] = {}
            for owner, e in zip(self.qowner.tolist(), row.tolist(), strict=True):
                per_feature[owner] = per_feature.get(owner, 0.0) + e
            worst = sorted(per_feature.items(), key=lambda kv: -kv[1])[:top]
            out.append(",".join(k for k, e in worst if e > 0.05))
        return out


def anomaly_table(rows: pa.Table, found: pa.StructArray, meta: ModelMeta, ports: tuple[int, ...], run_id: str,
                  scored_at_us: int) -> pa.Table:
    """The flagged rows as the `anomalies` table holds them, from their flow columns (flow_id, ts, date,
    src_ip, src_port, dst_ip, dst_port, proto, orig_payload_prefix) and their DETECTION."""
    n = rows.num_rows
    qth = meta.qname.get("threshold") if meta.qname else None
    cols: dict[str, pa.Array | pa.ChunkedArray | np.ndarray | list] = {
        name: rows[name] for name in ("flow_id", "ts", "date", "src_ip", "src_port", "dst_ip", "dst_port", "proto")}
    cols |= {f.name: found.field(f.name) for f in DETECTION}
    cols |= {
        "matched_side": np.where(np.isin(rows["dst_port"].to_numpy(), list(ports)), "responder", "initiator"),
        "threshold": np.full(n, meta.threshold),
        "score": pc.divide(found.field("loss"), meta.threshold),
        "qname_threshold": pa.array([qth] * n, pa.float64()),
        "qname_score": pc.divide(found.field("qname_loss"), qth) if qth else pa.nulls(n, pa.float64()),
        "prefix_len": pc.binary_length(rows["orig_payload_prefix"]),
        "model_version": [meta.model_version] * n,
        "run_id": [run_id] * n,
        "scored_at": pa.array(np.full(n, scored_at_us, dtype="datetime64[us]")),
        **{f.name: pa.nulls(n, f.type) for f in ESCALATION},  # the Escalate stage fills them on its rows
    }
    return pa.table({f.name: (cols[f.name] if isinstance(cols[f.name], (pa.Array, pa.ChunkedArray))
                              else pa.array(cols[f.name])).cast(f.type) for f in ANOMALIES}, schema=ANOMALIES)


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


# ---- per-worker cache: the models are built once per Python worker, not per batch or per row ----
_CACHE: dict[str, Scorer] = {}
_LOCK = threading.Lock()


def cached_scorer(art: ModelArtifact, torch_threads: int) -> Scorer:
    """Build (once per process) or fetch the Scorer of a model version."""
    version = art.meta.model_version
    scorer = _CACHE.get(version)
    if scorer is None:
        with _LOCK:
            scorer = _CACHE.get(version)
            if scorer is None:
                torch.set_num_threads(torch_threads)
                scorer = Scorer(art)
                _CACHE[version] = scorer
    return scorer

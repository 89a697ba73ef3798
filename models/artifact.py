"""A trained model on disk: weights (model.pt), metadata (model.json) and a model card (MODEL_CARD.md)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

WEIGHTS = "model.pt"
QNAME_WEIGHTS = "qname.pt"  # the question-section model, when the archive's prefixes show names
# Names the training window asked on two days or more (sorted uint64 question keys, little-endian):
# the site's own, never flagged by the question model.
QNAME_KNOWN = "qname_known.u64"
METADATA = "model.json"
CARD = "MODEL_CARD.md"


class ModelError(ValueError):
    """The model directory is missing, incomplete or does not match this code."""


@dataclass(frozen=True)
class ModelMeta:
    feature_version: str
    width: int
    id_mode: str
    hidden: list[int]
    n_features: int
    threshold: float
    threshold_info: dict
    train_start: str
    train_end: str
    flows_used: dict
    loss_stats: dict
    training: dict
    model_version: str = ""
    extra: dict = field(default_factory=dict)
    # The question-section block: feature_version, n_features, hidden, threshold, threshold_info,
    # loss_stats, flows_used. Empty when it was not trained (prefixes too short to show a name).
    qname: dict = field(default_factory=dict)


def content_version(weights: bytes, meta: ModelMeta, qname_weights: bytes | None = None,
                    qname_known: bytes | None = None) -> str:
    """A content hash over both blocks' weights and everything that changes a verdict."""
    h = hashlib.sha256(weights)
    h.update(json.dumps([meta.feature_version, meta.width, meta.id_mode, meta.hidden, meta.threshold],
                        sort_keys=True).encode())
    if qname_weights is not None:
        q = meta.qname
        h.update(qname_weights)
        h.update(json.dumps([q.get("feature_version"), q.get("hidden"), q.get("threshold")]).encode())
    if qname_known:
        h.update(b"known")
        h.update(qname_known)
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class ModelArtifact:
    weights: bytes
    meta: ModelMeta
    qname_weights: bytes | None = None
    qname_known: bytes | None = None

    @property
    def has_qname(self) -> bool:
        return self.qname_weights is not None and bool(self.meta.qname)

    def save(self, model_dir: str, card: str | None = None) -> Path:
        out = Path(model_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / WEIGHTS).write_bytes(self.weights)
        if self.qname_weights is not None:
            (out / QNAME_WEIGHTS).write_bytes(self.qname_weights)
        else:
            (out / QNAME_WEIGHTS).unlink(missing_ok=True)
        if self.qname_known:
            (out / QNAME_KNOWN).write_bytes(self.qname_known)
        else:
            (out / QNAME_KNOWN).unlink(missing_ok=True)
        (out / METADATA).write_text(json.dumps(asdict(self.meta), indent=2, sort_keys=True) + "\n")
        if card is not None:
            (out / CARD).write_text(card)
        return out

    @classmethod
    def load(cls, model_dir: str) -> ModelArtifact:
        path = Path(model_dir)
        if not (path / WEIGHTS).is_file() or not (path / METADATA).is_file():
            raise ModelError(f"{model_dir} is not a portprint model: {WEIGHTS} and {METADATA} are needed; "
                             "create one with `portprint train --flows ARCHIVE --model DIR`")
        try:
            raw = json.loads((path / METADATA).read_text())
            meta = ModelMeta(**raw)
        except (json.JSONDecodeError, TypeError) as exc:
            raise ModelError(f"{path / METADATA} is unreadable ({exc}); retrain the model") from None
        weights = (path / WEIGHTS).read_bytes()
        qname = (path / QNAME_WEIGHTS).read_bytes() if (path / QNAME_WEIGHTS).is_file() else None
        if meta.qname and qname is None:
            raise ModelError(f"{path / QNAME_WEIGHTS} is missing but {METADATA} describes a question-section "
                             "model: restore the file or retrain")
        known = (path / QNAME_KNOWN).read_bytes() if (path / QNAME_KNOWN).is_file() else None
        if meta.qname.get("known_names", 0) and known is None:
            raise ModelError(f"{path / QNAME_KNOWN} is missing but {METADATA} lists {meta.qname['known_names']} known "
                             "names: copy the whole model folder, or retrain")
        if content_version(weights, meta, qname, known) != meta.model_version:
            raise ModelError(f"{path} weights do not match model_version {meta.model_version} in {METADATA}: "
                             "the files were changed separately; retrain or restore both")
        return cls(weights, meta, qname, known)

    def with_threshold(self, threshold: float, info: dict, block: str = "header") -> ModelArtifact:
        """The same weights with a new threshold for one block (and so a new model_version)."""
        raw = asdict(self.meta) | {"model_version": ""}
        if block == "qname":
            if not self.has_qname:
                raise ModelError("this model has no question-section block to re-threshold")
            raw["qname"] = raw["qname"] | {"threshold": float(threshold), "threshold_info": info}
        else:
            raw |= {"threshold": float(threshold), "threshold_info": info}
        version = content_version(self.weights, ModelMeta(**raw), self.qname_weights, self.qname_known)
        return ModelArtifact(self.weights, ModelMeta(**(raw | {"model_version": version})), self.qname_weights,
                             self.qname_known)

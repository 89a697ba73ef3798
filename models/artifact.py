"""A trained model on disk: weights (model.pt), metadata (model.json) and a model card (MODEL_CARD.md).

Written by `portprint train` and `portprint threshold` (jobs/train.py), read by every command that scores.
A folder is written whole and moved into place (see ``ModelArtifact.save``), and ``model.json`` lists every
other file with its SHA-256, so ``ModelArtifact.load`` refuses a folder that is half-written, edited or
mixed from two models.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import json
import os
import re
import shutil
import signal
import time
import uuid
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

WEIGHTS = "model.pt"
QNAME_WEIGHTS = "qname.pt"  # the question-section model, when the archive's prefixes show names
# Names the training window asked on two days or more (sorted uint64 question keys, little-endian):
# the site's own, never flagged by the question model.
QNAME_KNOWN = "qname_known.u64"
METADATA = "model.json"
CARD = "MODEL_CARD.md"
CORE = (WEIGHTS, QNAME_WEIGHTS, QNAME_KNOWN, METADATA)
# Siblings of a model folder X that a save in progress (or killed) leaves: X.tmp-<pid>-<hex>, X.old-<pid>-<hex>.
_SIDE = re.compile(r"^(?P<base>.+)\.(?P<kind>tmp|old)-(?P<pid>\d+)-[0-9a-f]+$")
FAULT_ENV, FAULT_READY_ENV = "PORTPRINT_FAULT", "PORTPRINT_FAULT_READY"


def fault_point(name: str) -> None:
    """A place where a test can kill the process: when env PORTPRINT_FAULT names it, stop here.

    The process writes its pid to the file named by PORTPRINT_FAULT_READY (so the test knows it has
    arrived) and waits to be killed; without that variable it kills itself with SIGKILL. Used by the
    crash tests; a no-op otherwise.
    """
    if os.environ.get(FAULT_ENV) != name:
        return
    ready = os.environ.get(FAULT_READY_ENV)
    if not ready:
        os.kill(os.getpid(), signal.SIGKILL)
    with open(ready + ".part", "w") as fh:
        fh.write(str(os.getpid()))
    os.replace(ready + ".part", ready)
    time.sleep(600)
    raise SystemExit(f"fault point {name}: nobody killed this process")


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
    # Every other file of the folder and its SHA-256 (written by save, checked by load).
    files: dict = field(default_factory=dict)


# What decides a verdict, block by block: a change to any of these is a different model (model_version).
# Header: which bits are read and how (feature_version, width, id_mode), the network's shape and its
# threshold. Question model: its features and shape, its threshold, and the Escalate stage's odd-name bar
# (odd_threshold, set at training as the held-out 1 - odd_rate quantile; odd_rate is the odd rule's least base rate).
HEADER_VERDICT_KEYS = ("feature_version", "width", "id_mode", "hidden", "n_features", "threshold")
QNAME_VERDICT_KEYS = ("feature_version", "n_features", "hidden", "threshold", "odd_threshold", "odd_rate")


def verdict_values(meta: ModelMeta) -> dict:
    """Every value of the metadata that changes a verdict (the weights and known names aside)."""
    return {"header": {k: getattr(meta, k) for k in HEADER_VERDICT_KEYS},
            "qname": {k: meta.qname.get(k) for k in QNAME_VERDICT_KEYS} if meta.qname else {}}


def content_version(weights: bytes, meta: ModelMeta, qname_weights: bytes | None = None,
                    qname_known: bytes | None = None) -> str:
    """A content hash over both blocks' weights, the known names and every value that changes a verdict."""
    h = hashlib.sha256(b"portprint-model-v2\0")
    h.update(hashlib.sha256(weights).digest())
    h.update(json.dumps(verdict_values(meta), sort_keys=True, allow_nan=True).encode())
    h.update(hashlib.sha256(qname_weights).digest() if qname_weights is not None else b"no-qname")
    h.update(hashlib.sha256(qname_known).digest() if qname_known else b"no-known")
    return h.hexdigest()[:16]


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _write(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # some filesystems (FUSE mounts) cannot open a folder; the renames still happen
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one atomic step (Linux renameat2 with RENAME_EXCHANGE); False where the OS or
    the filesystem cannot (macOS, FUSE mounts such as Databricks volumes). Python's os module has no
    binding for renameat2, hence ctypes."""
    if os.environ.get("PORTPRINT_NO_RENAME_EXCHANGE"):
        return False
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
        return False
    raise OSError(err, os.strerror(err), str(a))


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _leftovers(out: Path) -> list[tuple[Path, str, bool]]:
    """(path, tmp|old, its writer still runs) for every save leftover beside the folder ``out``."""
    found = []
    if out.parent.is_dir():
        for p in out.parent.iterdir():
            m = _SIDE.match(p.name)
            if m and m.group("base") == out.name:
                found.append((p, m.group("kind"), _pid_alive(int(m.group("pid")))))
    return sorted(found)


def _repair(out: Path) -> None:
    """Undo what a killed save left beside ``out`` (see ModelArtifact.save for the states)."""
    dead = [(p, kind) for p, kind, alive in _leftovers(out) if not alive]
    if not out.exists():
        olds = [p for p, kind in dead if kind == "old"]
        if len(olds) == 1:  # killed between moving the old folder away and the new one in: put it back
            os.rename(olds[0], out)
            dead = [(p, k) for p, k in dead if p != olds[0]]
    for p, _ in dead:
        shutil.rmtree(p, ignore_errors=True)


@dataclass(frozen=True)
class ModelArtifact:
    weights: bytes
    meta: ModelMeta
    qname_weights: bytes | None = None
    qname_known: bytes | None = None
    # Other files of the folder (the card, the held-out losses `portprint threshold` reads): name -> bytes.
    extras: dict = field(default_factory=dict)

    @property
    def has_qname(self) -> bool:
        return self.qname_weights is not None and bool(self.meta.qname)

    def files(self, card: str | None = None) -> dict[str, bytes]:
        """Every file of the folder but model.json, by name."""
        out = {WEIGHTS: self.weights}
        if self.qname_weights is not None:
            out[QNAME_WEIGHTS] = self.qname_weights
        if self.qname_known:
            out[QNAME_KNOWN] = self.qname_known
        for name, data in self.extras.items():
            if name in CORE or "/" in name or name.startswith("."):
                raise ModelError(f"{name!r} cannot be an extra file of a model folder")
            out[name] = data
        if card is not None:
            out[CARD] = card.encode()
        return out

    def save(self, model_dir: str, card: str | None = None) -> Path:
        """Write the folder whole beside ``model_dir``, then move it into place.

        Steps, and what a crash at each leaves:

        1. Write every file into ``X.tmp-<pid>-<hex>`` beside ``X``, model.json (which lists the others
           with their SHA-256) last, each fsynced. A crash leaves ``X`` as it was and a temporary folder
           that ``load`` refuses and the next save of ``X`` removes.
        2. Where the OS can (Linux), swap the two folders in one atomic rename (RENAME_EXCHANGE): ``X`` is
           then the new model and the temporary name holds the old one. Elsewhere: rename ``X`` to
           ``X.old-<pid>-<hex>``, then the new folder to ``X``. A crash between those two renames leaves no
           ``X``: ``load(X)`` reads the old folder there, and the next save of ``X`` renames it back first.
        3. Remove the old folder. A crash leaves ``X`` new and complete, and a leftover the next save removes.

        A folder that exists, is not empty and is not a portprint model is refused, never replaced.
        """
        out = Path(model_dir)
        if out.name in ("", ".", ".."):
            out = out.resolve()
        _repair(out)
        if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / METADATA).is_file())):
            raise ModelError(f"{out} exists and is not a portprint model folder: choose another --model folder "
                             "(a model is written as a folder of its own, and replaces only a model)")
        files = self.files(card if card is not None else _card_of(self.meta.model_version))
        meta = replace(self.meta, files={name: _sha256(data) for name, data in sorted(files.items())})
        out.parent.mkdir(parents=True, exist_ok=True)
        token = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        tmp = out.with_name(f"{out.name}.tmp-{token}")
        old = out.with_name(f"{out.name}.old-{token}")
        tmp.mkdir()
        try:
            for i, (name, data) in enumerate(files.items()):
                _write(tmp / name, data)
                if i == 0:
                    fault_point("model-save:writing")
            _write(tmp / METADATA, (json.dumps(asdict(meta), indent=2, sort_keys=True) + "\n").encode())
            _fsync_dir(tmp)
            fault_point("model-save:written")
            if not out.exists():
                os.rename(tmp, out)
            elif _exchange(tmp, out):
                os.rename(tmp, old)  # the old model, under the name the cleanup looks for
            else:
                os.rename(out, old)
                fault_point("model-save:moved-old")
                os.rename(tmp, out)
            _fsync_dir(out.parent)
            fault_point("model-save:swapped")
        except BaseException:
            if not out.exists() and old.exists():
                os.rename(old, out)
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        shutil.rmtree(old, ignore_errors=True)
        return out

    @classmethod
    def load(cls, model_dir: str, with_extras: bool = False, _aside: bool = False) -> ModelArtifact:
        """Read and verify a model folder: every file listed in model.json present with its SHA-256, and
        model_version the content hash of the weights and of every value that decides a verdict.

        The extra files (held-out losses) are checked but kept only ``with_extras``: the artifact travels to
        every Spark task, which needs the weights and nothing more."""
        path = Path(model_dir)
        m = _SIDE.match(path.name)
        if m and not _aside:
            what = ("a model folder being written, or left by a save that was killed" if m.group("kind") == "tmp"
                    else "the previous model, moved aside by a save")
            raise ModelError(f"{model_dir} is {what}: load {path.with_name(m.group('base'))} instead")
        if not path.exists():
            olds = [p for p, kind, _ in _leftovers(path) if kind == "old"]
            if len(olds) == 1:
                # A save is between moving the old folder aside and the new one in (or was killed there,
                # and the next save puts it back): the old folder is the model at this path until then.
                return cls.load(str(olds[0]), with_extras, _aside=True)
        if not (path / WEIGHTS).is_file() or not (path / METADATA).is_file():
            raise ModelError(f"{model_dir} is not a portprint model: {WEIGHTS} and {METADATA} are needed; "
                             "create one with `portprint train --flows ARCHIVE --model DIR`")
        try:
            raw = json.loads((path / METADATA).read_text())
            meta = ModelMeta(**raw)
        except (json.JSONDecodeError, TypeError, UnicodeDecodeError) as exc:
            raise ModelError(f"{path / METADATA} is unreadable ({exc}); retrain the model") from None
        if not meta.files:
            raise ModelError(f"{path} was written by an older portprint ({METADATA} lists no files, and its "
                             "model_version does not cover every value that decides a verdict): retrain it with "
                             "`portprint train`")
        data: dict[str, bytes] = {}
        for name, digest in meta.files.items():
            f = path / name
            if "/" in name or name == METADATA or not f.is_file():
                raise ModelError(f"{f} is missing but {METADATA} lists it: the folder is incomplete (copy the whole "
                                 "model folder, or retrain)")
            data[name] = f.read_bytes()
            if _sha256(data[name]) != digest:
                raise ModelError(f"{f}: its bytes do not match the SHA-256 that {METADATA} lists for it (the file was "
                                 "changed or half-written); restore the whole folder or retrain")
        weights, qname, known = data.pop(WEIGHTS, None), data.pop(QNAME_WEIGHTS, None), data.pop(QNAME_KNOWN, None)
        if weights is None:
            raise ModelError(f"{path / METADATA} does not list {WEIGHTS}; retrain the model")
        if meta.qname and qname is None:
            raise ModelError(f"{path / QNAME_WEIGHTS} is missing but {METADATA} describes a question-section "
                             "model: restore the file or retrain")
        if meta.qname.get("known_names", 0) and known is None:
            raise ModelError(f"{path / QNAME_KNOWN} is missing but {METADATA} lists {meta.qname['known_names']} known "
                             "names: copy the whole model folder, or retrain")
        if content_version(weights, meta, qname, known) != meta.model_version:
            raise ModelError(f"{path} weights do not match model_version {meta.model_version} in {METADATA}: "
                             "the files were changed separately; retrain or restore both")
        data.pop(CARD, None)  # rewritten from the metadata on every save
        return cls(weights, meta, qname, known, data if with_extras else {})

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
                             self.qname_known, dict(self.extras))


def _card_of(version: str) -> str:
    """A stand-in card when the caller gives none: say what the model is and where its numbers are."""
    return f"# portprint model {version}\n\nSee {METADATA} for its training window, thresholds and losses.\n"

"""The model registry (MLflow): log each training, register versions, promote, resolve `models:/` URIs.

Called by the command line (jobs/cli.py: train, threshold, promote, score, evaluate). Embedded default:
a local MLflow store (a SQLite database and an artifact folder, by default beside the model folders); on
Databricks the workspace's tracking server and the Unity Catalog registry. A model folder stays the unit a
person can copy by hand: the registry keeps the whole folder as a run artifact, and a registry URI
resolves to a verified local copy of that folder.

Lifecycle: every trained model is registered as a new version carrying the ``candidate`` alias (and tag
``portprint.stage=candidate``) until ``promote`` gives it the ``champion`` alias, the one nightly scoring
reads. A version is never changed: a new threshold is a new folder and a new version.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from pathlib import Path

from portprint.models.artifact import ModelArtifact, ModelError

CHAMPION, CANDIDATE = "champion", "candidate"
ARTIFACT_PATH = "model"  # the model folder's place in its run's artifacts
TAG_VERSION, TAG_STAGE, TAG_FROM = "portprint.model_version", "portprint.stage", "portprint.derived_from"
# models:/NAME/VERSION or models:/NAME@ALIAS (MLflow's own URI forms; NAME may be catalog.schema.model).
_URI = re.compile(r"^models:/(?P<name>[^/@\s]+)(?:/(?P<version>\d+)|@(?P<alias>[A-Za-z0-9_-]+))/?$")
_KEY_BAD = re.compile(r"[^A-Za-z0-9_\-. /]")


class RegistryError(ModelError):
    """The registry cannot do what was asked; the message says what was looked for and what to do."""


def is_registry_uri(text: str) -> bool:
    return text.startswith("models:/")


def parse_uri(uri: str) -> tuple[str, str | None, str | None]:
    """(name, version, alias) of a models:/ URI."""
    m = _URI.match(uri)
    if not m:
        raise RegistryError(f"{uri!r} is not a model URI: use models:/NAME/VERSION (e.g. models:/portprint/3) or "
                            "models:/NAME@ALIAS (e.g. models:/portprint@champion)")
    return m.group("name"), m.group("version"), m.group("alias")


@dataclass(frozen=True)
class Registered:
    """One registered version."""

    name: str
    version: str
    run_id: str
    model_version: str  # portprint's content hash of the folder
    aliases: tuple[str, ...] = ()

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


def _one_line(fn: Callable) -> Callable:
    """MLflow's own errors (store unreachable, database locked, ...) as one-line RegistryErrors."""

    @wraps(fn)
    def call(self, *args, **kwargs):
        from mlflow.exceptions import MlflowException

        try:
            return fn(self, *args, **kwargs)
        except MlflowException as exc:
            first = (str(exc.message).splitlines() or [exc.error_code])[0]
            raise RegistryError(f"model registry {self.registry_uri}: {first}") from None

    return call


def _quiet() -> None:
    # MLflow and Alembic announce database set-up at INFO; portprint prints its own one-line progress.
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _flatten(prefix: str, value, out: dict) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = value


def _key(text: str) -> str:
    """An MLflow metric or parameter key (letters, digits, _-. / only; at most 250 characters).

    Label names in an evaluation come from a labels file, so they are escaped, never trusted."""
    return _KEY_BAD.sub(lambda m: f"_{ord(m.group()):x}_", text)[:250]


def training_params(art: ModelArtifact) -> dict[str, str]:
    """What a training was asked to do: every setting in model.json that is not a measurement."""
    meta = art.meta
    flat: dict = {}
    _flatten("", {"feature_version": meta.feature_version, "width": meta.width, "id_mode": meta.id_mode,
                  "hidden": meta.hidden, "n_features": meta.n_features, "train_start": meta.train_start,
                  "train_end": meta.train_end,
                  "threshold_method": meta.threshold_info.get("method"),
                  "target_fpr": meta.threshold_info.get("target_fpr"),
                  "training": {k: v for k, v in meta.training.items() if k not in ("history", "epochs_run", "window")},
                  "window": {k: v for k, v in meta.training.get("window", {}).items() if k != "dates"},
                  "window_dates": len(meta.training.get("window", {}).get("dates", [])),
                  "qname": {k: meta.qname.get(k) for k in ("feature_version", "hidden", "n_features", "odd_rate")}
                  | {"threshold_method": meta.qname.get("threshold_info", {}).get("method"),
                     "target_fpr": meta.qname.get("threshold_info", {}).get("target_fpr")}
                  if meta.qname else {}}, flat)
    return {_key(k): json.dumps(v) if isinstance(v, (list, dict)) else str(v) for k, v in flat.items()}


def training_metrics(art: ModelArtifact) -> dict[str, float]:
    """What a training measured: both thresholds, the odd-name bar, loss statistics, flows used."""
    meta = art.meta
    flat: dict = {}
    _flatten("", {"threshold": meta.threshold, "loss": meta.loss_stats, "flows": meta.flows_used,
                  "epochs_run": meta.training.get("epochs_run")}, flat)
    if meta.qname:
        q = meta.qname
        _flatten("qname", {"threshold": q.get("threshold"), "odd_threshold": q.get("odd_threshold"),
                           "loss": q.get("loss_stats", {}), "flows": q.get("flows_used", {}),
                           "epochs_run": q.get("epochs_run"), "known_names": q.get("known_names")}, flat)
    return _numbers(flat)


def _numbers(flat: dict) -> dict[str, float]:
    out = {}
    for k, v in flat.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            continue  # MLflow metrics are finite numbers; the rest stays in the model folder
        out[_key(k)] = float(v)
    return out


def evaluation_metrics(evaluation: dict) -> dict[str, float]:
    """The numbers of an `evaluate` result, as eval.<path> metrics."""
    flat: dict = {}
    _flatten("eval", evaluation, flat)
    return _numbers(flat)


class Registry:
    """One MLflow tracking store and model registry."""

    def __init__(self, tracking_uri: str, registry_uri: str | None = None, experiment: str = "portprint",
                 artifact_location: str | None = None, cache_dir: str | None = None):
        from mlflow import MlflowClient

        _quiet()  # after the import: importing mlflow sets its loggers up

        self.tracking_uri, self.registry_uri = tracking_uri, registry_uri or tracking_uri
        self.client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.registry_uri)
        self.experiment, self.artifact_location = experiment, artifact_location
        key = hashlib.sha256(f"{self.tracking_uri}\0{self.registry_uri}".encode()).hexdigest()[:12]
        self.cache_dir = Path(cache_dir) if cache_dir else Path(tempfile.gettempdir()) / "portprint-models" / key

    @classmethod
    def local(cls, path: str, experiment: str = "portprint", cache_dir: str | None = None) -> Registry:
        """The embedded store: ``path/mlflow.db`` (runs, versions, aliases) and ``path/artifacts`` (folders).

        SQLite rather than MLflow's file store: MLflow 3 refuses the file store unless told to allow it
        (it is in maintenance mode), and SQLite is MLflow's own default."""
        root = Path(path).absolute()
        root.mkdir(parents=True, exist_ok=True)
        return cls(f"sqlite:///{root / 'mlflow.db'}", experiment=experiment,
                   artifact_location=(root / "artifacts").as_uri(), cache_dir=cache_dir or str(root / "cache"))

    # ------------------------------------------------------------------------------------------ writes
    def _experiment_id(self) -> str:
        exp = self.client.get_experiment_by_name(self.experiment)
        if exp is not None:
            return exp.experiment_id
        return self.client.create_experiment(self.experiment, artifact_location=self.artifact_location)

    @_one_line
    def log_training(self, model_dir: str, name: str, evaluation: dict | None = None,
                     derived_from: str | None = None) -> Registered:
        """Log a model folder's training (parameters, thresholds, losses, evaluation metrics when given,
        the whole folder as an artifact) as one run, and register it as a new candidate version."""
        from mlflow.entities import Metric, Param, RunTag
        from mlflow.exceptions import MlflowException

        art = ModelArtifact.load(model_dir)  # only a verified folder is registered
        meta = art.meta
        tags = {TAG_VERSION: meta.model_version, TAG_STAGE: CANDIDATE} | ({TAG_FROM: derived_from} if derived_from
                                                                         else {})
        run = self.client.create_run(self._experiment_id(), run_name=f"portprint-{meta.model_version}", tags=tags)
        run_id = run.info.run_id
        try:
            params = [Param(k, v[:6000]) for k, v in training_params(art).items()]
            metrics = training_metrics(art) | (evaluation_metrics(evaluation) if evaluation else {})
            stamp = int(run.info.start_time)
            items = [Metric(k, v, stamp, 0) for k, v in metrics.items()]
            for i, (train_loss, val_loss) in enumerate(meta.training.get("history", [])):
                items += [Metric("history.train_loss", float(train_loss), stamp, i),
                          Metric("history.val_loss", float(val_loss), stamp, i)]
            for i in range(0, max(len(params), len(items)), 100):  # MLflow takes at most 100 params per batch
                self.client.log_batch(run_id, metrics=items[i:i + 100], params=params[i:i + 100],
                                      tags=[RunTag(k, v) for k, v in tags.items()] if i == 0 else [])
            self.client.log_artifacts(run_id, model_dir, ARTIFACT_PATH)
            self.client.log_text(run_id, _mlmodel_yaml(meta.model_version), f"{ARTIFACT_PATH}/MLmodel")
            self.client.set_terminated(run_id)
        except BaseException:
            self.client.set_terminated(run_id, status="FAILED")
            raise
        try:
            self.client.create_registered_model(name, description="portprint: port-53 traffic that is not DNS")
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        mv = self.client.create_model_version(name, f"runs:/{run_id}/{ARTIFACT_PATH}", run_id=run_id, tags=tags,
                                              description=f"portprint model {meta.model_version}")
        self.client.set_registered_model_alias(name, CANDIDATE, mv.version)
        return Registered(name, str(mv.version), run_id, meta.model_version, (CANDIDATE,))

    @_one_line
    def log_evaluation(self, ref: str, evaluation: dict) -> Registered:
        """Add an evaluation's numbers to the run of a registered version (eval.* metrics)."""
        from mlflow.entities import Metric

        reg = self.get(ref)
        stamp = int(self.client.get_run(reg.run_id).info.start_time)
        items = [Metric(k, v, stamp, 0) for k, v in evaluation_metrics(evaluation).items()]
        for i in range(0, len(items), 1000):
            self.client.log_batch(reg.run_id, metrics=items[i:i + 1000])
        return reg

    @_one_line
    def promote(self, ref: str) -> tuple[Registered, Registered | None]:
        """Give a version the champion alias; return it and the champion it replaces (None: the first)."""
        reg = self.get(ref)
        try:
            before: Registered | None = self.get(f"models:/{reg.name}@{CHAMPION}")
        except RegistryError:
            before = None
        self.client.set_registered_model_alias(reg.name, CHAMPION, reg.version)
        self.client.set_model_version_tag(reg.name, reg.version, TAG_STAGE, CHAMPION)
        if before is not None and before.version != reg.version:
            self.client.set_model_version_tag(before.name, before.version, TAG_STAGE, "retired")
        return self.get(reg.uri), before

    @_one_line
    def tag(self, ref: str, tags: dict[str, str]) -> None:
        """Set tags on a registered version (promote records its checks, and a forced promotion's reason)."""
        reg = self.get(ref)
        for k, v in tags.items():
            self.client.set_model_version_tag(reg.name, reg.version, k, str(v)[:5000])

    # ------------------------------------------------------------------------------------------ reads
    @_one_line
    def get(self, ref: str) -> Registered:
        """The registered version a models:/ URI names."""
        from mlflow.exceptions import MlflowException

        name, version, alias = parse_uri(ref)
        try:
            mv = (self.client.get_model_version(name, version) if version
                  else self.client.get_model_version_by_alias(name, alias))
        except MlflowException as exc:
            what = f"version {version}" if version else f"alias @{alias}"
            hint = (f"; promote a version first: `portprint promote --model models:/{name}/N`" if alias == CHAMPION
                    else "")
            raise RegistryError(f"{ref}: the registry at {self.registry_uri} has no {what} of model {name} "
                                f"({exc.error_code}){hint}") from None
        tags = dict(mv.tags or {})
        if TAG_VERSION not in tags:
            raise RegistryError(f"{ref} (version {mv.version}) was not registered by portprint: it has no "
                                f"{TAG_VERSION} tag")
        return Registered(name, str(mv.version), mv.run_id, tags[TAG_VERSION], tuple(getattr(mv, "aliases", ()) or ()))

    @_one_line
    def resolve(self, ref: str) -> Path:
        """A verified local copy of the model folder a models:/ URI names, downloaded once per version.

        The copy lives in the cache under the version number and is checked on every use: its content
        hash must be the one registered, so a changed or half-downloaded copy is fetched again."""
        import mlflow.artifacts

        reg = self.get(ref)
        target = self.cache_dir / _safe_name(reg.name) / f"v{reg.version}"
        if target.is_dir():
            try:
                if ModelArtifact.load(str(target)).meta.model_version == reg.model_version:
                    return target
            except ModelError:
                pass
            shutil.rmtree(target, ignore_errors=True)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f"{target.name}.download-{uuid.uuid4().hex[:12]}")
        try:
            # MLflow reads a models:/ URI from its process-wide registry, except on Databricks; elsewhere ask
            # this registry where the version's folder is and download that.
            source = (reg.uri if self.registry_uri.startswith("databricks")
                      else self.client.get_model_version_download_uri(reg.name, reg.version))
            mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(tmp),
                                                tracking_uri=self.tracking_uri, registry_uri=self.registry_uri)
            folder = _model_root(tmp)
            got = ModelArtifact.load(str(folder)).meta.model_version
            if got != reg.model_version:
                raise RegistryError(f"{reg.uri}: the registered folder is model {got}, but the version was registered "
                                    f"as {reg.model_version}; the registry's artifacts were changed")
            try:
                os.rename(folder, target)
            except OSError:
                if not target.is_dir():  # another process put the same version there first: use it
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return target


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def _model_root(folder: Path) -> Path:
    """The folder holding model.json: the download itself, or the single folder inside it."""
    if (folder / "model.json").is_file():
        return folder
    inner = [p for p in folder.iterdir() if p.is_dir() and (p / "model.json").is_file()]
    if len(inner) == 1:
        return inner[0]
    raise RegistryError(f"the downloaded artifacts in {folder} hold no portprint model folder")


def _mlmodel_yaml(model_version: str) -> str:
    """An MLmodel file for the logged folder.

    Unity Catalog registers only folders with an MLmodel file that has a signature; portprint's folder is
    not a pyfunc model (it is read by portprint itself), so the signature describes what it scores."""
    from mlflow.models import Model, ModelSignature
    from mlflow.types import ColSpec, Schema

    sig = ModelSignature(inputs=Schema([ColSpec("binary", "orig_payload_prefix"), ColSpec("integer", "proto"),
                                        ColSpec("long", "orig_bytes")]),
                         outputs=Schema([ColSpec("double", "score"), ColSpec("double", "qname_score")]))
    m = Model(signature=sig)
    m.add_flavor("portprint", format="portprint model folder", model_version=model_version,
                 loader="portprint.models.artifact.ModelArtifact.load")
    return m.to_yaml()

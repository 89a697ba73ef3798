"""Model lifecycle for the command line: which registry, and which local folder a --model argument means.

Called by jobs/cli.py (train, threshold, promote, score, evaluate). The registry itself is
models/registry.py; this module turns the configuration's `registry` block into one.
"""

from __future__ import annotations

import os

from portprint.conf.config import Config
from portprint.models.registry import Registered, Registry, RegistryError, is_registry_uri

STORE_DIR = "mlruns"  # the local store's folder name, beside the model folders unless registry.path says otherwise


def open_registry(cfg: Config, store: str | None = None, model_dir: str | None = None) -> Registry:
    """The registry of ``store`` (a folder, --registry), else the configuration's, else the local store beside
    ``model_dir``."""
    rc = cfg.registry
    if store is None and rc.tracking_uri:
        return Registry(rc.tracking_uri, rc.registry_uri, rc.experiment, cache_dir=rc.cache)
    path = store or rc.path
    if path is None:
        if model_dir is None:
            raise RegistryError("a models:/ URI needs to know where the registry is: pass --registry DIR (train keeps "
                                f"it beside the model folder, in <its parent>/{STORE_DIR}) or set registry.path "
                                "in a --conf file")
        path = local_store(cfg, None, model_dir)
    return Registry.local(path, rc.experiment, rc.cache)


def local_store(cfg: Config, store: str | None, model_dir: str) -> str | None:
    """The local store's folder a command used, when the configuration does not name it (for the hints)."""
    if store or cfg.registry.tracking_uri or cfg.registry.path:
        return store
    return os.path.join(os.path.dirname(os.path.abspath(model_dir.rstrip("/"))), STORE_DIR)


def model_folder(cfg: Config, model: str, store: str | None = None) -> str:
    """The verified local folder a --model argument names: the folder itself, or the download of a URI."""
    if not is_registry_uri(model):
        return model
    return str(open_registry(cfg, store).resolve(model))


def register(cfg: Config, model_dir: str, store: str | None = None, derived_from: str | None = None,
             evaluation: dict | None = None) -> Registered | None:
    """Log and register a model folder just written (None when registry.enabled is off)."""
    if not cfg.registry.enabled:
        return None
    return open_registry(cfg, store, model_dir).log_training(model_dir, cfg.registry.model_name,
                                                             evaluation=evaluation, derived_from=derived_from)

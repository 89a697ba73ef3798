"""Typed configuration, loaded once from conf/ (base + environment overlay + optional user file)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A configuration file or key is wrong; the message says which and how to fix it."""


@dataclass(frozen=True)
class SparkConf:
    master: str | None = "local[*]"
    app_name: str = "portprint"
    shuffle_partitions: int = 8
    max_partition_bytes: str = "128m"
    arrow_batch_rows: int = 65536
    torch_threads_per_task: int = 1
    python_reader: bool = True
    rows_per_task: int = 524288
    driver_memory: str = "2g"
    log_level: str = "FATAL"
    # JVM packages of the local session (jobs/engine/jars.py): fetched from Maven on first use, then cached.
    delta_jars: str = "auto"    # auto: Spark's Delta writer and reader, delta-rs if the jars cannot be had; off
    s3a_jars: str = "auto"      # auto: when a path of the command is on s3:// or s3a://; on; off
    maven_repositories: tuple[str, ...] = ("~/.m2/repository", "https://repo1.maven.org/maven2/")
    maven_timeout_s: float = 30.0
    jars_cache: str | None = None  # Ivy cache folder; null: Ivy's default, ~/.ivy2.5.2/cache
    # A persistent local catalog (catalog.schema.table names that outlive the process): a folder for Hive's
    # metastore (embedded Derby) and the managed tables. null: Spark's in-memory catalog, names last one session.
    catalog_dir: str | None = None


@dataclass(frozen=True)
class Columns:
    flow_id: str = "flow_id"
    ts: str = "ts"
    src_ip: str = "src_ip"
    dst_ip: str = "dst_ip"
    src_port: str = "src_port"
    dst_port: str = "dst_port"
    proto: str = "proto"
    orig_payload_prefix: str = "orig_payload_prefix"
    orig_bytes: str = "orig_bytes"
    orig_pkts: str | None = "orig_pkts"  # optional: null (or absent from the files) turns the socket rule off
    date: str = "date"


@dataclass(frozen=True)
class ArchiveConf:
    columns: Columns = field(default_factory=Columns)
    prefix_encoding: str = "binary"
    # Who lists a remote archive (jobs/engine/storage.py): arrow (the driver's own credentials), spark (Spark's,
    # for drivers with none: Spark Connect, Databricks), or auto (spark there, arrow elsewhere).
    lister: str = "auto"


@dataclass(frozen=True)
class ScopeConf:
    ports: tuple[int, ...] = (53,)
    protocols: tuple[int, ...] = (6, 17)
    match: str = "either"


@dataclass(frozen=True)
class FeatureConf:
    width: int = 8
    id_mode: str = "mask"


@dataclass(frozen=True)
class ModelConf:
    hidden: tuple[int, ...] = (32, 12)
    epochs: int = 40
    batch_size: int = 1024
    learning_rate: float = 0.003
    patience: int = 4
    seed: int = 53
    validation_fraction: float = 0.1
    calibration_fraction: float = 0.2
    max_train_flows: int = 2_000_000
    clean_with_rule: bool = True
    pattern_balance: float = 0.0
    augment: bool = True
    epoch_rows: int = 50_000
    qname: bool = True
    qname_hidden: tuple[int, ...] = (64, 16)
    qname_augment: bool = True
    qname_balance: float = 1.0
    qname_trim: float = 0.005
    qname_known_max: int = 1_000_000
    qname_min_flows: int = 500
    window_days: int = 14      # train on this many most recent archive dates (train --days; --start/--end win)


@dataclass(frozen=True)
class ThresholdConf:
    target_fpr: float = 1e-4
    method: str = "auto"
    qname_method: str = "pot"
    qname_target_fpr: float = 1e-4


@dataclass(frozen=True)
class EscalateConf:
    """The Escalate stage (udfs/escalate.py): which groups of a day's names are a DNS tunnel. The split each value
    was chosen on is in docs/detection.md."""

    enabled: bool = True
    # shape: enough distinct names no host name has (site-independent; needs no training window)
    shape_hex: int = 50            # a hex token (between '-'/'_') this long, longer than any hash in a label ...
    shape_text: int = 40           # ... or another encoded token (base32, base64, binary) this long, not words ...
    shape_min_names: int = 8       # ... in at least this many distinct names of the group
    shape_min_share: float = 0.1   # ... and this share of them
    zone_level: bool = True        # the shape rule over all clients of a group too (spread exfiltration)
    # socket: one UDP socket kept open for many datagrams whose visible name is data-like
    socket_pkts: int = 8           # client datagrams in one flow (needs archive.columns.orig_pkts)
    socket_label: int = 8          # a carrier record type's label this long counts as data-like
    socket_quiet_groups: int = 3   # a client with such long flows of ordinary names in this many groups reuses a port
    companion_bytes: int = 8       # in a shape/socket group, new names with this many non-word data bytes go along
    # session: many new names of one client and registered domain carry one id-like token (polling, a session id)
    session_min_names: int = 20
    session_share: float = 0.4
    # odd: the question model's view, with the day's own base rate
    odd: bool = False              # off by default: model-dependent, adds nothing measurable (conf/base.yml)
    odd_rate: float = 0.1          # training: a name is odd above the held-out (1 - odd_rate) quantile
    odd_min_share: float = 0.5     # a client's group escalates when at least this share of its names is odd-new ...
    alpha: float = 0.01            # ... and that many has probability <= alpha / groups that day
    odd_min_bytes: int = 12        # an odd name counts when its label data holds this many bytes, not words
    max_asks: int = 2              # ... and the client asked it at most this many times that day
    odd_quiet_above: float = 0.3   # a day whose odd share of names is above this is one the model does not describe


@dataclass(frozen=True)
class OutputConf:
    anomalies: str = "anomalies"
    runs: str = "runs"
    patterns: str = "anomaly_patterns"
    pattern_days: str = "anomaly_pattern_days"
    verdicts: str = "verdicts"
    suppressions: str = "suppressions"
    suppression_hits: str = "suppression_hits"
    escalation_history: str = "escalation_history"
    exported: str = "exported"
    writer: str = "auto"
    top_bytes: int = 3
    chunk_days: int = 7
    lock_wait_s: float = 1800.0  # how long a run waits for another run's commits on the same warehouse
    stale_staging_hours: float = 24.0  # object storage: a run removes staging older than this (killed runs')
    location: str | None = None  # Unity Catalog tables: null = managed; a path = external tables under it
    # `portprint sql` and the notebooks also name a path warehouse's tables <sql_schema>.<table> in a local
    # session's catalog, so that time travel (VERSION AS OF, TIMESTAMP AS OF) and DESCRIBE HISTORY work on them.
    sql_schema: str = "portprint"


@dataclass(frozen=True)
class GoalsConf:
    """What `evaluate` must show on a labelled set before `promote --labels` makes a model the champion."""

    max_fpr: float = 0.001            # flagged share of genuine DNS (label dns), all detectors together
    min_recall: float = 0.98          # flagged share of non-DNS protocols
    min_tunnel_recall: float = 0.9    # flagged share of dns-tunnel flows (when the labels hold any)


@dataclass(frozen=True)
class PromoteConf:
    """The checks `portprint promote` runs before it moves the champion alias (jobs/promotion.py)."""

    max_alert_ratio: float = 1.5   # refuse when the candidate raises more than this times the champion's alerts
    compare_days: int = 7          # ... on the champion's last scored dates, this many
    goals: GoalsConf = field(default_factory=GoalsConf)


@dataclass(frozen=True)
class RegistryConf:
    """The model registry (models/registry.py): MLflow, a local store unless a URI is given."""

    enabled: bool = True             # train and threshold register each model folder they write
    path: str | None = None          # local store folder; null: <the model folder's parent>/mlruns
    tracking_uri: str | None = None  # instead of the local store, e.g. databricks
    registry_uri: str | None = None  # e.g. databricks-uc (Unity Catalog); null: the tracking URI
    model_name: str = "portprint"    # Unity Catalog: catalog.schema.model
    experiment: str = "portprint"    # Databricks: a workspace path, e.g. /Shared/portprint
    cache: str | None = None         # where models:/ URIs are downloaded; null: <store>/cache or the temp folder


@dataclass(frozen=True)
class S3Conf:
    """S3 for Spark's s3a, delta-rs and pyarrow alike (jobs/engine/storage.py). null: the standard AWS_* variables."""

    endpoint: str | None = None          # else AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL; unset: AWS itself
    region: str | None = None            # else AWS_REGION, AWS_DEFAULT_REGION
    path_style: str | bool = "auto"      # auto: path-style addressing when an endpoint is set (MinIO, moto)
    credentials_provider: str | None = None  # s3a's fs.s3a.aws.credentials.provider; null: Hadoop's default chain


@dataclass(frozen=True)
class MaintainConf:
    """`portprint maintain` (jobs/warehouse/maintain.py): compaction, VACUUM and staging clean-up."""

    time_travel_days: int = 30          # VACUUM keeps every version this recent readable; less is refused
    zorder: tuple[str, ...] = ("src_ip", "dst_ip", "detector")  # anomalies' Z-ORDER columns


@dataclass(frozen=True)
class Config:
    spark: SparkConf = field(default_factory=SparkConf)
    archive: ArchiveConf = field(default_factory=ArchiveConf)
    scope: ScopeConf = field(default_factory=ScopeConf)
    features: FeatureConf = field(default_factory=FeatureConf)
    model: ModelConf = field(default_factory=ModelConf)
    threshold: ThresholdConf = field(default_factory=ThresholdConf)
    escalate: EscalateConf = field(default_factory=EscalateConf)
    output: OutputConf = field(default_factory=OutputConf)
    registry: RegistryConf = field(default_factory=RegistryConf)
    promote: PromoteConf = field(default_factory=PromoteConf)
    s3: S3Conf = field(default_factory=S3Conf)
    maintain: MaintainConf = field(default_factory=MaintainConf)
    env: str = "local"

    def validate(self) -> Config:
        """Check values whose mistakes would otherwise surface deep inside a Spark task."""
        checks = [
            (self.archive.prefix_encoding in ("binary", "hex"), "archive.prefix_encoding must be binary or hex"),
            (self.archive.lister in ("auto", "arrow", "spark"), "archive.lister must be auto, arrow or spark"),
            (self.scope.match in ("responder", "initiator", "either"),
             "scope.match must be responder, initiator or either"),
            (all(p in (6, 17) for p in self.scope.protocols), "scope.protocols may hold only 6 (TCP) and 17 (UDP)"),
            (1 <= self.features.width <= 32, "features.width must be between 1 and 32 bytes"),
            (self.features.id_mode in ("mask", "keep"), "features.id_mode must be mask or keep"),
            (0 < self.threshold.target_fpr < 0.5, "threshold.target_fpr must be in (0, 0.5)"),
            (self.threshold.method in ("auto", "empirical", "lognormal", "pot"),
             "threshold.method must be auto, empirical, lognormal or pot"),
            (self.threshold.qname_method in ("auto", "empirical", "lognormal", "pot"),
             "threshold.qname_method must be auto, empirical, lognormal or pot"),
            (self.output.writer in ("auto", "spark", "delta-rs"), "output.writer must be auto, spark or delta-rs"),
            (self.model.qname_known_max >= 0, "model.qname_known_max must be 0 or more"),
            (self.model.window_days >= 0, "model.window_days must be 0 (every date) or more"),
            (0 < self.escalate.odd_rate < 0.5, "escalate.odd_rate must be in (0, 0.5)"),
            (self.escalate.odd_rate < self.escalate.odd_min_share <= 1,
             "escalate.odd_min_share must be above odd_rate and at most 1"),
            (0 < self.escalate.alpha < 1, "escalate.alpha must be in (0, 1)"),
            (0 < self.escalate.shape_min_share <= 1, "escalate.shape_min_share must be in (0, 1]"),
            (0 < self.escalate.session_share <= 1 and self.escalate.session_min_names >= 2,
             "escalate.session_share must be in (0, 1] and session_min_names at least 2"),
            (min(self.escalate.shape_hex, self.escalate.shape_text, self.escalate.shape_min_names,
                 self.escalate.socket_pkts, self.escalate.socket_quiet_groups, self.escalate.max_asks) >= 1,
             "escalate.shape_hex, shape_text, shape_min_names, socket_pkts, socket_quiet_groups and max_asks must "
             "be at least 1"),
            (0 < self.escalate.odd_quiet_above < 1, "escalate.odd_quiet_above must be in (0, 1)"),
            (0 < self.threshold.qname_target_fpr < 0.5, "threshold.qname_target_fpr must be in (0, 0.5)"),
            (self.spark.arrow_batch_rows > 0 and self.spark.torch_threads_per_task > 0 and self.spark.rows_per_task > 0,
             "spark.arrow_batch_rows, spark.torch_threads_per_task and spark.rows_per_task must be positive"),
            (self.spark.delta_jars in ("auto", "off"), "spark.delta_jars must be auto or off"),
            (self.spark.s3a_jars in ("auto", "on", "off"), "spark.s3a_jars must be auto, on or off"),
            (self.spark.maven_timeout_s > 0, "spark.maven_timeout_s must be positive"),
            (self.s3.path_style in ("auto", True, False), "s3.path_style must be auto, true or false"),
            (self.maintain.time_travel_days >= 0, "maintain.time_travel_days must be 0 or more"),
            (self.output.lock_wait_s >= 0, "output.lock_wait_s must be 0 or more"),
            (self.output.stale_staging_hours > 0, "output.stale_staging_hours must be positive"),
            (self.promote.max_alert_ratio >= 1, "promote.max_alert_ratio must be 1 or more"),
            (self.promote.compare_days >= 1, "promote.compare_days must be 1 or more"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        return self


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _build(cls: type, values: dict[str, Any], where: str) -> Any:
    """Build a frozen dataclass from a dict, refusing unknown keys so typos do not pass silently."""
    if not isinstance(values, dict):
        raise ConfigError(f"{where} must be a mapping, got {type(values).__name__}")
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"unknown key(s) {', '.join(where + '.' + k for k in unknown)}; "
                          f"known: {', '.join(sorted(known))}")
    kwargs: dict[str, Any] = {}
    for name, value in values.items():
        default = getattr(cls(), name)
        if dataclasses.is_dataclass(default):
            kwargs[name] = _build(type(default), value, f"{where}.{name}")
        elif isinstance(default, tuple):
            kwargs[name] = tuple(value)
        elif isinstance(default, bool) or default is None or isinstance(default, str):
            kwargs[name] = value
        elif isinstance(default, (int, float)):
            try:
                kwargs[name] = type(default)(value)
            except (TypeError, ValueError):
                raise ConfigError(f"{where}.{name} must be a number, got {value!r}") from None
        else:
            kwargs[name] = value
    return cls(**kwargs)


def _read_yaml(text: str, where: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must hold a mapping at the top level")
    return data


def load_config(env: str = "local", conf_file: str | None = None,
                overrides: dict[str, Any] | None = None) -> Config:
    """Load conf/base.yml, then conf/<env>.yml, then conf_file, then overrides (later wins)."""
    package = resources.files("portprint.conf")
    merged = _read_yaml(package.joinpath("base.yml").read_text(), "conf/base.yml")
    overlay = package.joinpath(f"{env}.yml")
    if not overlay.is_file():
        raise ConfigError(f"no environment overlay conf/{env}.yml; use --env local or --env databricks")
    merged = _merge(merged, _read_yaml(overlay.read_text(), f"conf/{env}.yml"))
    if conf_file:
        path = Path(conf_file)
        if not path.is_file():
            raise ConfigError(f"config file {conf_file} does not exist")
        merged = _merge(merged, _read_yaml(path.read_text(), conf_file))
    if overrides:
        merged = _merge(merged, overrides)
    merged["env"] = env
    return _build(Config, merged, "conf").validate()

"""Archive storage, local or remote: list date partitions and files, read footers, fingerprint dates; called by the
archive Source (planning) and by session.py (the S3 settings Spark's s3a shares with delta-rs and pyarrow).

Two listers, one result (``ArchiveFile`` per file, a fingerprint per date):

- ``arrow``: pyarrow.fs from the driver's own process. It serves local folders, ``/Volumes`` (a FUSE mount
  on Databricks) and object stores the driver can reach with its own credentials: ``s3://``/``s3a://`` with
  the standard AWS_* variables or a profile, ``gs://`` and ``abfs[s]://`` through pyarrow's own GCS and
  Azure filesystems (pyarrow 26 has both; no fsspec needed). It gives what the Python row-group reader
  needs and Spark does not: each file's size, modification time and ETag (from the HEAD pyarrow sends
  when it opens a file) and its Parquet footer (schema, row count, rows and bytes of each row group),
  read in parallel threads, before any Spark job runs.
- ``spark``: Spark lists, for drivers without credentials of their own: Spark Connect (the client is not
  where the data is read) and Databricks (Unity Catalog hands storage credentials to Spark, not to the
  driver's Python). Files come from ``DataFrame.inputFiles()`` (driver-side listing, no job); sizes and
  modification times from the ``binaryFile`` source with only its metadata columns selected (it then
  reads no content); row counts per date from a column-less Parquet count, answered from the footers.
  There are no ETags and no row groups there: such archives go through Spark's reader.

``choose_lister`` picks ``spark`` for a remote root when the session is Spark Connect or the process runs on
Databricks, ``arrow`` otherwise: what the scorer will read is then what was listed and fingerprinted.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from portprint.conf.config import S3Conf

_DATE_DIR = re.compile(r"^(?P<col>[A-Za-z_][A-Za-z0-9_]*)=(?P<date>\d{4}-\d{2}-\d{2})$")
_IN_DATE = re.compile(r"=(\d{4}-\d{2}-\d{2}/.*)$")
S3_SCHEMES = ("s3", "s3a", "s3n")


class StorageError(OSError):
    """A path cannot be listed or a file's footer cannot be read; the message names the path."""

    def __init__(self, message: str, path: str = "") -> None:
        super().__init__(message)
        self.path = path


@dataclass(frozen=True)
class ArchiveFile:
    path: str                # in the root's own form (s3a://b/k stays s3a://b/k; local stays a path)
    size: int
    mtime_ns: int | None
    etag: str | None = None  # where the store gives one (S3, GCS, Azure); filled by read_footers


@dataclass(frozen=True)
class Footer:
    path: str
    num_rows: int
    schema: pa.Schema
    row_group_rows: tuple[int, ...]
    row_group_bytes: tuple[int, ...]  # compressed bytes of each row group
    etag: str | None


# --- S3 settings: one source for Spark's s3a, delta-rs and pyarrow -------------------------------------


@dataclass(frozen=True)
class S3Settings:
    endpoint: str | None
    region: str | None
    path_style: bool
    credentials_provider: str | None


def s3_settings(conf: S3Conf | None = None, environ: Mapping[str, str] | None = None) -> S3Settings:
    """conf/ first, then the standard AWS variables. Credentials are not read here: each client reads them
    from the environment or a profile itself, so they are never copied into Spark's conf or a log."""
    conf = conf or S3Conf()
    env = os.environ if environ is None else environ
    endpoint = conf.endpoint or env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or None
    region = conf.region or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or None
    path_style = bool(endpoint) if conf.path_style == "auto" else bool(conf.path_style)
    return S3Settings(endpoint, region, path_style, conf.credentials_provider)


def hadoop_s3a_options(s: S3Settings, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """``spark.hadoop.fs.s3a.*`` for a local session (s3:// is served by s3a too, as on EMR and Databricks)."""
    env = os.environ if environ is None else environ
    out = {"spark.hadoop.fs.s3.impl": "org.apache.hadoop.fs.s3a.S3AFileSystem",
           "spark.hadoop.fs.s3a.path.style.access": str(s.path_style).lower()}
    if s.endpoint:
        out["spark.hadoop.fs.s3a.endpoint"] = s.endpoint
        out["spark.hadoop.fs.s3a.connection.ssl.enabled"] = str(s.endpoint.startswith("https")).lower()
    if s.region:
        out["spark.hadoop.fs.s3a.endpoint.region"] = s.region
    if s.credentials_provider:
        out["spark.hadoop.fs.s3a.aws.credentials.provider"] = s.credentials_provider
    elif env.get("AWS_PROFILE"):
        # Hadoop's default chain has no profile provider: keep its order and add one.
        out["spark.hadoop.fs.s3a.aws.credentials.provider"] = ",".join((
            "org.apache.hadoop.fs.s3a.TemporaryAWSCredentialsProvider",
            "software.amazon.awssdk.auth.credentials.EnvironmentVariableCredentialsProvider",
            "software.amazon.awssdk.auth.credentials.ProfileCredentialsProvider",
            "org.apache.hadoop.fs.s3a.auth.IAMInstanceCredentialsProvider"))
    return out


def delta_rs_storage_options(s: S3Settings) -> dict[str, str]:
    """delta-rs (object_store) options for S3; it reads AWS_ACCESS_KEY_ID and friends from the environment."""
    out: dict[str, str] = {}
    if s.endpoint:
        out["AWS_ENDPOINT_URL"] = s.endpoint
        if s.endpoint.startswith("http://"):
            out["AWS_ALLOW_HTTP"] = "true"
    if s.region:
        out["AWS_REGION"] = s.region
    out["AWS_VIRTUAL_HOSTED_STYLE_REQUEST"] = str(not s.path_style).lower()
    return out


def arrow_s3(s: S3Settings) -> pafs.S3FileSystem:
    kwargs: dict = {"region": s.region, "force_virtual_addressing": not s.path_style and bool(s.endpoint)}
    if s.endpoint:
        scheme, _, rest = s.endpoint.partition("://")
        kwargs.update(endpoint_override=rest.rstrip("/") if rest else scheme, scheme=scheme if rest else "https")
    return pafs.S3FileSystem(**kwargs)


# --- the arrow lister ---------------------------------------------------------------------------------


def is_remote(path: str) -> bool:
    return "://" in path and not path.startswith("file:")


def _scheme(uri: str) -> str:
    return uri.split("://", 1)[0].lower() if "://" in uri else ""


def filesystem(uri: str, s3: S3Conf | None = None) -> tuple[pafs.FileSystem, str]:
    """A pyarrow filesystem for ``uri`` and the path inside it."""
    scheme = _scheme(uri)
    if scheme in ("", "file"):
        path = "/" + uri[len("file:"):].lstrip("/") if uri.startswith("file:") else uri
        return pafs.LocalFileSystem(), os.path.abspath(path)
    if scheme in S3_SCHEMES:
        return arrow_s3(s3_settings(s3)), uri.split("://", 1)[1].rstrip("/")
    try:
        fs, path = pafs.FileSystem.from_uri(uri)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError) as exc:
        raise StorageError(f"cannot open {uri}: {exc}", uri) from None
    return fs, path.rstrip("/")


def _to_uri(root_uri: str, root_path: str, path: str) -> str:
    """A path inside the filesystem, given back in the root's own form."""
    if not is_remote(root_uri):
        return path
    return root_uri.rstrip("/") + path[len(root_path):]


def _info(fs: pafs.FileSystem, selector: pafs.FileSelector, what: str) -> list[pafs.FileInfo]:
    try:
        return fs.get_file_info(selector)
    except FileNotFoundError:
        raise StorageError(f"{what} does not exist; pass the archive's root (the folder holding "
                           "date=YYYY-MM-DD/)", what) from None
    except OSError as exc:
        raise StorageError(f"cannot list {what}: {str(exc).splitlines()[0]}", what) from None


def list_dates(root: str, date_col: str = "date", s3: S3Conf | None = None) -> list[str]:
    """The ``<date_col>=YYYY-MM-DD`` partitions directly under ``root``, sorted."""
    fs, path = filesystem(root, s3)
    infos = _info(fs, pafs.FileSelector(path, recursive=False), root)
    dates = []
    for info in infos:
        m = _DATE_DIR.match(info.base_name)
        if m and m.group("col") == date_col and info.type == pafs.FileType.Directory:
            dates.append(m.group("date"))
    return sorted(dates)


def _hidden(rel: str) -> bool:
    """Spark's and Hadoop's bookkeeping files (and folders), which Spark's reader skips too."""
    return any(p.startswith(("_", ".")) or p.endswith(".crc") for p in rel.split("/"))


def list_files(root: str, dates: Iterable[str], date_col: str = "date",
               s3: S3Conf | None = None) -> dict[str, list[ArchiveFile]]:
    """Each date's data files (recursively, hidden files left out) with size and modification time."""
    fs, path = filesystem(root, s3)
    out: dict[str, list[ArchiveFile]] = {}
    for d in dates:
        folder = f"{path}/{date_col}={d}"
        infos = _info(fs, pafs.FileSelector(folder, recursive=True, allow_not_found=True), f"{root}/{date_col}={d}")
        files = [ArchiveFile(_to_uri(root, path, i.path), i.size, i.mtime_ns) for i in infos
                 if i.type == pafs.FileType.File and not _hidden(i.path[len(folder) + 1:])]
        out[d] = sorted(files, key=lambda f: f.path)
    return out


def _etag(meta: Mapping) -> str | None:
    for key in (b"ETag", "ETag", b"etag", "etag"):
        if key in meta:
            value = meta[key]
            return (value.decode() if isinstance(value, bytes) else str(value)).strip('"')
    return None


def read_footers(root: str, files: Sequence[ArchiveFile], threads: int = 16,
                 s3: S3Conf | None = None) -> dict[str, Footer]:
    """Every file's Parquet footer, ``threads`` at a time (object stores answer in parallel; the work is
    waiting). A file that is not Parquet raises StorageError naming it."""
    fs, path = filesystem(root, s3)

    def one(f: ArchiveFile) -> Footer:
        inner = f.path if not is_remote(root) else path + f.path[len(root.rstrip("/")):]
        try:
            with fs.open_input_file(inner) as handle:
                etag = _etag(handle.metadata())
                meta = pq.read_metadata(handle)
        except (pa.ArrowInvalid, OSError) as exc:
            raise StorageError(f"corrupt Parquet file {f.path}: {str(exc).splitlines()[0]}", f.path) from None
        groups = [meta.row_group(i) for i in range(meta.num_row_groups)]
        return Footer(f.path, meta.num_rows, meta.schema.to_arrow_schema(), tuple(g.num_rows for g in groups),
                      tuple(sum(g.column(c).total_compressed_size for c in range(g.num_columns)) for g in groups),
                      etag)

    if not files:
        return {}
    with ThreadPoolExecutor(max_workers=max(1, min(threads, len(files)))) as pool:
        return {ft.path: ft for ft in pool.map(one, files)}


def with_etags(files: Sequence[ArchiveFile], footers: Mapping[str, Footer]) -> list[ArchiveFile]:
    """The files with the ETags their footer reads saw."""
    return [ArchiveFile(f.path, f.size, f.mtime_ns, footers[f.path].etag if f.path in footers else f.etag)
            for f in files]


def fingerprint(files: Sequence[ArchiveFile]) -> str:
    """What a date holds now: names, sizes, and ETags where every file has one, else modification times.
    A date written late or rewritten gets a new one, so ``score --new-only`` scores it again."""
    use_etag = bool(files) and all(f.etag for f in files)
    h = hashlib.sha256(b"etag\n" if use_etag else b"mtime\n")
    for f in sorted(files, key=lambda f: f.path):
        m = _IN_DATE.search(f.path)
        name = m.group(1) if m else f.path  # relative to the root: the date and the path below it
        h.update(f"{name}\0{f.size}\0{f.etag if use_etag else f.mtime_ns}\n".encode())
    return h.hexdigest()[:16]


# --- the Spark lister ---------------------------------------------------------------------------------


def is_connect(spark) -> bool:
    return type(spark).__module__.startswith("pyspark.sql.connect")


def choose_lister(root: str, spark=None) -> str:
    """``arrow`` or ``spark`` (see the module's docstring for why)."""
    if not is_remote(root):
        return "arrow"
    if spark is not None and is_connect(spark):
        return "spark"
    return "spark" if os.environ.get("DATABRICKS_RUNTIME_VERSION") else "arrow"


def _date_of(path: str, date_col: str) -> str | None:
    m = re.search(rf"/{re.escape(date_col)}=(\d{{4}}-\d{{2}}-\d{{2}})/", path)
    return m.group(1) if m else None


def spark_list_dates(spark, root: str, date_col: str = "date") -> list[str]:
    """The date partitions under ``root``, as Spark sees them (one driver-side listing, no job)."""
    files = spark.read.format("binaryFile").load(root).inputFiles()
    return sorted({d for d in (_date_of(f, date_col) for f in files) if d})


def spark_list_files(spark, root: str, dates: Iterable[str], date_col: str = "date") -> dict[str, list[ArchiveFile]]:
    """Each date's files as Spark's Parquet reader would read them (``inputFiles()``), with size and
    modification time from the ``binaryFile`` source's metadata columns (no content read)."""
    from pyspark.sql import functions as F

    dates = list(dates)
    paths = [f"{root.rstrip('/')}/{date_col}={d}" for d in dates]
    out: dict[str, list[ArchiveFile]] = {d: [] for d in dates}
    existing = [p for p in paths if _spark_exists(spark, p)]
    if not existing:
        return out
    names = spark.read.format("binaryFile").load(existing).inputFiles()
    rows = (spark.read.format("binaryFile").load(existing)
            .select("path", "length", F.col("modificationTime").cast("double").alias("mtime")).collect())
    meta = {_spark_path(r["path"], root): (int(r["length"]), round(r["mtime"] * 1e9)) for r in rows}
    for name in (_spark_path(n, root) for n in names):
        d = _date_of(name, date_col)
        if d not in out or _hidden(name.split(f"{date_col}={d}/", 1)[-1]):
            continue
        if name not in meta:
            raise StorageError(f"Spark listed {name} but gave no size for it", name)
        out[d].append(ArchiveFile(name, *meta[name]))
    return {d: sorted(fs, key=lambda f: f.path) for d, fs in out.items()}


def _spark_path(path: str, root: str) -> str:
    """Spark writes local files as file:/x or file:///x depending on the API; give them back as the arrow
    lister does: plain paths for a local root, URIs for a remote one."""
    if path.startswith("file:") and not is_remote(root):
        return "/" + path[len("file:"):].lstrip("/")
    return path


def _spark_exists(spark, path: str) -> bool:
    try:
        spark.read.format("binaryFile").load(path).inputFiles()
        return True
    except Exception as exc:  # Spark's "path does not exist" (classic and Connect raise different types)
        if "PATH_NOT_FOUND" in str(exc) or "does not exist" in str(exc):
            return False
        raise


def spark_rows_per_date(spark, root: str, dates: Iterable[str], date_col: str = "date") -> dict[str, int]:
    """Rows per date, counted by Spark from the footers (a Parquet count that reads no column)."""
    dates = list(dates)
    paths = [p for p in (f"{root.rstrip('/')}/{date_col}={d}" for d in dates) if _spark_exists(spark, p)]
    out = {d: 0 for d in dates}
    if paths:
        for r in spark.read.option("basePath", root).parquet(*paths).groupBy(date_col).count().collect():
            out[str(r[date_col])] = int(r["count"])
    return out

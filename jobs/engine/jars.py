"""The JVM packages a local Spark session needs (Delta, s3a), fetched from Maven on first use; called by session.py.

Coordinates follow the installed Python packages: ``io.delta:delta-spark_<spark major.minor>_2.13`` at the
installed delta-spark's version (what ``configure_spark_with_delta_pip`` asks for), and
``org.apache.hadoop:hadoop-aws`` at the Hadoop version pyspark bundles (read from its ``hadoop-client-api``
jar), which brings the AWS SDK bundle it was built against.

Resolution runs Apache Ivy, the resolver Spark's own ``spark.jars.packages`` runs, from the Ivy jar inside
pyspark, as a separate short process, instead of handing ``spark.jars.packages`` to the session:

- it resolves once per set of coordinates and writes the classpath beside the cache; later sessions read
  that file and pass the jars with ``spark.jars`` (``spark.jars.packages`` resolves again at every start);
- it uses the jars where the cache holds them (``-cachepath``); ``spark.jars.packages`` copies every jar
  into a second folder, 750 MB more once the s3a connector's AWS SDK bundle is in;
- a failure (no network, a proxy, a missing jar) is known before Spark's JVM starts, so the session starts
  once, without the jars, and says so in one line, instead of a JVM that dies with Ivy's report on stderr;
- its report is captured (printed with ``--verbose``), and its repositories and time-outs are ours:
  a repository that accepts a connection and never answers fails after ``spark.maven_timeout_s`` seconds.

The cache is Ivy's default (``~/.ivy2.5.2/cache``, shared with ``spark-submit --packages``) unless
``spark.jars_cache`` names another folder.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit
from xml.sax.saxutils import quoteattr

SCALA = "2.13"
DELTA_EXTENSION = "io.delta.sql.DeltaSparkSessionExtension"
DELTA_CATALOG = "org.apache.spark.sql.delta.catalog.DeltaCatalog"
CENTRAL = "https://repo1.maven.org/maven2/"

# What Spark already ships (pyspark/jars): Spark's copies win under its parent-first class loading, so the
# packages' own copies would be dead weight on the classpath, and a second SLF4J binding prints a warning.
SPARK_PROVIDES = (
    ("org.apache.spark", "*"), ("org.scala-lang", "*"), ("org.apache.hadoop", "hadoop-client-api"),
    ("org.apache.hadoop", "hadoop-client-runtime"), ("org.apache.parquet", "*"), ("com.fasterxml.jackson.core", "*"),
    ("org.apache.logging.log4j", "*"), ("org.slf4j", "*"), ("org.xerial.snappy", "*"), ("com.github.luben", "*"),
    ("io.airlift", "aircompressor"), ("commons-logging", "*"), ("commons-pool", "*"), ("org.locationtech.jts", "*"),
    ("com.google.code.findbugs", "jsr305"), ("org.roaringbitmap", "RoaringBitmap"),
)


class FetchError(RuntimeError):
    """The packages could not be resolved; the message is one line naming what failed."""


@dataclass(frozen=True)
class Coordinate:
    group: str
    artifact: str
    version: str

    def __str__(self) -> str:
        return f"{self.group}:{self.artifact}:{self.version}"


@dataclass(frozen=True)
class Fetched:
    """The jars of one package set, and how they were had."""

    jars: tuple[str, ...]
    seconds: float
    from_cache: bool   # True: the classpath file of an earlier resolution, no Ivy run
    report: str        # Ivy's output ('' when from the cache)


def pyspark_jars_dir() -> Path:
    import pyspark

    return Path(pyspark.__file__).parent / "jars"


def spark_minor() -> str:
    import pyspark

    return ".".join(pyspark.__version__.split(".")[:2])


def hadoop_version(jars_dir: Path | None = None) -> str:
    """The Hadoop version pyspark bundles, from its hadoop-client-api-<version>.jar."""
    for name in sorted(os.listdir(jars_dir or pyspark_jars_dir())):
        m = re.fullmatch(r"hadoop-client-api-(\d+\.\d+\.\d+)\.jar", name)
        if m:
            return m.group(1)
    raise FetchError("pyspark ships no hadoop-client-api jar, so the hadoop-aws version is unknown")


def delta_coordinates() -> list[Coordinate]:
    try:
        version = importlib.metadata.version("delta-spark")
    except importlib.metadata.PackageNotFoundError:
        raise FetchError("the Python package delta-spark is not installed (pip install 'portprint[local]')") from None
    return [Coordinate("io.delta", f"delta-spark_{spark_minor()}_{SCALA}", version)]


def s3a_coordinates() -> list[Coordinate]:
    return [Coordinate("org.apache.hadoop", "hadoop-aws", hadoop_version())]


def default_cache() -> Path:
    """Ivy's default cache of Spark 4 (``spark.jars.ivy`` unset)."""
    return Path.home() / ".ivy2.5.2" / "cache"


def _repository_root(repo: str) -> str:
    """A repository as Ivy's ibiblio resolver wants its root: a URL, local folders as file: URLs."""
    if "://" in repo:
        return repo if repo.endswith("/") else repo + "/"
    return Path(os.path.expanduser(repo)).resolve().as_uri() + "/"


def _settings_xml(cache: Path, repositories: Sequence[str], timeout_s: float) -> str:
    ms = str(int(timeout_s * 1000))
    resolvers = "\n".join(
        f'      <ibiblio name="repo{i}" m2compatible="true" root={quoteattr(_repository_root(r))} '
        f'timeoutConstraint="bounded"/>' for i, r in enumerate(repositories))
    # artifact-lock-nio: several processes (a test suite and its subprocesses, two users' runs) may
    # resolve into one cache at once.
    return f"""<ivysettings>
  <settings defaultResolver="portprint"/>
  <caches defaultCacheDir={quoteattr(str(cache))} useOrigin="true" lockStrategy="artifact-lock-nio"/>
  <timeout-constraints>
    <timeout-constraint name="bounded" connectionTimeout="{ms}" readTimeout="{ms}"/>
  </timeout-constraints>
  <resolvers>
    <chain name="portprint" returnFirst="true">
{resolvers}
    </chain>
  </resolvers>
</ivysettings>
"""


def _ivy_xml(coords: Sequence[Coordinate]) -> str:
    deps = "\n".join(f'    <dependency org="{c.group}" name="{c.artifact}" rev="{c.version}" conf="default->default"/>'
                     for c in coords)
    excludes = "\n".join(f'    <exclude org="{g}" module="{a}"/>' for g, a in SPARK_PROVIDES)
    return f"""<ivy-module version="2.0">
  <info organisation="portprint" module="spark-packages"/>
  <configurations><conf name="default"/></configurations>
  <dependencies>
{deps}
{excludes}
  </dependencies>
</ivy-module>
"""


def _java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    java = os.path.join(java_home, "bin", "java") if java_home else shutil.which("java")
    if not java or not os.path.exists(java):
        raise FetchError("no java found to run Ivy")
    return java


def proxy_properties(environ: Mapping[str, str] | None = None) -> list[str]:
    """Java system properties for the proxy in HTTPS_PROXY / HTTP_PROXY / NO_PROXY, which pip and curl honour
    and Java ignores."""
    env = os.environ if environ is None else environ
    out: list[str] = []
    for scheme in ("https", "http"):
        value = env.get(f"{scheme.upper()}_PROXY") or env.get(f"{scheme}_proxy")
        if not value:
            continue
        url = urlsplit(value if "://" in value else f"http://{value}")
        if url.hostname:
            out += [f"-D{scheme}.proxyHost={url.hostname}", f"-D{scheme}.proxyPort={url.port or 80}"]
    no_proxy = env.get("NO_PROXY") or env.get("no_proxy")
    if out and no_proxy:
        hosts = [h.strip() for h in no_proxy.split(",") if h.strip()]
        # Java's patterns: *.example.com where NO_PROXY says .example.com
        out.append("-Dhttp.nonProxyHosts=" + "|".join("*" + h if h.startswith(".") else h for h in hosts))
    return out


def _reason(report: str, returncode: int, repositories: Sequence[str]) -> str:
    """Why Ivy failed, in a few words: the first server error, else what was not found where."""
    m = re.search(r"Server access error at url (\S+) \((?:[\w.$]+: )?([^)]*)\)", report)
    if m:
        url = m.group(1)
        host = url.split("/", 3)[:3]
        return f"cannot reach {'/'.join(host)}/ ({m.group(2).strip() or 'no answer'})"
    m = re.search(r"::\s*(\S+#\S+;\S+): not found", report)
    if m:
        return f"{m.group(1)} not found in {', '.join(repositories)}"
    lines = [ln.strip() for ln in report.splitlines() if ln.strip()]
    return lines[-1] if lines else f"Ivy exited with {returncode}"


def fetch(coords: Sequence[Coordinate], cache: str | os.PathLike | None = None,
          repositories: Sequence[str] = (CENTRAL,), timeout_s: float = 30.0) -> Fetched:
    """The jars of ``coords`` and their dependencies (less what Spark ships), resolved into ``cache`` on
    first use and read from its classpath file afterwards. Raises FetchError, one line, when it cannot."""
    start = time.monotonic()
    cache_dir = Path(cache).expanduser() if cache else default_cache()
    key = hashlib.sha256(("\n".join(map(str, coords)) + repr(SPARK_PROVIDES)).encode()).hexdigest()[:16]
    classpath_file = cache_dir / "portprint-classpath" / f"{key}.txt"
    if classpath_file.is_file():
        jars = tuple(p for p in classpath_file.read_text().split(os.pathsep) if p.strip())
        if jars and all(os.path.isfile(p) for p in jars):
            return Fetched(jars, time.monotonic() - start, True, "")
    repos = [r for r in repositories if "://" in r or os.path.isdir(os.path.expanduser(r))]
    if not repos:
        raise FetchError(f"no reachable Maven repository configured (spark.maven_repositories: {list(repositories)})")
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="portprint-ivy-") as tmp:
        settings, ivy, out = Path(tmp, "ivysettings.xml"), Path(tmp, "ivy.xml"), Path(tmp, "classpath.txt")
        settings.write_text(_settings_xml(cache_dir, repos, timeout_s))
        ivy.write_text(_ivy_xml(coords))
        cmd = [_java(), *proxy_properties(), "-jar", str(pyspark_jars_dir() / _ivy_jar()), "-settings", str(settings),
               "-ivy", str(ivy), "-confs", "default", "-types", "jar", "bundle", "-cachepath", str(out)]
        try:
            # A bound on the whole run, beyond Ivy's per-connection time-outs: many slow answers add up.
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=max(600.0, 20 * timeout_s))
        except subprocess.TimeoutExpired as exc:
            raise FetchError(f"resolving {', '.join(map(str, coords))} took longer than {exc.timeout:.0f} s") from None
        report = proc.stdout + proc.stderr
        if proc.returncode != 0 or not out.is_file():
            raise FetchError(f"{', '.join(map(str, coords))}: {_reason(report, proc.returncode, repos)}")
        jars = tuple(p for p in out.read_text().strip().split(os.pathsep) if p.strip())
    missing = [p for p in jars if not os.path.isfile(p)]
    if not jars or missing:
        raise FetchError(f"Ivy resolved {', '.join(map(str, coords))} but left no jar at {missing[:1] or cache_dir}")
    classpath_file.parent.mkdir(parents=True, exist_ok=True)
    partial = classpath_file.with_suffix(f".{os.getpid()}.tmp")
    partial.write_text(os.pathsep.join(jars))
    os.replace(partial, classpath_file)
    return Fetched(jars, time.monotonic() - start, False, report)


def _ivy_jar() -> str:
    names = sorted(n for n in os.listdir(pyspark_jars_dir()) if re.fullmatch(r"ivy-[\d.]+\.jar", n))
    if not names:
        raise FetchError("pyspark ships no Ivy jar to resolve packages with")
    return names[-1]

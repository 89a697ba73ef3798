"""Shared fixtures: one local Spark session for the whole suite."""

from __future__ import annotations

import os
import sys

import pytest

# Spark's Python workers must run this interpreter (it has numba, torch and portprint installed).
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
# torch trains the fixtures' models in this process, beside Spark's JVM and Python workers on the same 2 cores: its
# default of one intra-op thread per core makes the threads wait on each other, and these small networks train 7
# times faster on one thread (the month model: 370 s on two threads, 53 s on one, the same model version). Set
# before torch is imported; child processes (`portprint` run by the tests) inherit it.
os.environ.setdefault("OMP_NUM_THREADS", "1")
if "torch" in sys.modules:  # imported already (by a plugin): set it there too
    sys.modules["torch"].set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


@pytest.fixture(scope="session")
def cfg(tmp_path_factory):
    """The local configuration with a 2-core session sized for tests; its catalog (metastore and managed tables)
    lives in the run's temporary folder."""
    from portprint.conf.config import load_config

    catalog = str(tmp_path_factory.mktemp("catalog"))
    return load_config("local", overrides={"spark": {"master": "local[2]", "shuffle_partitions": 2,
                                                     "arrow_batch_rows": 8192, "catalog_dir": catalog},
                                           "model": {"epochs": 25}})


WRITERS = ("spark", "delta-rs")


@pytest.fixture(params=WRITERS)
def writer(request) -> str:
    """Each Delta writer in turn: the key end-to-end tests run on both."""
    return request.param


@pytest.fixture
def wcfg(cfg, writer):
    """The suite's configuration with output.writer set to ``writer``."""
    from dataclasses import replace

    return replace(cfg, output=replace(cfg.output, writer=writer))


@pytest.fixture(scope="session")
def small_archive(tmp_path_factory) -> str:
    """Two days of sample flows, shared by the tests that compare ways of running the same job."""
    from portprint.jobs.sample import write_sample

    out = str(tmp_path_factory.mktemp("small") / "flows")
    write_sample(out, days=2, flows_per_day=3000, seed=11, start="2026-11-01")
    return out


@pytest.fixture(scope="session")
def quick_model(spark, cfg, small_archive, tmp_path_factory) -> str:
    """A quickly trained model on the small archive: the tests using it compare runs, not detection quality."""
    from dataclasses import replace

    from portprint.jobs.train import run_train

    quick = replace(cfg, model=replace(cfg.model, epochs=3, epoch_rows=5000))
    out = str(tmp_path_factory.mktemp("quick-model"))
    run_train(spark, quick, small_archive, out, end="2026-11-01", log=lambda m: None)
    return out


MONTH_DAYS = ["2026-10-01", "2026-10-02", "2026-10-03", "2026-10-04"]


@pytest.fixture(scope="session")
def month_archive(tmp_path_factory) -> str:
    """Four days of sample flows with 1% non-DNS, shared by the backfill and triage tests (``MONTH_DAYS``)."""
    from portprint.jobs.sample import write_sample

    out = str(tmp_path_factory.mktemp("month") / "flows")
    write_sample(out, days=len(MONTH_DAYS), flows_per_day=5000, seed=44, start=MONTH_DAYS[0], non_dns_fraction=0.01)
    return out


@pytest.fixture(scope="session")
def month_model(spark, cfg, month_archive, tmp_path_factory) -> str:
    """A model trained on the first two days of ``month_archive``, as a nightly job would have."""
    from portprint.jobs.train import run_train

    out = str(tmp_path_factory.mktemp("month-model"))
    run_train(spark, cfg, month_archive, out, end=MONTH_DAYS[1], log=lambda m: None)
    return out


@pytest.fixture(scope="session")
def spark(cfg):
    """The suite's single Spark session (classic, local[2]); stopped at the end of the run."""
    from portprint.jobs.engine.session import build_session

    session = build_session(cfg)
    yield session
    session.stop()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A real S3 API (moto's server) on a free loopback port for the whole run; stopped at the end."""
    from s3server import S3Server

    server = S3Server(log_path=str(tmp_path_factory.mktemp("moto") / "moto.log")).start()
    try:
        yield server
    finally:
        server.stop()


class S3Bucket:
    """A fresh bucket on the loopback server, with the standard AWS_* variables set for the test."""

    def __init__(self, server, name: str) -> None:
        self.server, self.name = server, name
        self.client = server.client()

    def uri(self, key: str = "", scheme: str = "s3") -> str:
        return f"{scheme}://{self.name}/{key}".rstrip("/")

    def objects(self, prefix: str = "") -> dict[str, dict]:
        """key -> {Size, ETag, LastModified}, as boto3 lists them (the independent view)."""
        out: dict[str, dict] = {}
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.name, Prefix=prefix):
            for o in page.get("Contents", []):
                out[o["Key"]] = o
        return out


@pytest.fixture
def s3(s3_server, monkeypatch):
    """A new bucket, and the process environment pointing every S3 client at the loopback server."""
    for name in ("AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "AWS_DEFAULT_REGION", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    return S3Bucket(s3_server, s3_server.new_bucket())

"""Shared fixtures: one local Spark session for the whole suite."""

from __future__ import annotations

import os
import sys

import pytest

# Spark's Python workers must run this interpreter (it has numba, torch and portprint installed).
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)


@pytest.fixture(scope="session")
def cfg():
    """The local configuration with a 2-core session sized for tests."""
    from portprint.conf.config import load_config

    return load_config("local", overrides={"spark": {"master": "local[2]", "shuffle_partitions": 2,
                                                     "arrow_batch_rows": 8192},
                                           "model": {"epochs": 25}})


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

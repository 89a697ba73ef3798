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

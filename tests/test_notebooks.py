"""The notebooks in notebooks/: Databricks source files that parse and call only package code that exists.

Static checks need no Spark: the header and cells, every `portprint.*` name imported or called (with
arguments the function accepts), and only the standard library and portprint imported. Then the analyst
SQL is analysed by Spark against the real table schemas, and each notebook is run end to end on the
suite's session with stand-ins for Databricks' `dbutils` and `display`.
"""

from __future__ import annotations

import ast
import datetime as dt
import importlib
import inspect
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pyarrow as pa
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.py"))
HEADER = "# Databricks notebook source\n"
SEPARATOR = "# COMMAND ----------"
EXPECTED = {"daily_report.py", "hunting.py", "sql_examples.py"}


def test_the_notebooks_are_there():
    assert {p.name for p in NOTEBOOKS} >= EXPECTED


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def _portprint_names(tree: ast.Module) -> dict[str, Any]:
    """Local name -> the package object it stands for, for every `portprint` import (failing if one is missing)."""
    names: dict[str, Any] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "portprint":
            module = importlib.import_module(node.module)
            for alias in node.names:
                if hasattr(module, alias.name):
                    obj = getattr(module, alias.name)
                else:  # a submodule: from portprint.jobs import report
                    obj = importlib.import_module(f"{node.module}.{alias.name}")
                names[alias.asname or alias.name] = obj
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "portprint":
                    module = importlib.import_module(alias.name)  # `import portprint.a.b` binds `portprint`
                    top = importlib.import_module("portprint")
                    names[alias.asname or "portprint"] = module if alias.asname else top
    return names


def _resolve(node: ast.AST, names: dict[str, Any]) -> tuple[bool, Any, str]:
    """(is package code, object, dotted text) of a Name or an attribute chain on a portprint name."""
    if isinstance(node, ast.Name):
        return node.id in names, names.get(node.id), node.id
    if isinstance(node, ast.Attribute):
        inside, base, text = _resolve(node.value, names)
        if not inside:
            return False, None, f"{text}.{node.attr}"
        dotted = f"{text}.{node.attr}"
        if isinstance(base, ModuleType) and not hasattr(base, node.attr):
            try:
                return True, importlib.import_module(f"{base.__name__}.{node.attr}"), dotted
            except ImportError:
                pass
        assert hasattr(base, node.attr), f"{dotted} does not exist"
        return True, getattr(base, node.attr), dotted
    return False, None, ""


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_a_databricks_source_file_that_parses(path):
    text = path.read_text()
    assert text.startswith(HEADER), f"{path.name} must start with {HEADER!r}"
    cells = text[len(HEADER):].split(f"\n{SEPARATOR}\n")
    assert len(cells) >= 3, "expected cells separated by '# COMMAND ----------'"
    assert all(c.strip() for c in cells), "empty cell"
    for cell in cells:
        lines = [ln for ln in cell.strip().splitlines() if ln.strip()]
        magic = [ln.startswith("# MAGIC") for ln in lines]
        assert all(magic) or not any(magic), "a cell mixes MAGIC lines and code"
    ast.parse(text, filename=str(path))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_imports_only_the_standard_library_and_portprint(path):
    for node in ast.walk(_tree(path)):
        mods = ([a.name for a in node.names] if isinstance(node, ast.Import)
                else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
        for mod in mods:
            top = mod.split(".")[0]
            assert top == "portprint" or top in sys.stdlib_module_names, f"{path.name} imports {mod}: keep it thin"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_portprint_name_used_exists_and_accepts_its_arguments(path):
    tree = _tree(path)
    names = _portprint_names(tree)
    assert names, f"{path.name} imports no package code"
    calls = 0
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            _resolve(node, names)  # raises when an attribute of a package name is missing
        if not isinstance(node, ast.Call):
            continue
        inside, fn, dotted = _resolve(node.func, names)
        if not inside:
            continue
        calls += 1
        assert callable(fn), f"{dotted} is not callable"
        if any(isinstance(a, ast.Starred) for a in node.args) or any(k.arg is None for k in node.keywords):
            continue
        try:
            sig = inspect.signature(fn)
        except (TypeError, ValueError):
            continue
        try:
            sig.bind(*[object()] * len(node.args), **{k.arg: object() for k in node.keywords})
        except TypeError as exc:
            where = f"{path.name}:{node.lineno}"
            raise AssertionError(f"{where}: {dotted}(...) does not fit {dotted}{sig}: {exc}") from None
    assert calls, f"{path.name} calls no package function"


# ---------------------------------------------------------------- with Spark

PATTERNS_GUESS = pa.schema([  # used only until jobs/warehouse/tables.py defines the table's schema
    ("pattern", pa.string()), ("detector", pa.string()), ("first_seen", pa.timestamp("us", tz="UTC")),
    ("last_seen", pa.timestamp("us", tz="UTC")), ("flows", pa.int64()), ("distinct_sources", pa.int64()),
    ("distinct_destinations", pa.int64()), ("example_flow_id", pa.string()), ("model_versions", pa.list_(pa.string())),
])


def _schemas() -> dict[str, pa.Schema]:
    from portprint.jobs.triage import TRIAGED
    from portprint.jobs.warehouse import tables

    patterns = getattr(tables, "PATTERNS", None) or getattr(tables, "ANOMALY_PATTERNS", None) or PATTERNS_GUESS
    return {"anomalies": tables.ANOMALIES, "runs": tables.RUNS, "anomaly_patterns": patterns,
            "verdicts": tables.VERDICTS, "suppressions": tables.SUPPRESSIONS, "anomalies_triaged": TRIAGED,
            "escalation_history": tables.ESCALATION_HISTORY,
            "suppression_rules": pa.schema([*tables.SUPPRESSIONS, ("state", pa.string())])}


def _sql_strings(path: Path) -> list[str]:
    out = []
    for node in ast.walk(_tree(path)):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "sql"
                and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            out.append(node.args[0].value)
    return out


@pytest.mark.slow
def test_analyst_sql_is_valid_against_the_table_schemas(spark):
    from portprint.jobs.warehouse.tables import spark_schema

    queries = [(p.name, q) for p in NOTEBOOKS for q in _sql_strings(p)]
    assert len([q for name, q in queries if name == "sql_examples.py"]) >= 8
    views = _schemas()
    try:
        for view, schema in views.items():
            spark.createDataFrame([], spark_schema(schema)).createOrReplaceTempView(view)
        for name, query in queries:
            try:
                spark.sql(query).limit(0).collect()  # analysis: unknown tables, columns or functions fail here
            except Exception as exc:
                raise AssertionError(f"{name}: {str(exc).splitlines()[0]}\n{query}") from None
    finally:
        for view in views:
            spark.catalog.dropTempView(view)


class _Exit(Exception):
    """Raised by the stand-in dbutils.notebook.exit: it ends the notebook, as on Databricks."""


class FakeDbutils:
    """The part of Databricks' dbutils the notebooks use: widgets and notebook.exit."""

    def __init__(self, values: dict[str, str]) -> None:
        self.values, self.defined, self.exit_value = dict(values), {}, None
        outer = self

        class Widgets:
            def text(self, name: str, default: str, label: str | None = None) -> None:
                outer.defined[name] = default

            def get(self, name: str) -> str:
                assert name in outer.defined, f"widget {name} read before it is defined"
                return outer.values.get(name, outer.defined[name])

        class Notebook:
            def exit(self, value: str) -> None:
                outer.exit_value = value
                raise _Exit

        self.widgets, self.notebook = Widgets(), Notebook()


def _write_tables(warehouse: str, cfg) -> None:
    """A small warehouse: two weeks of runs and a few anomalies, written with delta-rs."""
    from deltalake import write_deltalake

    from portprint.jobs.warehouse.tables import ANOMALIES, RUNS

    utc = dt.timezone.utc
    runs, anomalies = [], []
    for i in range(14):
        d = (dt.date(2026, 11, 1) + dt.timedelta(days=i)).isoformat()
        n = 40 if i == 12 else 3 + i % 3
        row = dict.fromkeys(RUNS.names)
        row.update(run_id=f"r{i}", date=d, status="succeeded", anomalies=n, flows_read=100, flows_scored=90,
                   flows_skipped=1, model_flagged=1, rule_flagged=n - 1, threshold=0.1, model_version="m",
                   writer="delta-rs", seconds=2.0, started_at=dt.datetime(2026, 11, 2, tzinfo=utc) + dt.timedelta(i),
                   archive="/a")
        runs.append(row)
        for j in range(2):
            a = dict.fromkeys(ANOMALIES.names)
            a.update(flow_id=f"f{i}-{j}", ts=dt.datetime(2026, 11, 1, tzinfo=utc) + dt.timedelta(i), date=d,
                     src_ip=f"10.0.0.{j}", src_port=40000, dst_ip="192.0.2.53", dst_port=53, proto=6,
                     matched_side="responder", detector="header-rule" if j else "header-model",
                     header_verdict="invalid", header_reason="opcode", loss=1.0, threshold=0.1, score=10.0 + i,
                     prefix_len=8, prefix_hex="5353482d322e302d", prefix_text="SSH-2.0-", dns_id=21331, qr=0,
                     opcode=9, rcode=5, qdcount=11570, ancount=12846, tcp_len=21331, failed_bytes=[2, 3],
                     failed_fields="flags", model_version="m", run_id=f"r{i}",
                     scored_at=dt.datetime(2026, 11, 2, tzinfo=utc))
            anomalies.append(a)
    write_deltalake(os.path.join(warehouse, cfg.output.runs), pa.Table.from_pylist(runs, schema=RUNS),
                    partition_by=["date"])
    write_deltalake(os.path.join(warehouse, cfg.output.anomalies), pa.Table.from_pylist(anomalies, schema=ANOMALIES),
                    partition_by=["date"])


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory, cfg) -> str:
    wh = str(tmp_path_factory.mktemp("notebook-wh"))
    _write_tables(wh, cfg)
    return wh


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_end_to_end_on_a_small_warehouse(path, spark, warehouse, tmp_path):
    """Each notebook, executed as a job would run it, with env local instead of databricks."""
    shown: list[int] = []

    def display(df) -> None:
        shown.append(len(df.collect()))

    widgets = {"env": "local", "warehouse": warehouse, "out": str(tmp_path / "report"), "text": "SSH-",
               "start": "2026-11-03", "end": "2026-11-12", "src_ip": "10.0.0.1"}
    dbutils = FakeDbutils(widgets)
    namespace = {"__name__": "__main__", "spark": spark, "dbutils": dbutils, "display": display}
    try:
        exec(compile(path.read_text(), str(path), "exec"), namespace)
    except _Exit:
        pass
    finally:
        from portprint.jobs.sql import VIEWS

        for view in VIEWS:
            spark.catalog.dropTempView(view)
    assert shown, f"{path.name} displayed nothing"
    if path.name == "daily_report.py":
        import json

        summary = json.loads(dbutils.exit_value)
        assert summary["dates"] == 14 and summary["dates_outside_band"] >= 1
    if path.name == "hunting.py":
        assert shown[0] == 10  # 10 dates x the one anomaly a day from 10.0.0.1

"""The Databricks Asset Bundle (databricks.yml + resources/*.yml) checked against the code it deploys.

Every job task must run something that exists: a console script of this package whose CLI accepts the
task's parameters, or a notebook in the repository with the widgets the task sets. A CLI flag the
bundle uses but the CLI does not have yet makes its test xfail with the flag's name.
"""

from __future__ import annotations

import ast
import configparser
import glob
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from portprint.conf.config import load_config
from portprint.jobs.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "databricks.yml"
FILE_PATH = "/Workspace/bundle/files"  # stands for ${workspace.file_path}: the synced copy of the repository
VAR = re.compile(r"\$\{var\.([A-Za-z0-9_]+)\}")
REF = re.compile(r"\$\{([A-Za-z0-9_.]+)\}")
DYNAMIC = re.compile(r"\{\{\s*([A-Za-z0-9_.]+)\s*\}\}")
TARGETS = ("dev", "prod")


def _load(path: Path) -> dict[str, Any]:
    with open(path) as fh:
        return yaml.safe_load(fh) or {}


def bundle_files() -> list[Path]:
    """databricks.yml and every file its `include` globs match."""
    files = [BUNDLE]
    for pattern in _load(BUNDLE).get("include", []):
        files += sorted(Path(p) for p in glob.glob(str(ROOT / pattern)))
    return files


def jobs() -> dict[str, tuple[dict[str, Any], Path]]:
    """Every job of the bundle, with the file that defines it (relative paths resolve against that file)."""
    out: dict[str, tuple[dict[str, Any], Path]] = {}
    for path in bundle_files():
        for name, job in ((_load(path).get("resources") or {}).get("jobs") or {}).items():
            assert name not in out, f"job {name} is defined twice"
            out[name] = (job, path)
    return out


def tasks() -> Iterator[tuple[str, dict[str, Any], dict[str, Any], Path]]:
    for name, (job, path) in jobs().items():
        for task in job.get("tasks", []):
            yield name, job, task, path


def _strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for k, v in node.items():
            yield from _strings(k)
            yield from _strings(v)
    elif isinstance(node, list):
        for v in node:
            yield from _strings(v)


def variables(target: str) -> dict[str, str]:
    """The variables' values in a target: defaults, overridden by the target, references resolved."""
    root = _load(BUNDLE)
    values = {k: str(v.get("default", "")) for k, v in root["variables"].items()}
    values.update({k: str(v) for k, v in (root["targets"][target].get("variables") or {}).items()})
    for _ in range(10):  # variables may refer to variables
        current = dict(values)
        values = {k: VAR.sub(lambda m, cur=current: cur[m.group(1)], v) for k, v in current.items()}
    assert not any(VAR.search(v) for v in values.values()), "circular variable references"
    return values


def resolve(text: str, target: str, job: dict[str, Any]) -> str:
    """A task parameter as the job would see it in `target` (dynamic values filled with examples)."""
    values = variables(target)
    known = {"bundle.target": target, "bundle.name": _load(BUNDLE)["bundle"]["name"], "workspace.file_path": FILE_PATH}

    def sub(m: re.Match) -> str:
        ref = m.group(1)
        if ref.startswith("var."):
            return values[ref[4:]]
        assert ref in known, f"unexpected substitution ${{{ref}}}"
        return known[ref]

    params = {p["name"]: str(p.get("default", "")) for p in job.get("parameters", [])}

    def dyn(m: re.Match) -> str:
        ref = m.group(1)
        if ref.startswith("job.parameters."):
            return REF.sub(sub, params[ref[len("job.parameters."):]])
        return {"job.start_time.iso_date": "2026-11-29", "job.run_id": "123", "job.id": "456"}[ref]

    return DYNAMIC.sub(dyn, REF.sub(sub, text))


def repo_path(resolved: str) -> Path | None:
    """The repository file behind a path under ${workspace.file_path}, else None (a volume or cloud path)."""
    return ROOT / resolved[len(FILE_PATH) + 1:] if resolved.startswith(FILE_PATH + "/") else None


def setup_cfg() -> configparser.ConfigParser:
    cp = configparser.ConfigParser()
    cp.read(ROOT / "setup.cfg")
    return cp


def console_scripts() -> dict[str, str]:
    lines = setup_cfg()["options.entry_points"]["console_scripts"].strip().splitlines()
    return dict(tuple(s.strip() for s in line.split("=", 1)) for line in lines if line.strip())


WHEEL_TASKS = [(job, task["task_key"]) for job, _, task, _ in tasks() if "python_wheel_task" in task]
NOTEBOOK_TASKS = [(job, task["task_key"]) for job, _, task, _ in tasks() if "notebook_task" in task]


def _task(job_name: str, key: str) -> tuple[dict[str, Any], dict[str, Any], Path]:
    job, path = jobs()[job_name]
    return job, next(t for t in job["tasks"] if t["task_key"] == key), path


# ---------------------------------------------------------------- the bundle itself


def test_bundle_has_dev_and_prod_targets():
    root = _load(BUNDLE)
    assert set(TARGETS) <= set(root["targets"])
    assert root["targets"]["dev"].get("default") is True and root["targets"]["dev"].get("mode") == "development"
    assert root["targets"]["prod"].get("mode") == "production"


def test_every_variable_used_is_declared_and_every_declared_one_is_used():
    declared = set(_load(BUNDLE)["variables"])
    used: set[str] = set()
    for path in bundle_files():
        for s in _strings(_load(path)):
            used |= set(VAR.findall(s))
    assert used <= declared, f"undeclared: {sorted(used - declared)}"
    assert declared <= used, f"declared but never used: {sorted(declared - used)}"
    for name in ("catalog", "schema", "archive", "model_dir", "warehouse", "node_type_id"):
        assert name in declared


def test_job_parameters_referenced_are_declared():
    for name, (job, _) in jobs().items():
        declared = {p["name"] for p in job.get("parameters", [])}
        for s in _strings(job.get("tasks", [])):
            for ref in DYNAMIC.findall(s):
                if ref.startswith("job.parameters."):
                    assert ref[len("job.parameters."):] in declared, f"{name}: {ref} is not a job parameter"


def test_jobs_fit_the_databricks_job_schema():
    """Databricks' own job models (the databricks-bundles package) reject unknown fields and bad enum values."""
    bundles_jobs = pytest.importorskip("databricks.bundles.jobs", reason="pip install databricks-bundles")
    for name, (job, _) in jobs().items():
        try:
            bundles_jobs.Job.from_dict(job)
        except Exception as exc:
            raise AssertionError(f"{name}: {exc}") from None


def test_four_jobs_on_their_schedules():
    want = {"portprint_score_nightly": "0 0 2 * * ?", "portprint_train_weekly": "0 0 4 ? * SUN",
            "portprint_report_daily": "0 0 6 * * ?", "portprint_maintain_weekly": "0 0 8 ? * SUN"}
    got = {name: job["schedule"] for name, (job, _) in jobs().items()}
    assert set(got) == set(want)
    for name, cron in want.items():
        assert got[name]["quartz_cron_expression"] == cron and got[name]["timezone_id"] == "UTC", name


def test_task_graph_is_consistent():
    for name, (job, _) in jobs().items():
        keys = [t["task_key"] for t in job["tasks"]]
        assert len(keys) == len(set(keys)), name
        clusters = {c["job_cluster_key"] for c in job.get("job_clusters", [])}
        for t in job["tasks"]:
            if "job_cluster_key" in t:
                assert t["job_cluster_key"] in clusters, f"{name}.{t['task_key']}"
            for dep in t.get("depends_on", []):
                assert dep["task_key"] in keys, f"{name}.{t['task_key']} depends on a missing task"
                if "outcome" in dep:
                    upstream = next(u for u in job["tasks"] if u["task_key"] == dep["task_key"])
                    assert "condition_task" in upstream and dep["outcome"] in ("true", "false")


def test_evaluation_runs_only_when_labels_are_set():
    job, _ = jobs()["portprint_train_weekly"]
    by_key = {t["task_key"]: t for t in job["tasks"]}
    evaluate = next(t for t in job["tasks"] if t.get("python_wheel_task", {}).get("parameters", [None])[0]
                    == "evaluate")
    (dep,) = evaluate["depends_on"]
    cond = by_key[dep["task_key"]]["condition_task"]
    assert dep["outcome"] == "true" and cond["op"] == "NOT_EQUAL"
    assert cond["left"] == "{{job.parameters.labels}}"
    # The default ("none") must equal the condition's right side, or evaluation would run without labels.
    for target in TARGETS:
        assert resolve(cond["left"], target, job) == cond["right"]
    assert by_key[dep["task_key"]]["depends_on"][0]["task_key"] in by_key  # after training


def test_job_clusters_run_a_spark_with_arrow_udf():
    """portprint's UDFs are pyspark.sql.functions.arrow_udf, new in Spark 4.1: Databricks Runtime 18+."""
    for target in TARGETS:
        version = variables(target)["spark_version"]
        assert int(version.split(".")[0]) >= 18, f"{target}: {version} is older than Databricks Runtime 18"
    for name, (job, _) in jobs().items():
        for c in job.get("job_clusters", []):
            assert c["new_cluster"]["spark_version"] == "${var.spark_version}", name
            assert c["new_cluster"]["node_type_id"] == "${var.node_type_id}", name


# ---------------------------------------------------------------- wheel tasks against the package and its CLI


def test_the_artifact_is_this_package_and_tasks_install_it():
    root = _load(BUNDLE)
    (artifact,) = root["artifacts"].values()
    assert artifact["type"] == "whl" and (ROOT / artifact["path"]).resolve() == ROOT
    assert "--wheel-dir dist" in artifact["build"] or "build --wheel" in artifact["build"]
    for name, _, task, path in tasks():
        if "python_wheel_task" in task or "notebook_task" in task:
            whls = [lib["whl"] for lib in task.get("libraries", []) if "whl" in lib]
            assert whls, f"{name}.{task['task_key']} does not install the wheel"
            for whl in whls:
                assert (path.parent / whl).resolve().parent == ROOT / "dist", whl


@pytest.mark.parametrize(("job_name", "key"), WHEEL_TASKS)
def test_wheel_task_entry_point_is_a_console_script(job_name, key):
    _, task, _ = _task(job_name, key)
    wt = task["python_wheel_task"]
    assert wt["package_name"] == setup_cfg()["metadata"]["name"]
    scripts = console_scripts()
    assert wt["entry_point"] in scripts, f"{wt['entry_point']} is not in setup.cfg's console_scripts"
    module, func = scripts[wt["entry_point"]].split(":")
    import importlib

    assert callable(getattr(importlib.import_module(module), func))


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize(("job_name", "key"), WHEEL_TASKS)
def test_wheel_task_parameters_parse_with_the_cli(job_name, key, target):
    job, task, _ = _task(job_name, key)
    args = [resolve(str(a), target, job) for a in task["python_wheel_task"]["parameters"]]
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")  # the subcommands
    if args[0] not in sub.choices:
        pytest.xfail(f"the CLI has no `{args[0]}` command yet")
    known = {opt for a in sub.choices[args[0]]._actions for opt in a.option_strings}
    for flag in (a.split("=", 1)[0] for a in args[1:] if a.startswith("--")):
        if flag not in known:
            pytest.xfail(f"`portprint {args[0]}` has no {flag} yet")
    ns = parser.parse_args(args)  # a wrong type or a missing required flag fails here
    assert ns.command == args[0]
    if getattr(ns, "env", None) is not None:
        assert ns.env == "databricks"
    conf = getattr(ns, "conf", None)
    if conf:
        local = repo_path(conf)
        assert local is not None and local.is_file(), f"--conf {conf} is not a file of the repository"
        load_config(ns.env, str(local))  # unknown keys or bad values fail here


@pytest.mark.parametrize("target", TARGETS)
def test_unity_catalog_names_follow_the_targets_catalog_and_schema(target):
    """The --conf each job passes names the tables in this target's catalog.schema (dev never writes prod)."""
    v = variables(target)
    confs = set()
    for _, job, task, _ in tasks():
        params = (task.get("python_wheel_task", {}).get("parameters", [])
                  + [f"--conf={p}" for k, p in task.get("notebook_task", {}).get("base_parameters", {}).items()
                     if k == "conf"])
        for i, p in enumerate(params):
            if p == "--conf":
                confs.add(resolve(params[i + 1], target, job))
            elif p.startswith("--conf="):
                confs.add(resolve(p.split("=", 1)[1], target, job))
    assert len(confs) == 1, f"every job should use the same conf file in {target}: {confs}"
    cfg = load_config("databricks", str(repo_path(confs.pop())))
    names = {k: getattr(cfg.output, k) for k in ("anomalies", "runs", "patterns", "pattern_days")
             if hasattr(cfg.output, k)} | {"registry.model_name": cfg.registry.model_name}
    for key, name in names.items():
        assert name.startswith(f"{v['catalog']}.{v['schema']}."), f"{target}: output.{key} = {name}"
        assert name.count(".") == 2, f"{target}: output.{key} = {name} is not catalog.schema.table"
    # Every table takes the catalog-name path (saveAsTable, MERGE INTO by name) that tests/test_production.py runs
    # end to end on the local catalog with spark_catalog.<schema>.<table> names, not a folder under --warehouse.
    from portprint.jobs.warehouse import delta
    from portprint.jobs.warehouse.people import table_path

    for key in ("anomalies", "runs", "patterns", "pattern_days", "verdicts", "suppressions", "suppression_hits",
                "exported"):
        name = getattr(cfg.output, key)
        assert delta.is_table_name(name) and table_path(cfg, "/unused", key) == name, f"{target}: output.{key}"


@pytest.mark.parametrize("target", TARGETS)
def test_jobs_name_the_registered_model_their_conf_registers(target):
    """Nightly scoring reads the champion, the weekly evaluation the candidate, of the model train registers."""
    seen = {}
    for _, job, task, _ in tasks():
        params = task.get("python_wheel_task", {}).get("parameters", [])
        if "--model" in params:
            resolved = [resolve(p, target, job) for p in params]
            conf = resolved[resolved.index("--conf") + 1]
            seen[params[0]] = (resolved[resolved.index("--model") + 1], load_config("databricks", str(repo_path(conf))))
    name = seen["train"][1].registry.model_name
    assert seen["score"][0] == f"models:/{name}@champion"
    assert seen["evaluate"][0] == f"models:/{name}@candidate"
    assert not seen["train"][0].startswith("models:/")  # train writes a folder, then registers it


def test_databricks_overlay_names_unity_catalog_tables():
    cfg = load_config("databricks")
    assert cfg.output.writer == "spark" and cfg.spark.master is None
    assert cfg.output.anomalies.count(".") == 2 and cfg.output.runs.count(".") == 2


# ---------------------------------------------------------------- notebook tasks


def _widgets(source: str) -> tuple[set[str], set[str]]:
    """Widgets a notebook defines (dbutils.widgets.text/dropdown/...) and the ones it reads (get)."""
    defined, read = set(), set()
    for node in ast.walk(ast.parse(source)):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Attribute) and node.func.value.attr == "widgets"
                and node.args and isinstance(node.args[0], ast.Constant)):
            (read if node.func.attr in ("get", "getArgument") else defined).add(node.args[0].value)
    return defined, read


@pytest.mark.parametrize(("job_name", "key"), NOTEBOOK_TASKS)
def test_notebook_task_runs_a_notebook_of_the_repository_with_its_widgets(job_name, key):
    _, task, path = _task(job_name, key)
    nt = task["notebook_task"]
    notebook = (path.parent / nt["notebook_path"]).resolve()
    if not notebook.suffix:
        notebook = notebook.with_suffix(".py")
    assert notebook.is_file() and ROOT in notebook.parents, f"{nt['notebook_path']} is not in the repository"
    source = notebook.read_text()
    assert source.startswith("# Databricks notebook source\n")
    defined, read = _widgets(source)
    assert set(nt.get("base_parameters", {})) <= defined, f"parameters without a widget: " \
                                                          f"{sorted(set(nt['base_parameters']) - defined)}"
    assert read <= defined


def test_the_report_job_runs_the_daily_report_notebook():
    job, _ = jobs()["portprint_report_daily"]
    (task,) = job["tasks"]
    assert task["notebook_task"]["notebook_path"].endswith("notebooks/daily_report.py")


# ---------------------------------------------------------------- the wheel the bundle deploys


@pytest.mark.slow
def test_the_wheel_holds_the_package_conf_and_entry_point(tmp_path):
    """Build the wheel as the bundle does (pip wheel), from a copy so the repository gets no build/ folder."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for folder in ("jobs", "udfs", "models", "conf"):
        shutil.copytree(ROOT / folder, src / folder, ignore=shutil.ignore_patterns("__pycache__"))
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
                           "--wheel-dir", str(tmp_path / "dist"), str(src)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (whl,) = (tmp_path / "dist").glob("portprint-*.whl")
    names = set(zipfile.ZipFile(whl).namelist())
    for needed in ("portprint/jobs/cli.py", "portprint/jobs/report.py", "portprint/conf/base.yml",
                   "portprint/conf/databricks.yml", "portprint/udfs/scoring.py", "portprint/models/artifact.py"):
        assert needed in names, needed
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(whl).read(entry_points).decode()
    for job_name, key in WHEEL_TASKS:
        ep = _task(job_name, key)[1]["python_wheel_task"]["entry_point"]
        target = re.escape(console_scripts()[ep])
        assert re.search(rf"^{re.escape(ep)}\s*=\s*{target}\s*$", text, re.M), text


def test_the_weekly_job_trains_into_a_new_folder_and_promotes_with_checks():
    """No model folder is edited in place, and the candidate becomes the champion only through `promote`, which
    compares it with the champion on the warehouse nightly scoring writes (and checks the goals with labels)."""
    job, _ = jobs()["portprint_train_weekly"]
    by_key = {t["task_key"]: t for t in job["tasks"]}
    params = {k: t.get("python_wheel_task", {}).get("parameters", []) for k, t in by_key.items()}
    train = params["train"]
    assert train[train.index("--model") + 1].endswith("/{{job.start_time.iso_date}}")
    promotes = [k for k, p in params.items() if p[:1] == ["promote"]]
    assert sorted(promotes) == ["promote", "promote_with_goals"]
    nightly, _ = jobs()["portprint_score_nightly"]
    (score,) = [t["python_wheel_task"]["parameters"] for t in nightly["tasks"]]
    warehouse = score[score.index("--warehouse") + 1]
    for k in promotes:
        p = params[k]
        assert p[p.index("--model") + 1].endswith("@candidate") and p[p.index("--warehouse") + 1] == warehouse
        assert "--force" not in p
    assert "--labels" in params["promote_with_goals"] and "--labels" not in params["promote"]
    # Exactly one of the two runs: without labels after the condition's false branch, with them after evaluate.
    assert by_key["promote"]["depends_on"] == [{"task_key": "has_labels", "outcome": "false"}]
    assert by_key["promote_with_goals"]["depends_on"] == [{"task_key": "evaluate"}]

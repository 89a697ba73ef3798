"""The house's layers point down: conf < models < udfs < jobs, read from the modules' own imports with ast."""

from __future__ import annotations

import ast
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Each layer and the layers it may import (besides itself). Entry points and plumbing both live in jobs/.
LAYERS = {"conf": set(), "models": {"conf"}, "udfs": {"conf", "models"}, "jobs": {"conf", "models", "udfs"}}


def _modules(folder: str) -> list[str]:
    out = []
    for dirpath, _, names in os.walk(os.path.join(ROOT, folder)):
        out += [os.path.join(dirpath, n) for n in names if n.endswith(".py")]
    return sorted(out)


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as fh:
        return fh.read()


def _portprint_imports(path: str) -> list[tuple[int, str]]:
    """(line, imported layer) of every `portprint.<layer>` import, at any depth of the module."""
    tree = ast.parse(_read(path), path)
    found = []
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        for name in names:
            parts = name.split(".")
            if parts[0] == "portprint" and len(parts) > 1:
                found.append((node.lineno, parts[1]))
    return found


@pytest.mark.parametrize("layer", sorted(LAYERS))
def test_no_import_points_up(layer):
    bad = [f"{os.path.relpath(path, ROOT)}:{line} imports portprint.{target}"
           for path in _modules(layer) for line, target in _portprint_imports(path)
           if target != layer and target not in LAYERS[layer]]
    assert not bad, "imports that point up a layer:\n" + "\n".join(bad)


def test_the_check_sees_an_import_that_points_up(tmp_path):
    bad = tmp_path / "m.py"
    bad.write_text("def f():\n    from portprint.jobs.score import run_score\n")
    assert _portprint_imports(str(bad)) == [(2, "jobs")]


@pytest.mark.parametrize("module", ["portprint.jobs.report", "portprint.jobs.warehouse.views", "portprint.jobs.sql"])
def test_reports_and_analyst_views_do_not_load_torch(module):
    # The notebooks import these; torch (and the models' code) is for scoring, not for reading tables.
    code = f"import sys, {module}; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


@pytest.mark.parametrize("path", [p for layer in LAYERS for p in _modules(layer)],
                         ids=lambda p: os.path.relpath(p, ROOT))
def test_every_module_opens_with_what_it_is(path):
    doc = ast.get_docstring(ast.parse(_read(path), path))
    assert doc and len(doc.split()) >= 6, f"{os.path.relpath(path, ROOT)} does not open with what it is"

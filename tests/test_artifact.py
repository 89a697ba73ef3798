"""Model folders: model_version covers every value that decides a verdict; a save is atomic, even when killed."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import asdict
from pathlib import Path

import pytest
from model_fixtures import make_artifact

from portprint.models.artifact import ModelArtifact, ModelError, ModelMeta, content_version


def _version_after(art: ModelArtifact, change) -> str:
    raw = copy.deepcopy(asdict(art.meta))
    weights, qweights, known = change(raw, art.weights, art.qname_weights, art.qname_known)
    return content_version(weights, ModelMeta(**raw), qweights, known)


# Written out here, not taken from models/artifact.py: what a reviewer says decides a verdict.
VERDICT_CHANGES = {
    "header threshold": lambda m, w, q, k: (m.update(threshold=0.06), (w, q, k))[1],
    "feature version": lambda m, w, q, k: (m.update(feature_version="bits-v99"), (w, q, k))[1],
    "width": lambda m, w, q, k: (m.update(width=12), (w, q, k))[1],
    "id mode": lambda m, w, q, k: (m.update(id_mode="keep"), (w, q, k))[1],
    "hidden": lambda m, w, q, k: (m.update(hidden=[32, 8]), (w, q, k))[1],
    "n_features": lambda m, w, q, k: (m.update(n_features=98), (w, q, k))[1],
    "question threshold": lambda m, w, q, k: (m["qname"].update(threshold=0.41), (w, q, k))[1],
    "odd threshold": lambda m, w, q, k: (m["qname"].update(odd_threshold=0.21), (w, q, k))[1],
    "odd rate": lambda m, w, q, k: (m["qname"].update(odd_rate=0.05), (w, q, k))[1],
    "question features": lambda m, w, q, k: (m["qname"].update(feature_version="qname-v99"), (w, q, k))[1],
    "question hidden": lambda m, w, q, k: (m["qname"].update(hidden=[16, 8]), (w, q, k))[1],
    "question n_features": lambda m, w, q, k: (m["qname"].update(n_features=m["qname"]["n_features"] + 1),
                                               (w, q, k))[1],
    "header weights": lambda m, w, q, k: (w[:-1] + bytes([w[-1] ^ 1]), q, k),
    "question weights": lambda m, w, q, k: (w, q[:-1] + bytes([q[-1] ^ 1]), k),
    "known names": lambda m, w, q, k: (w, q, k[:-8]),
    "no known names": lambda m, w, q, k: (w, q, None),
}
NOT_VERDICT = {
    "loss statistics": lambda m, w, q, k: (m.update(loss_stats={"p50": 9.0}), (w, q, k))[1],
    "training window": lambda m, w, q, k: (m.update(train_start="2020-01-01"), (w, q, k))[1],
    "threshold explanation": lambda m, w, q, k: (m["threshold_info"].update(method="pot"), (w, q, k))[1],
    "question loss statistics": lambda m, w, q, k: (m["qname"].update(loss_stats={}), (w, q, k))[1],
}


@pytest.mark.parametrize("what", list(VERDICT_CHANGES))
def test_every_value_that_decides_a_verdict_changes_model_version(what):
    art = make_artifact()
    assert content_version(art.weights, art.meta, art.qname_weights, art.qname_known) == art.meta.model_version
    assert _version_after(art, VERDICT_CHANGES[what]) != art.meta.model_version


@pytest.mark.parametrize("what", list(NOT_VERDICT))
def test_values_that_decide_nothing_leave_model_version(what):
    art = make_artifact()
    assert _version_after(art, NOT_VERDICT[what]) == art.meta.model_version


def test_folder_round_trip_lists_every_file_with_its_hash(tmp_path):
    art = make_artifact()
    out = art.save(str(tmp_path / "m"), card="# card\n")
    meta = json.loads((out / "model.json").read_text())
    on_disk = sorted(p.name for p in out.iterdir() if p.name != "model.json")
    assert sorted(meta["files"]) == on_disk == sorted(["model.pt", "qname.pt", "qname_known.u64", "MODEL_CARD.md",
                                                       "calibration_loss.npy", "qname_calibration_loss.npy"])
    for name, digest in meta["files"].items():
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == digest
    back = ModelArtifact.load(str(out), with_extras=True)
    assert ModelArtifact.load(str(out)).extras == {}  # what travels to Spark tasks: no held-out losses
    assert (back.weights, back.qname_weights, back.qname_known, back.meta.model_version) == \
        (art.weights, art.qname_weights, art.qname_known, art.meta.model_version)
    assert back.extras == art.extras
    assert sorted(os.listdir(tmp_path)) == ["m"]  # nothing left beside it


@pytest.mark.parametrize("damage, words", [
    (lambda d: (d / "calibration_loss.npy").unlink(), "is missing"),
    (lambda d: (d / "qname.pt").write_bytes((d / "qname.pt").read_bytes()[:100]), "SHA-256"),
    (lambda d: (d / "model.json").write_text((d / "model.json").read_text()[:200]), "unreadable"),
    (lambda d: (d / "model.json").unlink(), "not a portprint model"),
])
def test_load_refuses_a_half_written_or_edited_folder(tmp_path, damage, words):
    out = make_artifact().save(str(tmp_path / "m"))
    damage(out)
    with pytest.raises(ModelError, match=words):
        ModelArtifact.load(str(out))


def test_load_refuses_a_temporary_folder_and_save_refuses_a_folder_that_is_not_a_model(tmp_path):
    out = make_artifact().save(str(tmp_path / "m"))
    tmp = tmp_path / "m.tmp-99999999-abcdef"
    os.rename(out, tmp)
    with pytest.raises(ModelError, match="being written"):
        ModelArtifact.load(str(tmp))
    other = tmp_path / "data"
    other.mkdir()
    (other / "keep.txt").write_text("not a model")
    with pytest.raises(ModelError, match="not a portprint model folder"):
        make_artifact().save(str(other))
    assert (other / "keep.txt").read_text() == "not a model"


CHILD = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    from model_fixtures import make_artifact
    make_artifact(seed=1, threshold=0.07).save({out!r}, card="# new\\n")
""")


def _save_in_child(out: Path, point: str, exchange: bool, tmp_path: Path) -> int:
    """Run a save of the new model in a child, SIGKILL it at ``point``; return its exit status."""
    ready = tmp_path / f"ready-{point.replace(':', '-')}"
    env = dict(os.environ, PORTPRINT_FAULT=point, PORTPRINT_FAULT_READY=str(ready))
    if not exchange:
        env["PORTPRINT_NO_RENAME_EXCHANGE"] = "1"
    child = subprocess.Popen([sys.executable, "-c", CHILD.format(tests=str(Path(__file__).parent), out=str(out))],
                             env=env)
    deadline = time.monotonic() + 60
    while not ready.exists() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    if ready.exists():
        assert int(ready.read_text()) == child.pid
        os.kill(child.pid, signal.SIGKILL)
    return child.wait(timeout=60)


@pytest.mark.parametrize("exchange", [True, False], ids=["rename-exchange", "two-renames"])
@pytest.mark.parametrize("point", ["model-save:writing", "model-save:written", "model-save:moved-old"])
def test_a_writer_killed_before_the_swap_leaves_the_old_model(tmp_path, point, exchange):
    old = make_artifact(seed=0, threshold=0.05)
    out = old.save(str(tmp_path / "m"))
    new_version = make_artifact(seed=1, threshold=0.07).meta.model_version
    status = _save_in_child(out, point, exchange, tmp_path)
    if point == "model-save:moved-old" and exchange:
        assert status == 0  # one atomic exchange: there is no moment with the old model moved aside
        assert ModelArtifact.load(str(out)).meta.model_version == new_version
        return
    assert status == -signal.SIGKILL
    assert len(os.listdir(tmp_path)) >= 2  # the killed writer's folder is still beside the model
    assert ModelArtifact.load(str(out)).meta.model_version == old.meta.model_version
    # The next save cleans up after the killed one and lands whole.
    third = make_artifact(seed=2, threshold=0.09)
    third.save(str(out))
    assert ModelArtifact.load(str(out)).meta.model_version == third.meta.model_version
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("ready")) == ["m"]


@pytest.mark.parametrize("exchange", [True, False], ids=["rename-exchange", "two-renames"])
def test_a_writer_killed_after_the_swap_leaves_the_new_model(tmp_path, exchange):
    make_artifact(seed=0).save(str(tmp_path / "m"))
    new_version = make_artifact(seed=1, threshold=0.07).meta.model_version
    assert _save_in_child(tmp_path / "m", "model-save:swapped", exchange, tmp_path) == -signal.SIGKILL
    assert ModelArtifact.load(str(tmp_path / "m")).meta.model_version == new_version

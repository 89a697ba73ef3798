"""Acceptance on tests/data/shift (issue 16 §4): the acceptance split, run last, matched and in three shifts.

Every threshold and design choice was made on the development and validation splits (docs/detection.md says which
on which). The model is what ``portprint train`` makes at its defaults on the setting's training days; scoring goes
through the Source reader, Detect and Escalate code `portprint score` runs (benchmarks/tunnel_eval.py's plain pass),
and the metrics are `portprint evaluate`'s. It asserts the goals of issue 16 §4 on this corpus (the corpus has no
non-DNS flows: non-DNS recall is asserted on tests/data/corpus by tests/test_corpus.py). A goal that fails here is
stated in docs/detection.md with its numbers, never tuned away on this split.

It runs in ``make test`` (an ingest of the corpus and four trainings, a few minutes); ``PORTPRINT_SHIFT_WORK``
names a folder that keeps the archives and models between runs.
"""

from __future__ import annotations

import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "benchmarks"))

SETTINGS = ("matched", "impl", "zone", "leg")  # the matched window and the three shifts (tests/data/corpus_splits.py)
FP_GOAL = 0.001          # genuine DNS flagged, every setting
RECALL_GOAL = 0.90       # tunnel recall, mean over families, matched setting
HARD_GOAL = 0.005        # no hard-benign category above this, every setting


@pytest.fixture(scope="module")
def results(spark, tmp_path_factory):
    import tunnel_eval

    from portprint.conf.config import load_config

    work = os.environ.get("PORTPRINT_SHIFT_WORK") or str(tmp_path_factory.mktemp("shift"))
    cfg = load_config("local", overrides={"spark": {"master": "local[2]"}})
    out = {}
    for name in SETTINGS:
        ev = tunnel_eval.evaluate_setting(name, "acceptance", spark, work, cfg)
        print(tunnel_eval.summary_line(ev))
        out[name] = ev
    return out


def _report(ev: dict) -> None:
    for fam, r in sorted(ev["tunnel"]["by_family"].items()):
        print(f"  {ev['setting']} {fam}: {r['flagged']}/{r['flows']} = {r['rate']:.1%} "
              f"[{r['lower95']:.1%}, {r['upper95']:.1%}]")
    for cat, r in sorted(ev["hard_benign"]["by_category"].items()):
        print(f"  {ev['setting']} {cat}: {r['flagged']}/{r['flows']} (<= {r['upper95']:.2%})")


@pytest.mark.parametrize("setting", SETTINGS)
def test_false_positives_on_genuine_dns(results, setting):
    ev = results[setting]
    _report(ev)
    dns = ev["per_label"]["dns"]
    assert dns["flows"] > 3_000  # (zone scores the held-out zones' flows only)
    assert ev["fpr"] <= FP_GOAL, f"{dns['flagged']}/{dns['flows']} genuine DNS flagged (<= {ev['fpr_upper95']:.3%})"


@pytest.mark.parametrize("setting", SETTINGS)
def test_no_hard_benign_category_above_half_a_percent(results, setting):
    by_cat = results[setting]["hard_benign"]["by_category"]
    assert len(by_cat) >= (18 if setting in ("matched", "impl") else 5)  # (zone: held-out zones; leg: upstream)
    over = {c: f"{r['flagged']}/{r['flows']}" for c, r in by_cat.items() if r["rate"] > HARD_GOAL}
    assert not over


def test_matched_tunnel_recall_family_mean(results):
    t = results["matched"]["tunnel"]
    assert len(t["by_family"]) == 7  # every family of the acceptance day, low-and-slow, spread and beacons included
    assert t["family_mean"] >= RECALL_GOAL, {k: f"{v['flagged']}/{v['flows']}" for k, v in t["by_family"].items()}


@pytest.mark.parametrize("setting", SETTINGS[1:])
def test_shifted_recall_is_reported_per_family(results, setting):
    t = results[setting]["tunnel"]
    assert set(t["by_family"]) <= set(results["matched"]["tunnel"]["by_family"])
    assert len(t["by_family"]) >= 6  # (leg: a family whose capture holds no upstream flow has none)
    assert all(0 <= v["lower95"] <= v["rate"] <= v["upper95"] <= 1 for v in t["by_family"].values())

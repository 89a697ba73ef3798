"""Train/test settings on the shifted corpus (tests/data/shift): which flows a run may train on, which it scores.

Pure Python (csv only, no Spark), for tests and evaluation scripts. The split of a flow is fixed by its day
(days.tsv), and days were assigned to splits before anything was tuned (docs/corpus.md):

- ``development``: 2026-12-01..03, any design choice;
- ``validation``: 2026-12-04..06, thresholds and methods;
- ``acceptance``: 2026-12-10..12 (a second draw: the first, 12-07..09, was spent), run last; asserts the goals.

Every split holds three days and its own zones, client hosts and tunnel domains, so no name is asked in two
splits. Within a split, the settings (``SETTINGS``) train on its first two days and score its third:

- ``matched``: train on every flow of days 1-2 (unlabelled, tunnels included, as a nightly deployment would);
  score every flow of day 3;
- ``impl``: train on the genuine stub flows of one client and one server (dig -> bind9) of days 1-2; score
  every flow of day 3 (all clients, servers and legs);
- ``zone``: train on the genuine flows of days 1-2 whose zone is in the ``seen`` group (zones.tsv); score the
  day-3 flows whose zone is ``heldout`` (tunnel domains are always held out);
- ``leg``: train on the genuine stub flows (client -> resolver) of days 1-2; score the day-3 upstream flows
  (resolver -> authoritative).

``setting(corpus, name, split)`` returns a ``Setting``: the capture files and flow ids to train on, the files
that hold the scored flows, and the scored flows' labels. ``write_labels`` writes them as a labels CSV that
``portprint evaluate`` reads (flow_id, label, category first).
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

SPLITS = ("development", "validation", "acceptance")
SETTINGS = ("matched", "impl", "zone", "leg")
TEST_FIELDS = [
    "flow_id",
    "label",
    "category",
    "family",
    "split",
    "day",
    "leg",
    "client",
    "server",
    "zone",
    "scenario",
    "qname",
    "file",
]
IMPL_PAIR = ("dig", "bind9")  # the one client and one server the implementation shift trains on


@dataclass
class Setting:
    name: str
    split: str
    train_days: list[str]
    test_day: str
    train_files: list[str] = field(default_factory=list)  # capture files (relative to the corpus) holding them
    train_flow_ids: list[str] = field(default_factory=list)
    test_files: list[str] = field(default_factory=list)
    test: list[dict[str, str]] = field(default_factory=list)  # one row per scored flow, TEST_FIELDS


def read_labels(corpus: str | Path) -> list[dict[str, str]]:
    """labels.csv.gz (as committed) or labels.csv, one dict per flow."""
    path = Path(corpus) / "labels.csv.gz"
    if not path.exists():
        path = Path(corpus) / "labels.csv"
    with (gzip.open(path, "rt", newline="") if path.suffix == ".gz" else open(path, newline="")) as fh:
        return list(csv.DictReader(fh))


def zone_groups(corpus: str | Path) -> dict[str, str]:
    with open(Path(corpus) / "zones.tsv", newline="") as fh:
        return {r["zone"]: r["group"] for r in csv.DictReader(fh, delimiter="\t")}


def zone_group(zone: str, groups: dict[str, str]) -> str:
    """``seen`` or ``heldout``: from zones.tsv; a zone not listed there (a top-level domain, a name under no
    zone of ours) by the same hash shift_plan.py uses."""
    if zone in groups:
        return groups[zone]
    return "heldout" if int(hashlib.sha256(("group:" + zone).encode()).hexdigest()[:12], 16) % 3 == 0 else "seen"


def split_days(rows: Iterable[dict[str, str]], split: str) -> list[str]:
    return sorted({r["day"] for r in rows if r["split"] == split})


def setting(corpus: str | Path, name: str, split: str, rows: list[dict[str, str]] | None = None) -> Setting:
    """The training flows and the scored flows of one setting on one split."""
    if name not in SETTINGS:
        raise ValueError(f"unknown setting {name!r}; choose one of {', '.join(SETTINGS)}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    rows = read_labels(corpus) if rows is None else rows
    days = split_days(rows, split)
    if len(days) < 3:
        raise ValueError(f"split {split} of {corpus} has {len(days)} day(s) of flows; a setting needs three")
    train_days, test_day = days[-3:-1], days[-1]
    groups = zone_groups(corpus)

    def trains(r: dict[str, str]) -> bool:
        if r["day"] not in train_days:
            return False
        if name == "matched":
            return True
        if r["label"] != "dns":
            return False
        if name == "impl":
            return r["leg"] == "stub" and (r["client"], r["server"]) == IMPL_PAIR
        if name == "zone":
            return zone_group(r["zone"], groups) == "seen"
        return r["leg"] == "stub"  # leg

    def scored(r: dict[str, str]) -> bool:
        if r["day"] != test_day:
            return False
        if name == "zone":
            return zone_group(r["zone"], groups) == "heldout"
        if name == "leg":
            return r["leg"] == "upstream"
        return True

    s = Setting(name, split, train_days, test_day)
    train = [r for r in rows if trains(r)]
    s.train_flow_ids = [r["flow_id"] for r in train]
    s.train_files = sorted({r["file"] for r in train})
    s.test = [{k: r[k] for k in TEST_FIELDS} for r in rows if scored(r)]
    s.test_files = sorted({r["file"] for r in s.test})
    return s


def write_labels(s: Setting, path: str | Path) -> None:
    """The scored flows' labels as CSV (flow_id, label, category, ...), the format ``portprint evaluate`` reads."""
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=TEST_FIELDS)
        w.writeheader()
        w.writerows(s.test)


def summary(corpus: str | Path) -> str:
    """Flows and distinct names per split and setting, per category and family (the corpus's table)."""
    rows = read_labels(corpus)
    out = []
    for split in SPLITS:
        days = split_days(rows, split)
        sr = [r for r in rows if r["split"] == split]
        out.append(f"{split} ({', '.join(days)}): {len(sr)} flows, {len({r['qname'] for r in sr})} distinct names")
        for name in SETTINGS:
            s = setting(corpus, name, split, rows)
            lab: dict[str, int] = {}
            for r in s.test:
                lab[r["label"]] = lab.get(r["label"], 0) + 1
            out.append(
                f"  {name:8s} train {len(s.train_flow_ids):6d} flows; test {len(s.test):6d} flows "
                f"({', '.join(f'{k} {v}' for k, v in sorted(lab.items()))})"
            )
        cats: dict[tuple[str, str], list[int | set[str]]] = {}
        for r in sr:
            k = (
                (r["label"], r["family"] or r["category"])
                if r["label"] == "dns-tunnel"
                else (r["label"], r["category"])
            )
            c = cats.setdefault(k, [0, set()])
            c[0] += 1  # type: ignore[operator]
            c[1].add(r["qname"])  # type: ignore[union-attr]
        for (lab_, cat), (n, names) in sorted(cats.items()):
            out.append(f"    {lab_:10s} {cat:20s} {n:6d} flows {len(names):6d} names")  # type: ignore[arg-type]
    return "\n".join(out)


if __name__ == "__main__":
    print(summary(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent / "shift"))

"""The shifted evaluation corpus (tests/data/shift) and its splits: integrity checks, without Spark.

The corpus was made by tests/data/make_shift_corpus.sh (real servers, clients and tunnel tools); these tests
check that its labels and split assignment keep the promises docs/corpus.md makes: every flow labelled once,
splits that share no names and no scenario instance, every hard-benign category and tunnel family in the
validation and acceptance splits at volume, and settings whose training and scored flows do not overlap.
"""

from __future__ import annotations

import collections
import csv
import gzip
import socket
import sys
from pathlib import Path

import dpkt
import pytest

DATA = Path(__file__).parent / "data"
CORPUS = DATA / "shift"
sys.path.insert(0, str(DATA))
import corpus_splits  # noqa: E402

ORIGINAL_FIELDS = ["file", "flow_id", "ts", "proto", "src_ip", "src_port", "dst_ip", "dst_port", "label", "tool",
                   "server", "category"]
# What the corpus promises (docs/corpus.md), written out here rather than read from the generator.
HARD = {"av-sophos", "av-mcafee", "av-cymru", "dnsbl", "uribl", "reverse-sweep", "ip6-arpa", "cdn-cloud",
        "telemetry", "k8s-search", "nsec3", "acme", "dkim", "srv-dnssd", "idn", "guid-label", "hex-label",
        "long-name", "short-name"}
FAMILIES = {"iodine", "dns2tcp", "dig-exfil", "low-and-slow", "spread", "c2-beacon", "pydnst"}
MIN_NAMES_PER_DAY = 200  # "hundreds of distinct names a day" for every hard category


@pytest.fixture(scope="module")
def rows() -> list[dict[str, str]]:
    return corpus_splits.read_labels(CORPUS)


def _infra(r: dict[str, str]) -> bool:
    """Names every resolver asks whatever the traffic: the root, top-level domains, the name servers' hosts."""
    return "." not in r["zone"] or r["zone"] == "." or r["qname"].endswith("dnshost.net")


def test_labels_keep_the_original_columns_first_and_label_every_flow_once(rows):
    with gzip.open(CORPUS / "labels.csv.gz", "rt", newline="") as fh:
        header = next(csv.reader(fh))
    assert header[: len(ORIGINAL_FIELDS)] == ORIGINAL_FIELDS
    assert set(corpus_splits.TEST_FIELDS) <= set(header)
    ids = [r["flow_id"] for r in rows]
    assert len(ids) == len(set(ids)) >= 30_000
    assert {r["label"] for r in rows} == {"dns", "dns-tunnel"}
    assert all(r["leg"] in ("stub", "upstream") and r["client"] and r["server"] and r["scenario"] for r in rows)
    assert all(r["family"] in FAMILIES for r in rows if r["label"] == "dns-tunnel")
    assert not any(r["family"] for r in rows if r["label"] == "dns")
    # every capture in the corpus is labelled, and every labelled file exists
    pcaps = {str(p.relative_to(CORPUS)) for p in CORPUS.glob("*/*.pcap")}
    assert all(p.split("/")[1][:4].isdigit() for p in pcaps)  # <day>/<HHMM>-<scenario>.pcap
    assert {r["file"] for r in rows} == pcaps


def test_days_and_splits(rows):
    with open(CORPUS / "days.tsv", newline="") as fh:
        split_of = {r["day"]: r["split"] for r in csv.DictReader(fh, delimiter="\t")}
    assert all(split_of[r["day"]] == r["split"] for r in rows)
    assert all(r["file"].startswith(r["day"] + "/") for r in rows)  # each capture lies on its own day
    days = collections.defaultdict(set)
    for r in rows:
        days[r["split"]].add(r["day"])
    assert sorted(days) == sorted(corpus_splits.SPLITS)
    assert all(len(d) == 3 for d in days.values())
    # the splits are consecutive blocks of days, development first
    assert max(days["development"]) < min(days["validation"]) <= max(days["validation"]) < min(days["acceptance"])


def test_splits_share_no_names_and_no_scenario_instance(rows):
    split_of_file: dict[str, set[str]] = collections.defaultdict(set)
    names: dict[str, set[str]] = collections.defaultdict(set)
    for r in rows:
        split_of_file[r["file"]].add(r["split"])
        # What clients ask (the stub leg). A resolver's own queries add only the names it builds on its way
        # down (qname minimisation: a zone's apex, a prefix of ip6.arpa nibbles), which are the zones' structure
        # and are the same in every split, as on every network.
        if r["leg"] == "stub" and r["qname"] and not _infra(r):
            names[r["qname"]].add(r["split"])
    assert all(len(s) == 1 for s in split_of_file.values())
    assert len(names) > 20_000
    assert sorted(n for n, s in names.items() if len(s) > 1) == []
    with gzip.open(CORPUS / "names.tsv.gz", "rt", newline="") as fh:
        planned = list(csv.DictReader(fh, delimiter="\t"))
    with open(CORPUS / "days.tsv", newline="") as fh:
        split_of = {r["day"]: r["split"] for r in csv.DictReader(fh, delimiter="\t")}
    where = collections.defaultdict(set)
    for p in planned:
        where[p["name"]].add(split_of[p["day"]])
    assert len(planned) > 10_000
    assert all(len(s) == 1 for s in where.values())


def _asked(path: Path) -> set[str]:
    """Every name queried in a capture (all queries, not only a flow's first: nmap and SpamAssassin send a day's
    lookups from one socket each), read with dpkt, lowercased."""
    names = set()
    with open(path, "rb") as fh:
        for _ts, buf in dpkt.pcap.Reader(fh):
            ip = dpkt.ip.IP(buf) if buf[0] >> 4 == 4 else dpkt.ip6.IP6(buf)
            seg = ip.data
            payload = bytes(seg.data)[2:] if isinstance(seg, dpkt.tcp.TCP) else bytes(seg.data)
            try:
                msg = dpkt.dns.DNS(payload)
            except (dpkt.UnpackError, IndexError, ValueError):
                continue  # an answer cut at 64 bytes, or not DNS
            if msg.qr == dpkt.dns.DNS_Q and msg.qd:
                names.add(msg.qd[0].name.lower())
    return names


@pytest.mark.parametrize("split", ["validation", "acceptance"])
def test_every_hard_category_and_tunnel_family_in_the_split_at_volume(rows, split):
    sr = [r for r in rows if r["split"] == split]
    days = sorted({r["day"] for r in sr})
    assert {r["family"] for r in sr if r["label"] == "dns-tunnel"} == FAMILIES
    # every category on every day of the split
    assert {(r["category"], r["day"]) for r in sr if r["category"] in HARD} == {(c, d) for c in HARD for d in days}
    # and the last day (the one every setting scores) has every family
    assert {r["family"] for r in sr if r["label"] == "dns-tunnel" and r["day"] == days[-1]} == FAMILIES
    # hundreds of distinct names a day from each hard-benign scenario (one host each), on both legs
    files = {(r["scenario"], r["day"]): r["file"] for r in sr if r["category"] in HARD}
    counts = {k: len(_asked(CORPUS / f)) for k, f in files.items()}
    thin = {k: n for k, n in counts.items() if n < MIN_NAMES_PER_DAY}
    assert len(counts) == (len(HARD) - 1) * len(days) and not thin, thin  # (dnsbl and uribl: one mail server)


def test_every_leg_client_and_server_kind_is_there(rows):
    assert {r["leg"] for r in rows} == {"stub", "upstream"}
    clients = {r["client"] for r in rows if r["leg"] == "stub"}
    assert {"dig", "kdig", "drill", "dnspython", "delv", "host", "nslookup", "getent", "nmap"} <= clients
    servers = {r["server"] for r in rows}
    assert {"bind9", "unbound", "kresd", "pdns-recursor", "dnsmasq", "nsd", "knot", "pdns"} <= servers
    assert sum(r["leg"] == "upstream" and r["label"] == "dns" for r in rows) > 10_000


@pytest.mark.parametrize("name", corpus_splits.SETTINGS)
@pytest.mark.parametrize("split", corpus_splits.SPLITS)
def test_settings_train_and_score_apart(rows, name, split):
    s = corpus_splits.setting(CORPUS, name, split, rows)
    by_id = {r["flow_id"]: r for r in rows}
    train = [by_id[f] for f in s.train_flow_ids]
    assert train and s.test
    assert not set(s.train_flow_ids) & {r["flow_id"] for r in s.test}
    assert all(r["split"] == split for r in train + s.test)
    assert max(r["day"] for r in train) < min(r["day"] for r in s.test)
    assert set(s.train_files) == {r["file"] for r in train}
    assert set(s.test_files) == {r["file"] for r in s.test}
    assert all(set(r) == set(corpus_splits.TEST_FIELDS) for r in s.test)
    if name != "matched":
        assert {r["label"] for r in train} == {"dns"}
    if name == "impl":
        assert {(r["client"], r["server"], r["leg"]) for r in train} == {("dig", "bind9", "stub")}
        assert len({r["client"] for r in s.test}) >= 8
    if name == "zone":
        assert not {r["zone"] for r in train} & {r["zone"] for r in s.test}
    if name == "leg":
        assert {r["leg"] for r in train} == {"stub"} and {r["leg"] for r in s.test} == {"upstream"}
    if split != "development" and name in ("matched", "impl"):
        assert {r["family"] for r in s.test if r["label"] == "dns-tunnel"} == FAMILIES


def test_write_labels_reads_back(tmp_path, rows):
    s = corpus_splits.setting(CORPUS, "leg", "validation", rows)
    corpus_splits.write_labels(s, tmp_path / "t.csv")
    with open(tmp_path / "t.csv", newline="") as fh:
        back = list(csv.DictReader(fh))
    assert back == s.test
    with pytest.raises(ValueError, match="unknown setting"):
        corpus_splits.setting(CORPUS, "nope", "validation", rows)


@pytest.mark.slow
def test_every_labelled_flow_is_in_its_capture(rows):
    """Independent of portprint's ingest: each labelled flow's 5-tuple sends a packet in its capture (dpkt)."""
    by_file = collections.defaultdict(set)
    for r in rows:
        by_file[r["file"]].add((int(r["proto"]), r["src_ip"], int(r["src_port"]), r["dst_ip"], int(r["dst_port"])))
    for name, want in by_file.items():
        seen = set()
        with open(CORPUS / name, "rb") as fh:
            for _ts, buf in dpkt.pcap.Reader(fh):  # raw IP (LINKTYPE_RAW)
                ip = dpkt.ip.IP(buf) if buf[0] >> 4 == 4 else dpkt.ip6.IP6(buf)
                seg = ip.data
                if isinstance(seg, (dpkt.udp.UDP, dpkt.tcp.TCP)):
                    fam = socket.AF_INET if isinstance(ip, dpkt.ip.IP) else socket.AF_INET6
                    seen.add((ip.p if fam == socket.AF_INET else ip.nxt, socket.inet_ntop(fam, ip.src), seg.sport,
                              socket.inet_ntop(fam, ip.dst), seg.dport))
        assert want <= seen, (name, sorted(want - seen)[:3])


@pytest.mark.slow
def test_ingesting_the_whole_corpus_gives_exactly_the_labelled_flows(rows, tmp_path):
    """What a user ingests (every capture at once, as `portprint ingest` does) is what was labelled file by file."""
    import pyarrow.dataset as ds

    from portprint.jobs.ingest import ingest

    report = ingest([str(CORPUS)], str(tmp_path / "flows"))
    table = ds.dataset(tmp_path / "flows", format="parquet", partitioning="hive").to_table(columns=["flow_id", "date"])
    assert sorted(table["flow_id"].to_pylist()) == sorted(r["flow_id"] for r in rows)
    assert report.dates == sorted({r["day"] for r in rows})
    by_id = dict(zip(table["flow_id"].to_pylist(), table["date"].to_pylist(), strict=True))
    assert all(str(by_id[r["flow_id"]]) == r["day"] for r in rows)

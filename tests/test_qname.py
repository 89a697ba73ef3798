"""The question-section kernel, checked against a plain-Python reading of RFC 1035 names and dnspython."""

from __future__ import annotations

import itertools
import math
import struct

import dns.message
import dns.name
import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from portprint.models.calibration import calibrate, pot_threshold
from portprint.udfs.features import TCP, UDP, binary_buffers
from portprint.udfs.qname import (
    _COMMON_PAIRS as COMMON_PAIRS,
)
from portprint.udfs.qname import (
    BIN_EDGES,
    N_QNAME_INPUTS,
    QNAME_FEATURES,
    model_inputs,
    qname_features_from_arrow,
    question_keys,
    render_qname,
)

F = {name: i for i, name in enumerate(QNAME_FEATURES)}
QTYPE_COLUMN = {1: "qtype_A", 28: "qtype_AAAA", 12: "qtype_PTR", 16: "qtype_TXT", 15: "qtype_MX", 33: "qtype_SRV",
                2: "qtype_infra", 5: "qtype_infra", 6: "qtype_infra", 43: "qtype_infra", 48: "qtype_infra",
                52: "qtype_infra", 257: "qtype_infra", 64: "qtype_HTTPS", 65: "qtype_HTTPS"}


def reference(prefix: bytes | None, proto: int) -> dict[str, float]:
    """Features by a direct, slow reading of the bytes after the header (written apart from the kernel)."""
    out = dict.fromkeys(QNAME_FEATURES, 0.0)
    body = (prefix or b"")[(2 if proto == TCP else 0) + 12 :]
    if not body:
        out["qtype_hidden"] = 1.0
        return out
    out["visible"] = 1.0
    labels: list[bytes] = []
    declared: list[int] = []
    pos, complete, malformed = 0, False, False
    while pos < len(body):
        n = body[pos]
        if n == 0:
            complete, pos = True, pos + 1
            break
        if n >= 64:
            malformed = True
            break
        labels.append(body[pos + 1 : pos + 1 + n])
        declared.append(n)
        pos += 1 + n
    chars = b"".join(labels)
    folded = chars.lower()

    def entropy(text: bytes) -> float:
        if len(text) <= 1:
            return 0.0
        return -sum(c / len(text) * math.log2(c / len(text)) for c in (text.count(bytes([b])) for b in set(text)))

    def cls(b: int) -> str:
        if chr(b).isascii() and chr(b).isalpha():
            return "letters"
        if chr(b).isascii() and chr(b).isdigit():
            return "digits"
        return {ord("-"): "hyphen", ord("_"): "underscore"}.get(b, "other_printable" if 0x21 <= b < 0x7F else "binary")

    out["complete"] = float(complete)
    out["malformed"] = float(malformed)
    out["labels"] = min(len(labels), 16) / 16
    out["name_chars"] = min(len(chars), 64) / 64
    out["max_label"] = max(declared, default=0) / 63
    out["first_label"] = (declared[0] if declared else 0) / 63
    if chars:
        out["long_label_share"] = sum(len(lab) for lab, d in zip(labels, declared, strict=True) if d >= 16) / len(chars)
        for b in chars:
            out[cls(b)] += 1 / len(chars)
        out["entropy_name"] = entropy(folded) / 6
        switches = 0
        for lab in labels:
            kinds = [cls(b) for b in lab]
            switches += sum(1 for a, b in itertools.pairwise(kinds) if {a, b} == {"letters", "digits"})
        out["letter_digit_switches"] = switches / len(chars)
    longest = max(labels, key=len) if labels else b""  # the first of the longest visible labels
    out["entropy_longest"] = entropy(longest.lower()) / 6
    out["hex_longest"] = float(len(longest) >= 8 and all(chr(b) in "0123456789abcdefABCDEF" for b in longest))
    letters = [b for b in chars if cls(b) == "letters"]
    out["vowel_share"] = sum(chr(b).lower() in "aeiouy" for b in letters) / len(letters) if letters else 0.0
    run = best = 0
    for lab in labels:
        run = 0
        for b in lab:
            run = run + 1 if cls(b) == "letters" and chr(b).lower() not in "aeiouy" else 0
            best = max(best, run)
    out["consonant_run"] = min(best, 16) / 16
    common = set(COMMON_PAIRS)
    pairs = [(lab[k - 1 : k + 1]).decode("latin-1").lower() for lab in labels for k in range(1, len(lab))]
    out["common_pairs"] = sum(p in common for p in pairs) / len(pairs) if pairs else 0.0
    if complete and pos + 2 <= len(body):
        qtype = struct.unpack("!H", body[pos : pos + 2])[0]
        out[QTYPE_COLUMN.get(qtype, "qtype_other")] = 1.0
    else:
        out["qtype_hidden"] = 1.0
    return out


def kernel(prefixes: list[bytes | None], protos: list[int]) -> np.ndarray:
    return qname_features_from_arrow(pa.array(prefixes, pa.binary()), np.array(protos, np.int8))


def query(name: str, qtype: str = "A", proto: int = UDP, cut: int = 64) -> bytes:
    wire = dns.message.make_query(name, qtype).to_wire()
    return (struct.pack("!H", len(wire)) + wire if proto == TCP else wire)[:cut]


label_bytes = st.binary(min_size=1, max_size=63)
names = st.lists(label_bytes, min_size=0, max_size=8).filter(lambda ls: sum(len(x) + 1 for x in ls) < 254)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(labels=names, qtype=st.integers(0, 65535), proto=st.sampled_from([UDP, TCP]), cut=st.integers(0, 80))
def test_kernel_matches_reference_on_real_names(labels: list[bytes], qtype: int, proto: int, cut: int) -> None:
    msg = dns.message.Message()
    msg.question.append(dns.rrset.RRset(dns.name.Name([*labels, b""]), 1, qtype))
    wire = msg.to_wire()
    prefix = (struct.pack("!H", len(wire)) + wire if proto == TCP else wire)[:cut]
    got = kernel([prefix], [proto])[0]
    want = reference(prefix, proto)
    np.testing.assert_allclose(got, [want[f] for f in QNAME_FEATURES], atol=1e-5, err_msg=repr(prefix))


@settings(max_examples=300, deadline=None)
@given(prefix=st.one_of(st.none(), st.binary(max_size=70)), proto=st.sampled_from([UDP, TCP, 0]))
def test_kernel_matches_reference_on_any_bytes(prefix: bytes | None, proto: int) -> None:
    got = kernel([prefix], [proto])[0]
    want = reference(prefix, proto)
    np.testing.assert_allclose(got, [want[f] for f in QNAME_FEATURES], atol=1e-5, err_msg=repr(prefix))
    assert ((got >= 0) & (got <= 1)).all()


def test_sliced_and_null_arrays_read_the_right_rows() -> None:
    rows = [query("www.example.com"), None, query("a" * 40 + ".t.example.org", "TXT"), b"", query("x.io", "MX")]
    arr = pa.array(rows, pa.binary())
    whole = qname_features_from_arrow(arr, np.full(5, UDP, np.int8))
    part = qname_features_from_arrow(arr.slice(1, 3), np.full(3, UDP, np.int8))
    np.testing.assert_array_equal(part, whole[1:4])
    assert whole[1, F["visible"]] == 0 and whole[3, F["visible"]] == 0


def test_tcp_length_prefix_is_skipped() -> None:
    udp = kernel([query("mail.example.com", proto=UDP)], [UDP])
    tcp = kernel([query("mail.example.com", proto=TCP)], [TCP])
    np.testing.assert_array_equal(udp, tcp)


def test_keys_ignore_id_case_and_trailing_records_but_not_the_name_or_type() -> None:
    a = dns.message.make_query("WWW.Example.com", "A", use_edns=0)
    b = dns.message.make_query("www.example.COM", "A", use_edns=None)
    b.id = (a.id + 1) % 65536
    others = [query("www.example.net"), query("www.example.com", "AAAA"), query("www.example.co")]
    arr = pa.array([a.to_wire(), b.to_wire(), *others], pa.binary())
    buf = binary_buffers(arr)
    keys = question_keys(buf.offsets, buf.data, buf.validity, buf.bit_offset, np.full(5, UDP, np.int8))
    assert keys[0] == keys[1]
    assert len(set(keys.tolist())) == 4
    feats = qname_features_from_arrow(arr, np.full(5, UDP, np.int8))
    np.testing.assert_array_equal(feats[0], feats[1])  # what the key promises


@settings(max_examples=200, deadline=None)
@given(labels=names.filter(lambda ls: len(ls) > 0), proto=st.sampled_from([UDP, TCP]))
def test_rendering_reads_back_as_the_same_name(labels: list[bytes], proto: int) -> None:
    name = dns.name.Name([*labels, b""])
    msg = dns.message.Message()
    msg.question.append(dns.rrset.RRset(name, 1, 16))
    wire = msg.to_wire()
    prefix = struct.pack("!H", len(wire)) + wire if proto == TCP else wire
    text, complete, qtype = render_qname(prefix, proto)
    assert complete and qtype == 16
    assert dns.name.from_text(text).labels == name.labels  # dnspython parses the escapes back to the bytes
    assert text.isascii() and text.isprintable() and " " not in text


def test_rendering_of_cut_and_compressed_names() -> None:
    cut = query("abcdefghij" * 5 + ".example.com")
    text, complete, qtype = render_qname(cut, UDP)
    assert not complete and qtype is None and text.startswith("abcdefghij") and not text.endswith(".")
    pointer = bytes(12) + b"\x03www\xc0\x0c\x00\x01\x00\x01"
    text, complete, _ = render_qname(pointer, UDP)
    assert text.startswith("www.") and "pointer" in text and not complete
    assert render_qname(bytes(12), UDP) == (None, False, None)
    assert render_qname(None, UDP) == (None, False, None)


def test_model_inputs_light_exactly_one_bin_per_binned_feature() -> None:
    rows = [query(n) for n in ("a.b", "www.example.com", "x" * 60 + ".t.example.org", "4.3.2.1.in-addr.arpa")]
    feats = kernel(rows, [UDP] * 4)
    x = model_inputs(feats)
    assert x.shape == (4, N_QNAME_INPUTS)
    flags = [f for f in QNAME_FEATURES if f not in BIN_EDGES]
    np.testing.assert_array_equal(x[:, : len(flags)], feats[:, [F[f] for f in flags]])
    assert (x[:, len(flags) :].sum(1) == len(BIN_EDGES)).all()
    # A 60-character first label lands in the top length bin; 'a' in the second.
    before = [f for f in QNAME_FEATURES if f in BIN_EDGES and F[f] < F["first_label"]]
    first = len(flags) + sum(len(BIN_EDGES[f]) + 1 for f in before)
    width = len(BIN_EDGES["first_label"]) + 1
    assert x[2, first : first + width].argmax() == width - 1
    assert x[0, first : first + width].argmax() == 1


@pytest.mark.parametrize("target", [1e-3, 1e-4, 1e-5])
def test_pot_threshold_finds_the_tail_quantile_of_a_known_distribution(target: float) -> None:
    rng = np.random.default_rng(3)
    scale = 0.02
    losses = rng.exponential(scale, 200_000)
    truth = -scale * math.log(target)  # the exponential's own quantile, not an estimate
    got = pot_threshold(losses, target)
    assert abs(got - truth) / truth < 0.05
    th = calibrate(losses[:5000], target, "pot")
    assert th.method == "pot" and abs(th.value - truth) / truth < 0.25

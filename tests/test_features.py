"""The numba feature kernels against a plain-Python reference, on hand-made and generated prefixes."""

from __future__ import annotations

import struct

import dns.message
import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from portprint.udfs.features import (
    MISSING,
    binary_buffers,
    dedup_possible,
    feature_names,
    features_from_arrow,
    headers_from_arrow,
    pattern_keys,
)


def reference_features(prefix: bytes | None, proto: int, orig_bytes: int, width: int, mask_id: bool) -> list[float]:
    """Plain-Python statement of the feature layout, written from the documentation, not the kernel."""
    data = b"" if prefix is None else prefix
    msg = data[2:] if proto == 6 else data
    bits: list[float] = []
    for b in range(width):
        if b < len(msg):
            bits += [0.0] * 8 if (mask_id and b < 2) else [float((msg[b] >> (7 - k)) & 1) for k in range(8)]
        else:
            bits += [MISSING] * 8
    if prefix is None:
        ok = 0.0
    elif proto == 6:
        if len(data) < 2:
            ok = 0.0
        else:
            length = int.from_bytes(data[:2], "big")
            ok = float(length >= 12 and not (orig_bytes >= len(data) and length + 2 > orig_bytes))
    else:
        ok = float(len(data) >= 12)
    return [*bits, 1.0 if proto == 6 else 0.0, ok]


prefixes = st.one_of(st.none(), st.binary(min_size=0, max_size=40))
rows = st.lists(st.tuples(prefixes, st.sampled_from([6, 17]), st.integers(-1, 400)), min_size=1, max_size=30)


@settings(max_examples=200, deadline=None)
@given(rows=rows, width=st.integers(1, 14), mask_id=st.booleans(), slice_start=st.integers(0, 3),
       large=st.booleans())
def test_kernel_matches_reference(rows, width, mask_id, slice_start, large):
    arr = pa.array([r[0] for r in rows], type=pa.large_binary() if large else pa.binary())
    # A sliced array has a non-zero offset into its buffers: the kernel must honour it.
    start = min(slice_start, len(rows) - 1)
    arr, sub = arr.slice(start), rows[start:]
    proto = np.array([r[1] for r in sub], dtype=np.int8)
    orig = np.array([r[2] for r in sub], dtype=np.int64)
    got = features_from_arrow(arr, proto, orig, width, mask_id)
    want = np.array([reference_features(p, pr, o, width, mask_id) for p, pr, o in sub], dtype=np.float32)
    np.testing.assert_array_equal(got, want)
    assert got.shape[1] == len(feature_names(width))


@settings(max_examples=150, deadline=None)
@given(rows=rows, width=st.integers(1, 8), mask_id=st.booleans())
def test_pattern_keys_equal_iff_features_equal(rows, width, mask_id):
    if not dedup_possible(width, mask_id):
        return
    arr = pa.array([r[0] for r in rows], type=pa.binary())
    proto = np.array([r[1] for r in rows], dtype=np.int8)
    orig = np.array([r[2] for r in rows], dtype=np.int64)
    buf = binary_buffers(arr)
    keys = pattern_keys(buf.offsets, buf.data, buf.validity, buf.bit_offset, proto, orig, width, mask_id)
    feats = features_from_arrow(arr, proto, orig, width, mask_id)
    for i in range(len(rows)):
        for j in range(len(rows)):
            assert (keys[i] == keys[j]) == bool(np.array_equal(feats[i], feats[j]))


def test_tcp_length_prefix_is_skipped_not_taken_for_the_header():
    wire = dns.message.make_query("example.com", "A", id=0xBEEF).to_wire()
    udp = features_from_arrow(pa.array([wire]), np.array([17], np.int8), np.array([len(wire)]), 8, False)
    framed = struct.pack("!H", len(wire)) + wire
    tcp = features_from_arrow(pa.array([framed]), np.array([6], np.int8), np.array([len(framed)]), 8, False)
    np.testing.assert_array_equal(udp[0, :64], tcp[0, :64])  # same message bits once LEN is skipped
    assert tcp[0, -2:].tolist() == [1.0, 1.0] and udp[0, -2:].tolist() == [0.0, 1.0]


def test_tcp_length_larger_than_bytes_sent_is_implausible():
    banner = b"SSH-2.0-OpenSSH_9.6\r\n"  # "SS" read as a DNS length is 21331
    f = features_from_arrow(pa.array([banner]), np.array([6], np.int8), np.array([2000]), 8, True)
    assert f[0, -1] == 0.0


def test_decoded_header_matches_dnspython():
    msg = dns.message.make_query("www.example.org", "AAAA", want_dnssec=True, id=4242)
    wire = msg.to_wire()
    framed = struct.pack("!H", len(wire)) + wire
    hdr = headers_from_arrow(pa.array([wire, framed, None, b"\x01"]), np.array([17, 6, 17, 17], np.int8))
    parsed = dns.message.from_wire(wire)
    expected = [parsed.id, parsed.flags | (parsed.opcode() << 11), 1, 0, 0, 1]
    assert hdr[0, :6].tolist() == expected
    assert hdr[1, :6].tolist() == expected and hdr[1, 6] == len(wire)
    assert hdr[2].tolist() == [-1] * 7 and hdr[3].tolist() == [-1] * 7


def test_string_prefix_is_refused_with_a_hint():
    with pytest.raises(TypeError, match="prefix_encoding: hex"):
        binary_buffers(pa.array(["abcd"]))

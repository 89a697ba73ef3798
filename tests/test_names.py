"""The name kernels (udfs/names.py) against their plain-Python reference, queries encoded by dnspython and random
bytes, and the registered domain against tldextract's own split."""

from __future__ import annotations

import struct

import dns.message
import dns.name
import numpy as np
import pyarrow as pa
import pytest
import tldextract
from hypothesis import given, settings
from hypothesis import strategies as st

from portprint.udfs import names

UDP, TCP = 17, 6


def wire(name: str, qtype: str = "A", proto: int = UDP) -> bytes:
    """The stored 64-byte prefix of a query for ``name`` (dnspython encodes it)."""
    msg = dns.message.make_query(dns.name.from_text(name), qtype).to_wire()
    return ((struct.pack("!H", len(msg)) + msg) if proto == TCP else msg)[:64]


def kernel_rows(prefixes: list[bytes | None], protos: list[int]) -> list[dict | None]:
    """The kernels' facts per flow, as the reference's dicts (None: no name a tunnel could use)."""
    got = names.describe(pa.array(prefixes, pa.binary()), np.array(protos, np.int8))
    fields = ("qtype", "complete", "zone", "data_bytes", "token", "token_alpha", "strange", "wordy", "tag",
              "counted")
    out = []
    for i in range(len(prefixes)):
        if got.key[i] == 0:
            out.append(None)
            continue
        row = {f: getattr(got, f)[i] for f in fields}
        out.append({k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()})
    return out


label = st.one_of(st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCXYZ0123456789-_+/=", min_size=1, max_size=30),
                  st.text(alphabet="0123456789", min_size=1, max_size=8),  # counters and numeric ids
                  st.text(alphabet="0123456789abcdef", min_size=14, max_size=40))  # hex data tokens
tail = st.sampled_from(["com", "co.uk", "ck", "www.ck", "kawasaki.jp", "city.kawasaki.jp", "test", "xn--p1ai",
                        "k12.ma.us", "cluster.local", "in-addr.arpa", "ip6.arpa", "sophosxl.net"])


@settings(max_examples=200, deadline=None)
@given(st.lists(label, min_size=0, max_size=6), tail, st.sampled_from(["A", "AAAA", "TXT", "NULL", "MX", "PTR"]),
       st.sampled_from([UDP, TCP]))
def test_the_kernels_agree_with_the_reference_on_queries(labels, suffix, qtype, proto):
    name = ".".join([*labels, suffix]) + "."
    try:
        prefix = wire(name, qtype, proto)
    except (dns.name.LabelTooLong, dns.name.NameTooLong, dns.name.EmptyLabel):
        return
    assert kernel_rows([prefix], [proto]) == [names.describe_py(prefix, proto)]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(min_size=0, max_size=70), min_size=1, max_size=20), st.integers(0, 1))
def test_the_kernels_agree_with_the_reference_on_any_bytes(blobs, tcp):
    proto = TCP if tcp else UDP
    # Start some of them as a query header so the bytes after it are read as a name.
    prefixes = [(b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00" + b) if i % 2 else b for i, b in enumerate(blobs)]
    assert kernel_rows([*prefixes, None], [proto] * (len(prefixes) + 1)) == [
        *[names.describe_py(p, proto) for p in prefixes], None]


def test_one_name_one_key_whatever_its_record_type_case_and_framing():
    variants = [(n, q, p) for n in ("www.example.com.", "WWW.Example.COM.") for q in ("A", "AAAA", "TXT")
                for p in (UDP, TCP)]
    got = names.describe(pa.array([wire(*v) for v in variants], pa.binary()), np.array([v[2] for v in variants],
                                                                                        np.int8))
    assert len(set(got.key.tolist())) == 1 and got.key[0] != 0
    other = names.describe(pa.array([wire("mail.example.com.")], pa.binary()), np.array([UDP], np.int8))
    assert other.key[0] != got.key[0]
    assert got.qtype.reshape(2, 3, 2)[0, :, 0].tolist() == [1, 28, 16]


@pytest.mark.parametrize("name", ["a.b.example.co.uk", "4.3.2.1.in-addr.arpa", "d1234abcd.cloudfront.net",
                                  "x.zen.spamhaus.org", "a.b.www.ck", "q.city.kawasaki.jp", "r.s.kawasaki.jp",
                                  "m.n.k12.ma.us", "api.xn--p1ai"])
def test_registered_domain_is_tldextracts_split(name):
    r = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None, include_psl_private_domains=False)(name)
    assert names.registered_domain(name) == f"{r.domain}.{r.suffix}"


@pytest.mark.parametrize("name, zone", [("host275.example.test", "example.test"),  # suffix unknown to the list
                                        ("api.ns.svc.cluster.local", "cluster.local")])
def test_a_suffix_the_list_does_not_know_gives_the_last_two_labels(name, zone):
    assert names.registered_domain(name) == zone


def test_what_a_tunnel_name_shows_and_what_a_host_name_shows():
    rows = kernel_rows([wire("AAAAAO1kQA.=auth.srv.tunnel.com.", "TXT"), wire("a" * 63 + ".x.t.example.net.", "NULL"),
                        wire("cache-" + "ab12" * 12 + ".edge.example.com."),
                        wire("garden-north-hospital.summer-report.example.com."),
                        wire("f27337b7.18.b.telemetrysvc.net.", "TXT"), wire("example.com.")], [UDP] * 6)
    dns2tcp, iodine, cache, words, beacon, short = rows
    assert dns2tcp["zone"] == "tunnel.com" and dns2tcp["strange"] and dns2tcp["data_bytes"] == 10 + 5 + 3
    assert not iodine["complete"] and iodine["token"] == 63 and iodine["zone"] == ""  # the domain is past the prefix
    assert cache["token"] == 48 and cache["token_alpha"] == names.HEX  # "cache-" is a word before a hash
    assert words["wordy"] and words["tag"] == 0
    assert beacon["tag"] != 0 and beacon["tag"] == kernel_rows([wire("f27337b7.19.b.telemetrysvc.net.")], [UDP])[0][
        "tag"]  # the session id, not the counter
    assert short is None  # two labels: a TLD's servers answer it


@pytest.mark.parametrize("name, counted", [
    ("77650a7374616e6420726561647920746f2065.12.p.example.net.", True),   # hex fragment, then its index
    ("12.ebdg64raorugkidqovzha33tm.x.example.com.", True),                # index, then a base32 fragment
    ("e5dnmfyhazlsbjzxk3tsobrqsc.26.7fe1.s.example.org.", True),
    ("0.0.0.0.1.0.0.4e.5a73whfsesp4pkd2h43pgmimww.avqs.mcafee.com.", False),  # digits, but none beside the hash
    ("2ca77ea7167a97a8a9371c72c4e5fe1a.p.02.sxl.sophosxl.net.", False),
    ("138.143.163.82.zen.spamhaus.org.", False),                          # octets with no data token
    ("internationalization.12.example.com.", False),                      # a word is no data token
    ("77650a7374616e6420726561647920746f2065.123456.p.example.net.", False),  # six digits: no counter
])
def test_a_data_token_beside_a_counter_label_is_a_numbered_fragment(name, counted):
    assert kernel_rows([wire(name)], [UDP])[0]["counted"] is counted


def test_a_session_id_of_digits_only_is_a_tag_when_no_mixed_id_is_there():
    one, two, mixed, short = kernel_rows([wire("91060439.1.c.updcheck.org.", "TXT"), wire("91060439.2.c.updcheck.org."),
                                          wire("f27337b7.91060439.c.updcheck.org."), wire("12345.3.c.example.org.")],
                                         [UDP] * 4)
    assert one["tag"] != 0 and one["tag"] == two["tag"]  # the id, not the counter
    assert mixed["tag"] == kernel_rows([wire("f27337b7.1.c.updcheck.org.")], [UDP])[0]["tag"]  # a mixed id first
    assert short["tag"] == 0  # five digits: a counter, a port, an octet, never an id

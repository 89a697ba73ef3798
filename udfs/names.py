"""numba kernels: what a flow's query name shows a tunnel detector, per flow, from the stored prefix.

Called by udfs/evidence.py (per Spark task in Detect, and in Escalate's per-flow step) and by the tests
against the plain-Python reference ``describe_py``. Per flow it reads the question the prefix shows and gives:

- ``key``: a 64-bit FNV-1a hash of the case-folded visible name (labels and root label), *without* the
  record type, so an A and an AAAA lookup of one name are one name and 0x20 case changes nothing;
- ``zone``: for a complete name, its registered domain (the label below its ICANN public suffix, from the Public
  Suffix List snapshot that ``tldextract`` ships, never fetched; where the list knows no suffix, as for
  ``.test`` or ``cluster.local``, the last two labels). A name cut off by the prefix shows no domain;
- site-independent facts about the labels left of the registered domain (all labels of a cut-off name), the
  part a tunnel fills with data: their declared bytes; their longest *token* (a run of bytes between '-' or
  '_' separators, so "cache-<40 hex>" is a word and a 40-byte hash, not one 46-byte label; a label cut off by
  the prefix is taken to run on unbroken to its declared length) and its alphabet; characters no host name uses;
  whether they read as words (frequent English letter pairs); the record type.

Two passes: ``_parse`` walks each name once (key, record type, the last labels' span); the registered domain of
each distinct tail of at most five labels is found with tldextract in Python (a batch has far fewer zones than
flows, and a public suffix has at most four labels); ``_facts`` then reads the data labels.
"""

from __future__ import annotations

import functools
import itertools
import re
from typing import NamedTuple

import numba as nb
import numpy as np
import pyarrow as pa

from portprint.udfs.features import TCP, _is_valid, _message_start, binary_buffers
from portprint.udfs.qname import _PAIR

HEADER_LEN = 12
MAX_LABEL = 63
MIN_LABELS = 3  # a complete name of one or two labels is answered by the root's or a TLD's servers
TAIL_LABELS = 5  # the public suffix has at most four labels (ICANN section), the registered domain one more

# Alphabet of a label's visible bytes, case-folded (resolvers randomise case, 0x20).
ALPHABETS = ("none", "digits", "hex", "alnum", "host", "base64", "binary")
NONE, DIGITS, HEX, ALNUM, HOST, BASE64, BINARY = range(len(ALPHABETS))
WORDY_SHARE = 0.45  # words have ~60-80% frequent letter pairs; random base32/hex/base64 letters ~20%
TAG_MIN = 4  # a session id: four bytes of letters and digits or more ('7fe1', 'f27337b7'); shorter ones recur by chance
TAG_DIGITS = 6  # a session id of digits only: a random 8-hex id is all digits once in 43 ('91060439'), a date 8
COUNTER_MAX = 5  # a counter label: 1 to 5 digits (a fragment index; an IPv4 octet or a version is one too)
COUNTED_DATA = 16  # a data token a counter numbers: 16 bytes or more of letters and digits mixed (hex, base32)
WORDY_MIN_PAIRS = 8  # fewer letter pairs (a hex label, a short name) say nothing either way

# Byte classes (after case folding): bit 0 a-f, 1 g-z, 2 digit, 3 '-', 4 '_', 5 '+/=', 6 anything else.
_CLS = np.full(256, 64, dtype=np.uint8)
for _c in range(ord("a"), ord("f") + 1):
    _CLS[_c] = 1
for _c in range(ord("g"), ord("z") + 1):
    _CLS[_c] = 2
for _c in range(ord("0"), ord("9") + 1):
    _CLS[_c] = 4
_CLS[ord("-")] = 8
_CLS[ord("_")] = 16
for _c in b"+/=":
    _CLS[_c] = 32
_FOLD = np.arange(256, dtype=np.uint8)
_FOLD[ord("A"): ord("Z") + 1] += 32
_LETTER = np.zeros(256, dtype=np.bool_)
_LETTER[ord("a"): ord("z") + 1] = True
_FNV_OFFSET = np.uint64(14695981039346656037)
_FNV_PRIME = np.uint64(1099511628211)


@nb.njit(cache=True, nogil=True, inline="always")
def _token_hash(data, fold, a, b):
    """32-bit FNV-1a of the case-folded bytes data[a:b], never 0 (0 means no tag)."""
    h = np.uint32(2166136261)
    for t in range(a, b):
        h = (h ^ np.uint32(fold[data[t]])) * np.uint32(16777619)
    return h if h != 0 else np.uint32(1)


@nb.njit(cache=True, nogil=True, inline="always")
def _alphabet(mask: int) -> int:
    if mask == 0:
        return 0  # none
    if mask == 4:
        return 1  # digits
    if mask & ~5 == 0:
        return 2  # hex
    if mask & ~7 == 0:
        return 3  # alnum
    if mask & ~31 == 0:
        return 4  # host ('-', '_')
    if mask & ~63 == 0:
        return 5  # base64 ('+', '/', '=')
    return 6  # binary


@nb.njit(cache=True, nogil=True)
def _parse(offsets, data, validity, bit_offset, proto, fold):
    """Per flow: name key (0: no name a tunnel could use), record type (-1: not visible), complete, labels,
    and the byte span [tail_start, tail_end) of the last TAIL_LABELS labels of a complete name."""
    n = offsets.shape[0] - 1
    keys = np.zeros(n, dtype=np.uint64)
    qtypes = np.full(n, -1, dtype=np.int32)
    complete = np.zeros(n, dtype=np.bool_)
    labels = np.zeros(n, dtype=np.int32)
    tail_start = np.zeros(n, dtype=np.int64)
    tail_end = np.zeros(n, dtype=np.int64)
    starts = np.zeros(64, dtype=np.int64)
    for i in range(n):
        start = offsets[i]
        stop = offsets[i + 1] if _is_valid(validity, bit_offset, i) else start
        q = start + _message_start(proto[i]) + HEADER_LEN
        pos = q
        k = 0
        done = False
        bad = False
        while pos < stop:
            length = np.int64(data[pos])
            if length == 0:
                done = True
                if pos + 3 <= stop:
                    qtypes[i] = (np.int32(data[pos + 1]) << 8) | np.int32(data[pos + 2])
                break
            if length > MAX_LABEL:
                bad = True  # a compression pointer or reserved label type where a query's name must be plain
                break
            if k < 64:
                starts[k] = pos
            k += 1
            pos += 1 + length
        if bad or k == 0 or (done and k < MIN_LABELS):
            qtypes[i] = -1
            continue
        end = pos + 1 if done else stop  # the root label is part of a complete name's key
        h = (_FNV_OFFSET ^ np.uint64(end - q + 1)) * _FNV_PRIME
        for j in range(q, end):
            h = (h ^ np.uint64(fold[data[j]])) * _FNV_PRIME
        keys[i] = h if h != 0 else np.uint64(1)
        complete[i] = done
        labels[i] = k
        if done:
            t = k - TAIL_LABELS if k > TAIL_LABELS else 0
            tail_start[i] = starts[t] - start
            tail_end[i] = pos - start
    return keys, qtypes, complete, labels, tail_start, tail_end


@nb.njit(cache=True, nogil=True)
def _facts(offsets, data, validity, bit_offset, proto, keys, complete, labels, zone_labels, cls, fold, letter,
           pair, wordy_share, wordy_min_pairs, tag_min, tag_digits, counter_max, counted_data):
    """Per flow with a name: facts of its data labels (all but the registered domain's ``zone_labels``)."""
    n = offsets.shape[0] - 1
    data_bytes = np.zeros(n, dtype=np.int32)
    token = np.zeros(n, dtype=np.int32)
    token_alpha = np.zeros(n, dtype=np.int8)
    strange = np.zeros(n, dtype=np.bool_)
    wordy = np.zeros(n, dtype=np.bool_)
    tag = np.zeros(n, dtype=np.uint32)
    counted = np.zeros(n, dtype=np.bool_)
    for i in range(n):
        if keys[i] == 0:
            continue
        tag_len = 1 << 30
        dtag = np.uint32(0)
        dtag_len = 1 << 30
        prev_kind = 0  # the previous data label: 0 other, 1 a counter, 2 holds a data token
        start = offsets[i]
        stop = offsets[i + 1] if _is_valid(validity, bit_offset, i) else start
        pos = start + _message_start(proto[i]) + HEADER_LEN
        n_data = labels[i] - zone_labels[i] if complete[i] else labels[i]
        best = -1
        pairs = 0
        common = 0
        for j in range(labels[i]):
            length = np.int64(data[pos])
            a = pos + 1
            b = min(pos + 1 + length, stop)
            if j < n_data:
                data_bytes[i] += length
                run = 0
                run_mask = 0
                label_mask = 0
                has_data = False
                prev = -1  # the previous byte, folded (-1: a label boundary)
                for m in range(a, b + 1):
                    c = fold[data[m]] if m < b else 0
                    if m == b or c == 45 or c == 95:  # the label's end, '-' or '_': a token ends
                        whole = not (m == b and b < pos + 1 + length)
                        # The shortest whole token that mixes letters and digits (an id, not a word) is the tag.
                        if (whole and tag_min <= run < tag_len and run_mask & 4 and run_mask & 3
                                and run_mask & ~7 == 0):
                            tag_len = run
                            tag[i] = _token_hash(data, fold, m - run, m)
                        if whole and tag_digits <= run < dtag_len and run_mask == 4:
                            dtag_len = run
                            dtag = _token_hash(data, fold, m - run, m)
                        if not whole:
                            run += pos + 1 + length - b  # cut off: taken to run on to the declared end
                        if run >= counted_data and run_mask & 4 and run_mask & 3 and run_mask & ~7 == 0:
                            has_data = True
                        if run > best:
                            best = run
                            token_alpha[i] = _alphabet(run_mask)
                        run = 0
                        run_mask = 0
                    else:
                        run += 1
                        run_mask |= cls[c]
                        if cls[c] & 96:  # '+/=' or a byte outside the host-name alphabet
                            strange[i] = True
                    if m < b:
                        label_mask |= cls[c]
                        if prev >= 0 and letter[prev] and letter[c]:
                            pairs += 1
                            if pair[prev, c]:
                                common += 1
                        prev = c
                counter = b == pos + 1 + length and 1 <= length <= counter_max and label_mask == 4
                kind = 1 if counter else (2 if has_data else 0)
                if (kind == 1 and prev_kind == 2) or (kind == 2 and prev_kind == 1):
                    counted[i] = True
                prev_kind = kind
            pos += 1 + length
        if tag[i] == 0:
            tag[i] = dtag
        token[i] = max(best, 0)
        wordy[i] = pairs >= wordy_min_pairs and common >= wordy_share * pairs
    return data_bytes, token, token_alpha, strange, wordy, tag, counted


@functools.lru_cache(maxsize=1)
def _psl():
    import tldextract  # the Public Suffix List snapshot tldextract ships: no URLs, no cache folder, never fetched

    return tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None, include_psl_private_domains=False)


@functools.lru_cache(maxsize=1 << 17)
def registered_domain(name: str) -> str:
    """The registered domain of a lower-case dotted name (no trailing dot): the label below its ICANN public
    suffix, or the last two labels where the list knows no suffix (``.test``, ``cluster.local``) or the name is
    itself a public suffix."""
    r = _psl()(name)
    if r.suffix and r.domain:
        return f"{r.domain}.{r.suffix}"
    return ".".join([x for x in name.split(".") if x][-2:])


# A label's bytes as text for the suffix lookup: case-folded, and every byte outside letters, digits, '-' and '_'
# as '_'. No public suffix label has such a byte (IDN suffixes are matched in their xn-- form), and tldextract
# parses its input as a URL, where '/', ':', '@' or '.' inside a label would move the boundaries.
_TEXT = bytes(c if (0x61 <= c <= 0x7A or 0x30 <= c <= 0x39 or c in b"-_") else ord("_")
              for c in bytes(_FOLD.tolist()))


def label_text(label: bytes) -> str:
    return label.translate(_TEXT).decode("ascii")


def _tail_text(raw: bytes) -> str:
    """Wire labels (a complete name's tail, root label excluded) as a dotted name for the suffix lookup."""
    out, pos = [], 0
    while pos < len(raw) and raw[pos]:
        out.append(label_text(raw[pos + 1: pos + 1 + raw[pos]]))
        pos += 1 + raw[pos]
    return ".".join(out)


class Names(NamedTuple):
    """Per flow (numpy arrays of one batch). ``key`` 0: no name a tunnel could use (none visible, a pointer
    where a plain name must be, or complete with fewer than three labels); the other fields are then 0."""

    key: np.ndarray          # uint64
    qtype: np.ndarray        # int32, -1 where the prefix cuts the record type off
    complete: np.ndarray     # bool
    zone: np.ndarray         # object: registered domain of a complete name, "" otherwise
    data_bytes: np.ndarray   # int32: declared bytes of the labels left of the registered domain (cut off: all)
    token: np.ndarray        # int32: the longest token of those labels (bytes between '-'/'_' separators)
    token_alpha: np.ndarray  # int8: ALPHABETS index of that token's visible bytes
    strange: np.ndarray      # bool: a data byte no host name uses ('+/=', binary, ...), underscore aside
    wordy: np.ndarray        # bool: the data labels read as words (frequent English letter pairs)
    tag: np.ndarray          # uint32: FNV-1a of the shortest whole data token mixing letters and digits, of at
    #                          least TAG_MIN bytes (a session or client id), else of the shortest whole token of
    #                          TAG_DIGITS digits or more; 0 where there is none
    counted: np.ndarray      # bool: a data label holding a COUNTED_DATA-byte token sits next to a counter label
    #                          (1 to COUNTER_MAX digits): a fragment numbered for reassembly


def describe(prefix: pa.Array | pa.ChunkedArray, proto: np.ndarray) -> Names:
    """The name facts of each flow of a batch (see the module docstring)."""
    buf = binary_buffers(prefix)
    p = np.ascontiguousarray(proto, dtype=np.int8)
    keys, qtypes, complete, labels, t0, t1 = _parse(buf.offsets, buf.data, buf.validity, buf.bit_offset, p, _FOLD)
    n = len(keys)
    zone = np.full(n, "", dtype=object)
    zone_labels = np.zeros(n, dtype=np.int32)
    rows = np.flatnonzero(complete)
    if len(rows):
        base = buf.offsets[rows]
        tails = [buf.data[a:b].tobytes() for a, b in zip((base + t0[rows]).tolist(), (base + t1[rows]).tolist(),
                                                         strict=True)]
        # One lookup per distinct tail (a batch has few zones), as tldextract's text.
        uniq: dict[bytes, tuple[str, int]] = {}
        for j, raw in enumerate(tails):
            hit = uniq.get(raw)
            if hit is None:
                z = registered_domain(_tail_text(raw))
                hit = uniq[raw] = (z, z.count(".") + 1 if z else 0)
            zone[rows[j]], zone_labels[rows[j]] = hit
    facts = _facts(buf.offsets, buf.data, buf.validity, buf.bit_offset, p, keys, complete, labels, zone_labels, _CLS,
                   _FOLD, _LETTER, _PAIR, WORDY_SHARE, WORDY_MIN_PAIRS, TAG_MIN, TAG_DIGITS, COUNTER_MAX,
                   COUNTED_DATA)
    return Names(keys, qtypes, complete, zone, *facts)


# ---- the plain-Python reference (tests): one prefix at a time, no numba --------------------------------------

_HOSTCHARS = frozenset(b"abcdefghijklmnopqrstuvwxyz0123456789-")
_HEXCHARS = frozenset(b"0123456789abcdef")
_DIGITCHARS = frozenset(b"0123456789")
_B64CHARS = frozenset(b"abcdefghijklmnopqrstuvwxyz0123456789+/=-_")


def alphabet_py(label: bytes) -> int:
    s = set(label.lower())
    if not s:
        return NONE
    if s <= _DIGITCHARS:
        return DIGITS
    if s <= _HEXCHARS:
        return HEX
    if s <= _HOSTCHARS - {ord("-")}:
        return ALNUM
    if s <= _HOSTCHARS | {ord("_")}:
        return HOST
    if s <= _B64CHARS:
        return BASE64
    return BINARY


def describe_py(prefix: bytes | None, proto: int) -> dict | None:
    """One flow's name facts, written plainly (the reference the kernels are tested against); None when the
    flow has no name a tunnel could use."""
    if not prefix:
        return None
    q = (2 if proto == TCP else 0) + HEADER_LEN
    labels: list[tuple[int, bytes]] = []
    pos, complete, qtype = q, False, -1
    while pos < len(prefix):
        length = prefix[pos]
        if length == 0:
            complete = True
            if pos + 3 <= len(prefix):
                qtype = (prefix[pos + 1] << 8) | prefix[pos + 2]
            break
        if length > MAX_LABEL:
            return None
        labels.append((length, bytes(prefix[pos + 1: pos + 1 + length]).lower()))
        pos += 1 + length
    if not labels or (complete and len(labels) < MIN_LABELS):
        return None
    zone = registered_domain(".".join(label_text(v) for _, v in labels)) if complete else ""
    data = labels[: len(labels) - (zone.count(".") + 1)] if complete else labels
    tokens: list[tuple[int, bytes]] = []
    ids: list[bytes] = []  # whole tokens of letters and digits mixed, of TAG_MIN bytes or more
    numbers: list[bytes] = []  # whole tokens of TAG_DIGITS digits or more
    kinds: list[str] = []  # per data label: "counter", "data" (a COUNTED_DATA-byte token of letters and digits) or ""
    for n, v in data:
        parts = v.replace(b"_", b"-").split(b"-")
        has_data = False
        for k, part in enumerate(parts):
            extra = n - len(v) if k == len(parts) - 1 else 0  # a cut-off label runs on to its declared end
            tokens.append((len(part) + extra, part))
            mixed = bool(re.fullmatch(rb"[a-z0-9]+", part) and re.search(rb"[0-9]", part)
                         and re.search(rb"[a-z]", part))
            if extra == 0 and len(part) >= TAG_MIN and mixed:
                ids.append(part)
            if extra == 0 and len(part) >= TAG_DIGITS and part.isdigit():
                numbers.append(part)
            has_data |= mixed and len(part) + extra >= COUNTED_DATA
        counter = len(v) == n and 1 <= n <= COUNTER_MAX and v.isdigit()
        kinds.append("counter" if counter else "data" if has_data else "")
    counted = any({a, b} == {"counter", "data"} for a, b in itertools.pairwise(kinds))
    # The tag: the shortest id (the first of the shortest), else the shortest number.
    chosen = min(ids, key=len) if ids else min(numbers, key=len) if numbers else b""
    tag = 0
    if chosen:
        h = 2166136261
        for c in chosen:
            h = ((h ^ c) * 16777619) % (1 << 32)
        tag = h or 1
    longest = max(tokens, key=lambda t: t[0]) if tokens else (0, b"")
    pairs = common = 0
    for _, v in data:
        for a, b in itertools.pairwise(v):
            if 97 <= a <= 122 and 97 <= b <= 122:
                pairs += 1
                common += bool(_PAIR[a, b])
    return {"qtype": qtype, "complete": complete, "zone": zone,
            "data_bytes": sum(n for n, _ in data), "token": longest[0], "token_alpha": alphabet_py(longest[1]),
            "strange": any(b not in _HOSTCHARS and b != ord("_") for _, v in data for b in v),
            "wordy": pairs >= WORDY_MIN_PAIRS and common >= WORDY_SHARE * pairs, "tag": tag,
            "counted": counted}

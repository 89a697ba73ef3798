"""numba kernels for the question section: what the stored prefix shows of the QNAME, as features.

A DNS tunnel is valid DNS in its header, so neither the header rule nor the 8-byte model sees it.
Its data is in the query name, which follows the header inside the stored prefix (12 bytes in on UDP,
14 on TCP): long labels of base32/base64/base128 or hex, a high character entropy, odd record types.
These kernels read that name straight from the Arrow buffers, like ``features.py``, and stay safe on
any bytes: a name cut off by the prefix, compression pointers, label lengths past the end, binary junk.

Features are case-folded throughout: resolvers randomise the case of names they forward (0x20
encoding, draft-vixie-dnsext-dns0x20), so case says nothing about who asked.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np
import pyarrow as pa

from portprint.udfs.features import TCP, _is_valid, _message_start, binary_buffers

QNAME_VERSION = "qname-v2"
HEADER_LEN = 12
MAX_LABEL = 63  # RFC 1035 2.3.4: longer "lengths" are compression pointers or reserved label types
# Record types by the role they play on a site; the rest (NULL, PRIVATE, ANY, ...) share one column.
QTYPE_GROUPS = (
    ("A", (1,)), ("AAAA", (28,)), ("PTR", (12,)), ("TXT", (16,)), ("MX", (15,)), ("SRV", (33,)),
    ("infra", (2, 5, 6, 43, 48, 52, 257)),  # NS CNAME SOA DS DNSKEY TLSA CAA
    ("HTTPS", (64, 65)),  # SVCB HTTPS
)
QNAME_FEATURES = (
    "visible",          # at least one question byte is in the prefix
    "complete",         # the name's terminating root label is in the prefix
    "malformed",        # a compression pointer or reserved label type where a query's name must be plain
    "labels",           # labels seen, /16 (capped)
    "name_chars",       # name characters seen, /64
    "max_label",        # longest label seen, /63
    "first_label",      # first label's length, /63
    "long_label_share",  # share of the name's characters in labels of 16 or more
    "letters", "digits", "hyphen", "underscore", "other_printable", "binary",  # shares of the characters
    "entropy_longest",  # Shannon entropy of the longest label's characters, bits/char /6
    "entropy_name",     # the same over all the name's characters
    "letter_digit_switches",  # letter<->digit changes per character
    "vowel_share",      # vowels among letters: words have ~40%, random base32 ~19%
    "consonant_run",    # longest run of consonants, /16 (capped)
    "hex_longest",      # the longest label (>= 8 chars) is hex digits only
    "common_pairs",     # share of adjacent letter pairs that are frequent in English (words, not encodings)
    "qtype_hidden",     # the record type is past the end of the prefix
    *[f"qtype_{g}" for g, _ in QTYPE_GROUPS],
    "qtype_other",
)
N_QNAME_FEATURES = len(QNAME_FEATURES)

# The model sees each continuous feature one-hot in fixed bins (in the feature's natural unit), as the
# header model sees bits. An autoencoder reconstructs a continuous value it never saw by extrapolating
# along what it learned ("longer and more random" reconstructs fine); a bin it never saw lit, it cannot.
_CHARS = (1, 2, 3, 5, 8, 12, 16, 20, 24, 28, 32, 36, 40, 44, 48, 52, 56, 60)
_SHARE = (0.001, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.999)
_BITS = (0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.25, 3.5, 3.75, 4.0, 4.25, 4.5, 4.75, 5.0, 5.5)
BIN_EDGES: dict[str, tuple[float, ...]] = {
    "labels": tuple(k / 16 for k in (1, 2, 3, 4, 5, 6, 8, 10, 12, 16)),
    "name_chars": tuple(c / 64 for c in _CHARS),
    "max_label": tuple(c / 63 for c in _CHARS),
    "first_label": tuple(c / 63 for c in _CHARS),
    "long_label_share": _SHARE,
    **{k: _SHARE for k in ("letters", "digits", "hyphen", "underscore", "other_printable", "binary")},
    "entropy_longest": tuple(b / 6 for b in _BITS),
    "entropy_name": tuple(b / 6 for b in _BITS),
    "letter_digit_switches": (0.001, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4),
    "vowel_share": (0.001, 0.1, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5, 0.6),
    "consonant_run": tuple(k / 16 for k in (1, 2, 3, 4, 5, 6, 8, 10, 12, 16)),
    "common_pairs": _SHARE,
}

_GROUP_OF = np.full(65536, len(QTYPE_GROUPS), dtype=np.int8)
for _g, (_name, _types) in enumerate(QTYPE_GROUPS):
    for _t in _types:
        _GROUP_OF[_t] = _g
_FIRST_QTYPE_COL = QNAME_FEATURES.index("qtype_hidden") + 1

# Character classes of a case-folded byte: 0 letter, 1 digit, 2 hyphen, 3 underscore, 4 other printable,
# 5 binary (control bytes and >= 0x80, as base128 tunnels use).
_CLASS = np.full(256, 5, dtype=np.int8)
_CLASS[0x21:0x7F] = 4
_CLASS[ord("a") : ord("z") + 1] = 0
_CLASS[ord("A") : ord("Z") + 1] = 0
_CLASS[ord("0") : ord("9") + 1] = 1
_CLASS[ord("-")] = 2
_CLASS[ord("_")] = 3
_FOLD = np.arange(256, dtype=np.uint8)
_FOLD[ord("A") : ord("Z") + 1] += 32
_VOWEL = np.zeros(256, dtype=np.bool_)
for _c in "aeiouyAEIOUY":
    _VOWEL[ord(_c)] = True
# 147 of the most frequent letter pairs of English (after Norvig's Google Books counts, "English Letter Frequency
# Counts: Mayzner Revisited"). Names built from words are mostly made of them; base32, base64 and hex
# data rarely are (a random letter pair is in this set with probability 147/676).
_COMMON_PAIRS = tuple(" ".join((
    "th he in er an re on at en nd ti es or te of ed is it al ar st to nt ng se ha as ou io le ve co me de hi",
    "ri ro ic ne ea ra ce li ch ll be ma si om ur ca el ta la ns di fo ho pe ec pr no ct us ac ot il tr ly nc",
    "et ut ss so rs un lo wa ge ie wh ee wi em ad ol rt po we na ul ni ts mo ow pa im mi ai sh ir su id os iv",
    "ia am fi ci vi pl ig tu ev ld ry mp fe bl ab gh ty op wo sa ay ex ke fr oo av ag if ap gr od bo sp rd do",
    "uc bu ei ov by rm ep",
)).split())
_PAIR = np.zeros((256, 256), dtype=np.bool_)
for _p in _COMMON_PAIRS:
    for _a in (_p[0], _p[0].upper()):
        for _b in (_p[1], _p[1].upper()):
            _PAIR[ord(_a), ord(_b)] = True
_HEX = np.zeros(256, dtype=np.bool_)
for _c in "0123456789abcdefABCDEF":
    _HEX[ord(_c)] = True


@nb.njit(cache=True, nogil=True, inline="always")
def _question_start(start: int, proto: int) -> int:
    return start + _message_start(proto) + HEADER_LEN


@nb.njit(cache=True, nogil=True)
def _entropy_and_clear(counts: np.ndarray, symbols: np.ndarray, n_symbols: int, total: int) -> float:
    """Shannon entropy (bits/char) of the counted symbols; resets just the counters it used."""
    h = 0.0
    for j in range(n_symbols):
        c = counts[symbols[j]]
        if c > 0 and total > 1:
            p = c / total
            h -= p * math.log2(p)
        counts[symbols[j]] = 0
    return h


@nb.njit(cache=True, nogil=True)
def _row_features(data: np.ndarray, q: int, stop: int, out: np.ndarray, cls: np.ndarray, fold: np.ndarray,
                  vowel: np.ndarray, hexd: np.ndarray, group_of: np.ndarray, first_qtype_col: int,
                  counts: np.ndarray, label_counts: np.ndarray, symbols: np.ndarray,
                  label_symbols: np.ndarray, pair: np.ndarray) -> None:
    """Fill one row of question features from data[q:stop] (the bytes after the DNS header)."""
    out[:] = 0.0
    if q >= stop:
        out[first_qtype_col - 1] = 1.0  # nothing visible: the type is hidden too
        return
    out[0] = 1.0
    n_symbols = 0
    cls_n = np.zeros(6, dtype=np.int64)
    pos = q
    labels = 0
    chars = 0
    long_chars = 0
    max_label = 0
    first_label = -1
    complete = False
    malformed = False
    switches = 0
    prev_kind = -1  # 0 letter, 1 digit
    letters = 0
    vowels = 0
    run = 0
    max_run = 0
    best_entropy = 0.0
    best_len = -1
    best_hex = False
    pairs = 0
    common = 0
    while pos < stop:
        length = np.int64(data[pos])
        if length == 0:
            complete = True
            pos += 1
            break
        if length > MAX_LABEL:
            malformed = True  # a pointer (0xC0) or reserved type: a query's first name is never compressed
            break
        begin = pos + 1
        end = min(begin + length, stop)
        seen = end - begin
        labels += 1
        if first_label < 0:
            first_label = length
        n_label_symbols = 0
        all_hex = True
        for k in range(begin, end):
            b = data[k]
            if k > begin:
                pairs += 1
                if pair[data[k - 1], b]:
                    common += 1
            c = cls[b]
            cls_n[c] += 1
            f = fold[b]
            if counts[f] == 0:
                symbols[n_symbols] = f
                n_symbols += 1
            counts[f] += 1
            if label_counts[f] == 0:
                label_symbols[n_label_symbols] = f
                n_label_symbols += 1
            label_counts[f] += 1
            if not hexd[b]:
                all_hex = False
            kind = 0 if c == 0 else (1 if c == 1 else -1)
            if kind >= 0 and prev_kind >= 0 and kind != prev_kind:
                switches += 1
            prev_kind = kind
            if c == 0:
                letters += 1
                if vowel[b]:
                    vowels += 1
                    run = 0
                else:
                    run += 1
                    if run > max_run:
                        max_run = run
            else:
                run = 0
        prev_kind = -1
        run = 0
        chars += seen
        if length >= 16:
            long_chars += seen
        # The label as far as it is visible counts: a tunnel's 63-byte label is usually cut off.
        label_entropy = _entropy_and_clear(label_counts, label_symbols, n_label_symbols, seen)
        if seen > best_len:
            best_len = seen
            best_entropy = label_entropy
            best_hex = all_hex and seen >= 8
        if length > max_label:
            max_label = length
        pos = begin + length
    out[1] = 1.0 if complete else 0.0
    out[2] = 1.0 if malformed else 0.0
    out[3] = min(labels, 16) / 16.0
    out[4] = min(chars, 64) / 64.0
    out[5] = min(max_label, MAX_LABEL) / 63.0
    out[6] = max(first_label, 0) / 63.0
    if chars > 0:
        out[7] = long_chars / chars
        for c in range(6):
            out[8 + c] = cls_n[c] / chars
    out[15] = _entropy_and_clear(counts, symbols, n_symbols, chars) / 6.0
    if chars > 0:
        out[16] = switches / chars
    out[14] = best_entropy / 6.0
    out[17] = vowels / letters if letters > 0 else 0.0
    out[18] = min(max_run, 16) / 16.0
    out[19] = 1.0 if best_hex else 0.0
    out[20] = common / pairs if pairs > 0 else 0.0
    if complete and pos + 2 <= stop:
        qtype = (np.int64(data[pos]) << 8) | np.int64(data[pos + 1])
        out[first_qtype_col + group_of[qtype]] = 1.0
    else:
        out[first_qtype_col - 1] = 1.0


@nb.njit(cache=True, nogil=True)
def _question_features(offsets: np.ndarray, data: np.ndarray, validity: np.ndarray, bit_offset: int,
                       proto: np.ndarray, n_features: int, cls: np.ndarray, fold: np.ndarray, vowel: np.ndarray,
                       hexd: np.ndarray, group_of: np.ndarray, first_qtype_col: int, rows: np.ndarray,
                       pair: np.ndarray) -> np.ndarray:
    out = np.zeros((rows.shape[0], n_features), dtype=np.float32)
    counts = np.zeros(256, dtype=np.int64)
    label_counts = np.zeros(256, dtype=np.int64)
    symbols = np.zeros(256, dtype=np.int64)
    label_symbols = np.zeros(256, dtype=np.int64)
    for r in range(rows.shape[0]):
        i = rows[r]
        start = offsets[i]
        stop = offsets[i + 1] if _is_valid(validity, bit_offset, i) else start
        _row_features(data, _question_start(start, proto[i]), stop, out[r], cls, fold, vowel, hexd, group_of,
                      first_qtype_col, counts, label_counts, symbols, label_symbols, pair)
    return out


def question_features(offsets: np.ndarray, data: np.ndarray, validity: np.ndarray, bit_offset: int,
                      proto: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """Question-section features, float32 [len(rows), N_QNAME_FEATURES] in [0, 1] (see QNAME_FEATURES),
    for the given rows (default: all), so a batch computes them once per distinct name."""
    if rows is None:
        rows = np.arange(offsets.shape[0] - 1, dtype=np.int64)
    return _question_features(offsets, data, validity, bit_offset, proto, N_QNAME_FEATURES, _CLASS, _FOLD,
                              _VOWEL, _HEX, _GROUP_OF, _FIRST_QTYPE_COL, np.ascontiguousarray(rows, np.int64), _PAIR)


@nb.njit(cache=True, nogil=True)
def _question_keys(offsets: np.ndarray, data: np.ndarray, validity: np.ndarray, bit_offset: int,
                   proto: np.ndarray, fold: np.ndarray) -> np.ndarray:
    n = offsets.shape[0] - 1
    keys = np.empty(n, dtype=np.uint64)
    prime = np.uint64(1099511628211)
    for i in range(n):
        start = offsets[i]
        stop = offsets[i + 1] if _is_valid(validity, bit_offset, i) else start
        q = _question_start(start, proto[i])
        h = np.uint64(14695981039346656037)
        # Walk the name as the features do and hash only what they read: the name, then its type.
        # The bytes after it (class, EDNS options, cookies) vary per query and change no feature.
        pos = q
        end = stop
        while pos < stop:
            length = np.int64(data[pos])
            if length == 0:
                end = min(pos + 3, stop)
                break
            if length > MAX_LABEL:
                end = pos + 1
                break
            pos += 1 + length
        end = min(end, stop)
        h = (h ^ np.uint64(max(end - q, 0) + 1)) * prime  # the visible length is part of the key
        for k in range(q, end):
            h = (h ^ np.uint64(fold[data[k]])) * prime
        keys[i] = h
    return keys


def question_keys(offsets: np.ndarray, data: np.ndarray, validity: np.ndarray, bit_offset: int,
                  proto: np.ndarray) -> np.ndarray:
    """A 64-bit FNV-1a hash per row of what ``question_features`` reads (case-folded), to score each
    distinct name once per batch. Exact equality would need a sort of up to 52-byte keys per row; a
    64-bit hash collides with probability ~n^2/2^65 (1e-10 for a 65,536-row batch)."""
    return _question_keys(offsets, data, validity, bit_offset, proto, _FOLD)


def _binning() -> tuple[list[int], list[np.ndarray], list[int]]:
    binned, edges, flags = [], [], []
    for j, name in enumerate(QNAME_FEATURES):
        if name in BIN_EDGES:
            binned.append(j)
            edges.append(np.asarray(BIN_EDGES[name], dtype=np.float32))
        else:
            flags.append(j)  # already 0/1: visible, complete, malformed, hex_longest, the qtype columns
    return binned, edges, flags


_BINNED, _EDGES, _FLAGS = _binning()
N_QNAME_INPUTS = len(_FLAGS) + sum(len(e) + 1 for e in _EDGES)


def model_inputs(feats: np.ndarray) -> np.ndarray:
    """The question model's input: the 0/1 features as they are, each other feature one-hot in its bins
    (float32 [n, N_QNAME_INPUTS])."""
    n = feats.shape[0]
    out = np.zeros((n, N_QNAME_INPUTS), dtype=np.float32)
    out[:, : len(_FLAGS)] = feats[:, _FLAGS]
    col = len(_FLAGS)
    rows = np.arange(n)
    for j, e in zip(_BINNED, _EDGES, strict=True):
        # A small tolerance so a value computed as exactly an edge (e.g. 16/16) falls in that edge's bin.
        out[rows, col + np.searchsorted(e, feats[:, j] + 1e-6, side="right")] = 1.0
        col += len(e) + 1
    return out


def input_owner() -> list[str]:
    """For each model input, the feature it encodes (to name what failed to reconstruct)."""
    names = [QNAME_FEATURES[j] for j in _FLAGS]
    for j, e in zip(_BINNED, _EDGES, strict=True):
        names += [QNAME_FEATURES[j]] * (len(e) + 1)
    return names


MIN_TUNNEL_LABELS = 3  # data, a domain someone registered, its TLD


def judged(feats: np.ndarray) -> np.ndarray:
    """Which names the question model judges (rows of ``question_features``): a name byte is visible,
    and the name can reach a zone below a TLD. A complete name of one or two labels ('io.',
    'xn--wgbh1c.com.') is answered by the root's or a TLD's servers, which no tunnel operator runs: a
    tunnel through resolvers needs its own delegated zone, so its names have three labels or more. A
    name cut off by the prefix is judged (its end is unknown)."""
    visible, complete = feats[:, 0] > 0.5, feats[:, 1] > 0.5
    labels = np.rint(feats[:, QNAME_FEATURES.index("labels")] * 16)
    return visible & (~complete | (labels >= MIN_TUNNEL_LABELS))


def qname_features_from_arrow(prefix: pa.Array, proto: np.ndarray) -> np.ndarray:
    """Convenience wrapper: question features for an Arrow binary array."""
    buf = binary_buffers(prefix)
    return question_features(buf.offsets, buf.data, buf.validity, buf.bit_offset,
                             np.ascontiguousarray(proto, dtype=np.int8))


# ---- rendering for analysts: the name is attacker-controlled, so it is escaped, never trusted ----

_SAFE = {c for c in range(0x21, 0x7F)} - {ord("."), ord("\\"), ord('"'), ord("'"), ord(";"), ord("(")} - {
    ord(")"), ord("$"), ord("@"), ord("<"), ord(">"), ord("`")}


def _escape(label: bytes) -> str:
    # RFC 1035 5.1 presentation format: \DDD for bytes that are not safe to print as they are.
    return "".join(chr(b) if b in _SAFE else f"\\{b:03d}" for b in label)


def render_qname(prefix: bytes | None, proto: int) -> tuple[str | None, bool, int | None]:
    """(name in presentation format, complete, qtype) from a stored prefix, or (None, False, None).

    Written by hand rather than with dnspython's ``dns.name.from_wire`` because prefixes cut names
    off, which a wire parser rejects; an analyst still needs to read the part that is there.
    """
    if prefix is None:
        return None, False, None
    q = (2 if proto == TCP else 0) + HEADER_LEN
    if len(prefix) <= q:
        return None, False, None
    labels: list[str] = []
    pos, complete, qtype = q, False, None
    while pos < len(prefix):
        length = prefix[pos]
        if length == 0:
            complete = True
            pos += 1
            break
        if length > MAX_LABEL:
            labels.append(f"\\[pointer {length:#04x}]")
            break
        part = prefix[pos + 1 : pos + 1 + length]
        if part:  # a label cut off by the prefix shows what is there; nothing at all adds nothing
            labels.append(_escape(part))
        pos += 1 + length
    if complete and pos + 2 <= len(prefix):
        qtype = (prefix[pos] << 8) | prefix[pos + 1]
    text = ".".join(labels) + ("." if complete else "")
    return text or ".", complete, qtype

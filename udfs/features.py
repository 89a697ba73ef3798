"""numba kernels that turn stored payload prefixes into features, straight from Arrow buffers.

Every kernel here is a pure function of numpy views of an Arrow binary array (offsets, data,
validity bitmap) plus plain arrays, so it is tested without Spark and runs unchanged inside a
Spark Python worker, in the benchmark's plain pass, and on the driver for training.
"""

from __future__ import annotations

from typing import NamedTuple

import numba as nb
import numpy as np
import pyarrow as pa

FEATURE_VERSION = "bits-v1"
MISSING = -1.0  # nPrint's fill for absent bytes: distinct from both bit values
TCP = 6
UDP = 17
EXTRA_FEATURES = 2  # is_tcp, len_ok
HEADER_FIELDS = ("id", "flags", "qdcount", "ancount", "nscount", "arcount", "tcp_len")


class BinaryBuffers(NamedTuple):
    """Zero-copy numpy views of an Arrow binary array."""

    offsets: np.ndarray  # int32 or int64, length n + 1, already shifted by the array's offset
    data: np.ndarray  # uint8
    validity: np.ndarray  # uint8 bitmap, or an empty array when every value is valid
    bit_offset: int  # where the array starts inside the validity bitmap


def binary_buffers(arr: pa.Array | pa.ChunkedArray) -> BinaryBuffers:
    """Expose the buffers of a binary/large_binary Arrow array without copying the data."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if not (pa.types.is_binary(arr.type) or pa.types.is_large_binary(arr.type)):
        raise TypeError(
            f"payload prefix must be binary (or hex text decoded to binary first), got Arrow type {arr.type}; "
            "set archive.prefix_encoding: hex in conf if the archive stores hex strings"
        )
    validity_buf, offsets_buf, data_buf = arr.buffers()[:3]
    offset_type = np.int64 if pa.types.is_large_binary(arr.type) else np.int32
    offsets = np.frombuffer(offsets_buf, dtype=offset_type)[arr.offset : arr.offset + len(arr) + 1]
    data = np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None else np.zeros(0, np.uint8)
    if validity_buf is None or arr.null_count == 0:
        validity = np.zeros(0, np.uint8)
    else:
        validity = np.frombuffer(validity_buf, dtype=np.uint8)
    return BinaryBuffers(offsets, data, validity, arr.offset)


@nb.njit(cache=True, nogil=True, inline="always")
def _is_valid(validity: np.ndarray, bit_offset: int, i: int) -> bool:
    if validity.shape[0] == 0:
        return True
    j = bit_offset + i
    return (validity[j >> 3] >> (j & 7)) & 1 == 1


@nb.njit(cache=True, nogil=True, inline="always")
def _message_start(proto: int) -> int:
    # TCP carries DNS behind a 2-byte length (RFC 1035 4.2.2, RFC 7766): skip it so byte 0 is the ID.
    return 2 if proto == TCP else 0


@nb.njit(cache=True, nogil=True)
def _len_ok(data: np.ndarray, start: int, stop: int, proto: int, orig_bytes: int) -> float:
    """Is the framing plausible for a DNS message? TCP: the 2-byte length; UDP: a 12-byte header fits."""
    n = stop - start
    if proto == TCP:
        if n < 2:
            return 0.0
        length = (np.int64(data[start]) << 8) | np.int64(data[start + 1])
        if length < 12:
            return 0.0
        # The stream holds at least this message, so the length cannot exceed what was sent.
        if orig_bytes >= n and length + 2 > orig_bytes:
            return 0.0
        return 1.0
    return 1.0 if n >= 12 else 0.0


@nb.njit(cache=True, nogil=True)
def encode_features(offsets: np.ndarray, data: np.ndarray, validity: np.ndarray, bit_offset: int,
                    proto: np.ndarray, orig_bytes: np.ndarray, width: int, mask_id: bool) -> np.ndarray:
    """Return float32 features [n, width*8 + 2]: message bits (MSB first), then is_tcp and len_ok.

    Bytes past the end of the prefix, and every byte of a null prefix, are MISSING (-1).
    With mask_id the two ID bytes are written as 0: the ID is random, so it is not an input.
    """
    n = offsets.shape[0] - 1
    nbits = width * 8
    out = np.empty((n, nbits + EXTRA_FEATURES), dtype=np.float32)
    for i in range(n):
        p = proto[i]
        valid = _is_valid(validity, bit_offset, i)
        start = offsets[i]
        stop = offsets[i + 1] if valid else start
        msg = start + _message_start(p)
        for b in range(width):
            pos = msg + b
            if pos < stop:
                if mask_id and b < 2:
                    for k in range(8):
                        out[i, b * 8 + k] = 0.0
                else:
                    v = data[pos]
                    for k in range(8):
                        out[i, b * 8 + k] = np.float32((v >> (7 - k)) & 1)
            else:
                for k in range(8):
                    out[i, b * 8 + k] = MISSING
        out[i, nbits] = 1.0 if p == TCP else 0.0
        out[i, nbits + 1] = _len_ok(data, start, stop, p, orig_bytes[i]) if valid else 0.0
    return out


@nb.njit(cache=True, nogil=True)
def pattern_keys(offsets: np.ndarray, data: np.ndarray, validity: np.ndarray, bit_offset: int,
                 proto: np.ndarray, orig_bytes: np.ndarray, width: int, mask_id: bool) -> np.ndarray:
    """An exact uint64 key per row such that equal keys mean equal feature rows.

    Each byte takes 9 bits (256 values + missing), a masked ID 2 bits (how many of its bytes are
    present), the facts 2 bits. Used to score each distinct pattern once per batch; exact only while
    that fits in 64 bits (see ``dedup_possible``).
    """
    n = offsets.shape[0] - 1
    keys = np.empty(n, dtype=np.uint64)
    first = min(2, width) if mask_id else 0
    for i in range(n):
        p = proto[i]
        valid = _is_valid(validity, bit_offset, i)
        start = offsets[i]
        stop = offsets[i + 1] if valid else start
        msg = start + _message_start(p)
        # Masked ID bytes are 0 when present and MISSING when not: their presence is part of the key.
        key = np.uint64(min(max(stop - msg, 0), first)) if mask_id else np.uint64(0)
        for b in range(first, width):
            pos = msg + b
            v = np.uint64(data[pos]) if pos < stop else np.uint64(256)
            key = (key << np.uint64(9)) | v
        key = (key << np.uint64(1)) | np.uint64(1 if p == TCP else 0)
        ok = _len_ok(data, start, stop, p, orig_bytes[i]) if valid else 0.0
        key = (key << np.uint64(1)) | np.uint64(1 if ok > 0.5 else 0)
        keys[i] = key
    return keys


def dedup_possible(width: int, mask_id: bool) -> bool:
    """True when ``pattern_keys`` is exact for this feature layout."""
    return (9 * max(width - 2, 0) + 4 if mask_id else 9 * width + 2) <= 64


@nb.njit(cache=True, nogil=True)
def decode_headers(offsets: np.ndarray, data: np.ndarray, validity: np.ndarray, bit_offset: int,
                   proto: np.ndarray) -> np.ndarray:
    """Decode the DNS header fields present in each prefix: int32 [n, 7], -1 where a field is absent.

    Columns follow HEADER_FIELDS: id, flags, qdcount, ancount, nscount, arcount, tcp_len.
    """
    n = offsets.shape[0] - 1
    out = np.full((n, 7), -1, dtype=np.int32)
    for i in range(n):
        if not _is_valid(validity, bit_offset, i):
            continue
        start = offsets[i]
        stop = offsets[i + 1]
        p = proto[i]
        if p == TCP and stop - start >= 2:
            out[i, 6] = (np.int32(data[start]) << 8) | np.int32(data[start + 1])
        msg = start + _message_start(p)
        for f in range(6):
            pos = msg + 2 * f
            if pos + 1 < stop:
                out[i, f] = (np.int32(data[pos]) << 8) | np.int32(data[pos + 1])
    return out


def features_from_arrow(prefix: pa.Array, proto: np.ndarray, orig_bytes: np.ndarray, width: int,
                        mask_id: bool) -> np.ndarray:
    """Convenience wrapper: features for an Arrow binary array."""
    buf = binary_buffers(prefix)
    return encode_features(buf.offsets, buf.data, buf.validity, buf.bit_offset,
                           np.ascontiguousarray(proto, dtype=np.int8),
                           np.ascontiguousarray(orig_bytes, dtype=np.int64), width, mask_id)


def headers_from_arrow(prefix: pa.Array, proto: np.ndarray) -> np.ndarray:
    """Convenience wrapper: decoded header fields for an Arrow binary array."""
    buf = binary_buffers(prefix)
    return decode_headers(buf.offsets, buf.data, buf.validity, buf.bit_offset,
                          np.ascontiguousarray(proto, dtype=np.int8))


def feature_names(width: int) -> list[str]:
    """Human names of the feature columns, for explanations."""
    return [f"byte{b}.bit{k}" for b in range(width) for k in range(8)] + ["is_tcp", "len_ok"]

"""A DNS header-validity rule of the kind Suricata's DNS probe and Zeek's DNS analyzer apply.

It states what a rule can state, so the model does not have to rediscover it: a DNS message has a
12-byte header, an assigned opcode, a question when it is a query, record counts that fit in the
message, and on TCP a 2-byte length that matches what was sent. Real-world quirks that are still
DNS pass: the Z bit (``dig +zflag``) and RFC 7873 cookie refreshes (no question, one OPT record).
"""

from __future__ import annotations

import numba as nb
import numpy as np
import pyarrow as pa

from portprint.udfs.features import TCP, _is_valid, binary_buffers

# Index = reason code returned by the kernel. "ok" means the header is plausible DNS.
REASONS = (
    "ok",
    "empty",          # no payload stored: nothing to judge (TCP handshake only, or null)
    "short",          # fewer bytes than a 12-byte DNS header although the message ended
    "tcp_length",     # the TCP length prefix is below 12 or larger than the bytes sent
    "opcode",         # opcode not assigned (RFC 6895: 0 QUERY, 1 IQUERY, 2 STATUS, 4 NOTIFY, 5 UPDATE, 6 DSO)
    "rcode",          # a query with a non-zero rcode
    "no_question",    # a standard query without a question (cookie refreshes excepted)
    "qdcount",        # more than 25 questions (Zeek's limit)
    "counts",         # the record counts cannot fit in the message size
)
ASSIGNED_OPCODES = (0, 1, 2, 4, 5, 6)
MAX_PREFIX = 64  # the archive contract stores at most 64 bytes per direction


@nb.njit(cache=True, nogil=True)
def header_reasons(offsets: np.ndarray, data: np.ndarray, validity: np.ndarray, bit_offset: int,
                   proto: np.ndarray, orig_bytes: np.ndarray, prefix_len: np.ndarray) -> np.ndarray:
    """Return a uint8 reason code per flow (index into REASONS); 0 means the header looks like DNS.

    ``prefix_len`` is the stored prefix's full length (the kernel may be given a truncated copy);
    ``orig_bytes`` is the initiator's payload byte count, negative when unknown.
    """
    n = offsets.shape[0] - 1
    out = np.zeros(n, dtype=np.uint8)
    for i in range(n):
        if not _is_valid(validity, bit_offset, i):
            out[i] = 1
            continue
        start = offsets[i]
        stop = offsets[i + 1]
        have = stop - start
        stored = prefix_len[i]
        if stored <= 0 or have <= 0:
            out[i] = 1
            continue
        sent = orig_bytes[i]
        msg = start
        if proto[i] == TCP:
            if have < 2:
                out[i] = 2
                continue
            length = (np.int64(data[start]) << 8) | np.int64(data[start + 1])
            if length < 12 or (sent >= stored and length + 2 > sent):
                out[i] = 3
                continue
            msg_len = length
            msg = start + 2
        else:
            # A UDP prefix shorter than the cap is the whole first datagram.
            msg_len = stored if stored < MAX_PREFIX else max(sent, stored)
            if msg_len < 12:
                out[i] = 2
                continue
        # A header cut off by the stored prefix (e.g. Arkime's 8 bytes) is judged on what is there.
        if stop - msg < 4:
            continue
        flags = (np.int64(data[msg + 2]) << 8) | np.int64(data[msg + 3])
        qr = flags >> 15
        opcode = (flags >> 11) & 0xF
        rcode = flags & 0xF
        assigned = False
        for op in ASSIGNED_OPCODES:
            if opcode == op:
                assigned = True
        if not assigned:
            out[i] = 4
            continue
        if qr == 0 and rcode != 0:
            out[i] = 5
            continue
        if stop - msg < 6:
            continue
        qd = (np.int64(data[msg + 4]) << 8) | np.int64(data[msg + 5])
        if qd > 25:
            out[i] = 7
            continue
        if stop - msg < 12:
            continue
        an = (np.int64(data[msg + 6]) << 8) | np.int64(data[msg + 7])
        ns = (np.int64(data[msg + 8]) << 8) | np.int64(data[msg + 9])
        ar = (np.int64(data[msg + 10]) << 8) | np.int64(data[msg + 11])
        if qr == 0 and opcode == 0 and qd == 0 and not (an == 0 and ns == 0 and ar == 1):
            out[i] = 6
            continue
        # Smallest encodings: a question is 5 bytes (root name, type, class), a record 11.
        if 12 + 5 * qd + 11 * (an + ns + ar) > msg_len:
            out[i] = 8
            continue
    return out


def reasons_from_arrow(prefix: pa.Array, proto: np.ndarray, orig_bytes: np.ndarray,
                       prefix_len: np.ndarray | None = None) -> np.ndarray:
    """Convenience wrapper over an Arrow binary array; prefix_len defaults to the stored lengths."""
    buf = binary_buffers(prefix)
    if prefix_len is None:
        prefix_len = np.diff(buf.offsets).astype(np.int32)
    return header_reasons(buf.offsets, buf.data, buf.validity, buf.bit_offset,
                          np.ascontiguousarray(proto, dtype=np.int8),
                          np.ascontiguousarray(orig_bytes, dtype=np.int64),
                          np.ascontiguousarray(prefix_len, dtype=np.int32))

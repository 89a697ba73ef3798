"""Legal DNS header variants a site may not have sent yet, so the model learns DNS, not one week of clients.

A week of traffic holds a handful of flag combinations. A new client (``dig`` with AD set and RD clear
for an AXFR), a resolver's own iterative queries, NOTIFY, UPDATE or a cookie refresh are still DNS.
These headers are written from RFC 1035/2136/1996/6891/7873/8490 and encoded by the same kernel
as real traffic, in UDP and TCP framing.
"""

from __future__ import annotations

import itertools
import struct

import numpy as np
import pyarrow as pa

from portprint.udfs.features import TCP, UDP, features_from_arrow

# Flag bits (RFC 1035 4.1.1, RFC 4035 for AD/CD): QR(15) OPCODE(11-14) AA(10) TC(9) RD(8) RA(7) Z(6) AD(5) CD(4)
QR, AA, TC, RD, RA, Z, AD, CD = 1 << 15, 1 << 10, 1 << 9, 1 << 8, 1 << 7, 1 << 6, 1 << 5, 1 << 4
QUERY, NOTIFY, UPDATE = 0, 4, 5


def _flag_sets(bits: list[int]) -> list[int]:
    return [sum(c) for n in range(len(bits) + 1) for c in itertools.combinations(bits, n)]


def legal_headers() -> list[tuple[int, int, int, int, int]]:
    """(flags, qdcount, ancount, nscount, arcount) of legal client-side messages and responses."""
    out = []
    # Queries: any mix of RD, AD, CD, and the Z bit some clients set; with or without an OPT record.
    for f in _flag_sets([RD, AD, CD, Z]):
        for ar in (0, 1):
            out.append((f | (QUERY << 11), 1, 0, 0, ar))
    out.append((RD | (QUERY << 11), 0, 0, 0, 1))  # RFC 7873 cookie refresh: no question, one OPT
    out.append((QUERY << 11, 0, 0, 0, 1))
    # NOTIFY (RFC 1996): AA set, the SOA question, optionally the new SOA as an answer.
    for f, an in itertools.product((AA, 0), (0, 1)):
        out.append((f | (NOTIFY << 11), 1, an, 0, 0))
    # UPDATE (RFC 2136): zone count 1, prerequisites (ancount), updates (nscount), additional (TSIG/OPT).
    for pr, up, ar in itertools.product(range(3), range(1, 5), (0, 1)):
        out.append((UPDATE << 11, 1, pr, up, ar))
    # Responses, seen when port 53 is the initiator's source port or in resolver-to-resolver flows.
    for f in _flag_sets([AA, TC, RD, RA, AD, CD]):
        for rcode in (0, 1, 2, 3, 4, 5, 9):
            for an in (0, 1, 2, 4):
                out.append((QR | f | rcode, 1, an, 0, 1))
    return out


def augmented_features(width: int, mask_id: bool) -> np.ndarray:
    """Feature rows of every legal header in UDP and TCP framing (ID 0: it is random anyway)."""
    wires, protos, sizes = [], [], []
    question = b"\x07example\x03com\x00\x00\x01\x00\x01"
    for flags, qd, an, ns, ar in legal_headers():
        msg = struct.pack("!6H", 0, flags, qd, an, ns, ar) + question * min(qd, 1)
        msg += b"\x00" * (11 * (an + ns + ar))  # room for the records the counts announce
        for proto in (UDP, TCP):
            wire = struct.pack("!H", len(msg)) + msg if proto == TCP else msg
            wires.append(wire[:64])
            protos.append(proto)
            sizes.append(len(wire))
    return features_from_arrow(pa.array(wires, pa.binary()), np.array(protos, np.int8), np.array(sizes, np.int64),
                               width, mask_id)

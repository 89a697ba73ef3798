"""`portprint sample`: a synthetic flow archive of realistic port-53 traffic with labelled non-DNS flows.

Used by jobs/cli.py, the demo and the tests. Genuine DNS is in jobs/sample/dns.py, other protocols in
jobs/sample/protocols.py, tunnels in jobs/sample/tunnels.py, and the rows (shares, timing, the mess of real
archives) in jobs/sample/archive.py. The archive follows the flow contract
(Hive-partitioned Parquet, one row per flow, payload prefixes of up to 64 bytes) and a side file
``_labels.parquet`` says what every flow really is.

Speed comes from encoding a pool of a few thousand distinct messages once (dnspython for DNS,
Python's ``ssl`` for TLS, hand-built SSH/HTTP/OpenVPN/NTP/QUIC) and then building each row with
numpy: pick a template, patch the per-flow random fields (DNS IDs, TLS randoms, session ids,
timestamps) and slice the first 64 bytes. Everything derives from the seed; nothing reads the
clock, so a rerun writes identical files.
"""

from __future__ import annotations

import datetime as _dt
import os
import shutil
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from portprint.jobs.sample.archive import _check, _day_start_us, _generate, _pool_for
from portprint.jobs.sample.templates import (
    _CHUNK_ROWS,
    FLOW_SCHEMA,
    LABEL_SCHEMA,
    LABELS,
    NON_DNS_LABELS,
    PREFIX_LEN,
    TUNNEL_LABELS,
)

__all__ = [
    "FLOW_SCHEMA",
    "LABELS",
    "LABEL_SCHEMA",
    "NON_DNS_LABELS",
    "PREFIX_LEN",
    "TUNNEL_LABELS",
    "SampleSummary",
    "sample_table",
    "write_sample",
]




@dataclass(frozen=True)
class SampleSummary:
    """What ``write_sample`` wrote."""

    out: str  # archive root
    dates: list[str]  # YYYY-MM-DD written
    flows: int  # total rows written
    labels_path: str  # where the labels file went
    label_counts: dict[str, int]




def sample_table(n: int, day: str, rng: np.random.Generator, *, non_dns_fraction: float = 0.005,
                 chaos: bool = True) -> tuple[pa.Table, pa.Table]:
    """Return (flows, labels) for one day, without writing.

    ``flows`` has the contract columns (plus ``sensor`` when ``chaos``), without ``date``;
    ``labels`` has ``flow_id``, ``label`` and ``date``. Rows are in time order.
    """
    _check(n, non_dns_fraction)
    _day_start_us(day)  # validate early
    pool = _pool_for((int(rng.integers(2**63)),))
    return _generate(pool, n, day, rng, first=0, u_lo=0.0, u_hi=1.0, non_dns_fraction=non_dns_fraction,
                     chaos=chaos)


def write_sample(out: str, *, days: int = 3, flows_per_day: int = 20000, seed: int = 7,
                 start: str = "2026-11-01", non_dns_fraction: float = 0.005,
                 chaos: bool = True) -> SampleSummary:
    """Write ``days`` partitions ``out/date=YYYY-MM-DD/part-00000.parquet`` and ``out/_labels.parquet``.

    Existing partitions for the same dates are replaced, other dates are kept (also in the labels
    file). The output depends only on the arguments.
    """
    _check(flows_per_day, non_dns_fraction)
    if days < 1:
        raise ValueError("days must be >= 1")
    first_day = _dt.date.fromisoformat(start)
    dates = [(first_day + _dt.timedelta(days=i)).isoformat() for i in range(days)]
    os.makedirs(out, exist_ok=True)
    # One pool per call; each day has its own stream keyed by (seed, date) so a day's content
    # does not depend on which other days were asked for.
    pool = _pool_for((seed, 0))
    counts = dict.fromkeys(LABELS, 0)
    labels_path = os.path.join(out, "_labels.parquet")
    labels_tmp = os.path.join(out, "_labels.parquet.tmp")
    with pq.ParquetWriter(labels_tmp, LABEL_SCHEMA) as lab_writer:
        _copy_other_labels(labels_path, set(dates), lab_writer)
        for day in dates:
            rng = np.random.default_rng([seed, _dt.date.fromisoformat(day).toordinal()])
            tmp_dir = os.path.join(out, f".date={day}.tmp")  # hidden from Spark and pyarrow
            shutil.rmtree(tmp_dir, ignore_errors=True)
            os.makedirs(tmp_dir)
            writer = None
            n_chunks = max(1, -(-flows_per_day // _CHUNK_ROWS))
            done = 0
            for k in range(n_chunks):
                n = flows_per_day // n_chunks + (k < flows_per_day % n_chunks)
                flows, labels = _generate(pool, n, day, rng, first=done, u_lo=done / max(flows_per_day, 1),
                                          u_hi=(done + n) / max(flows_per_day, 1),
                                          non_dns_fraction=non_dns_fraction, chaos=chaos)
                if writer is None:
                    writer = pq.ParquetWriter(os.path.join(tmp_dir, "part-00000.parquet"), flows.schema)
                writer.write_table(flows, row_group_size=_CHUNK_ROWS)
                lab_writer.write_table(labels)
                for vc in pc.value_counts(labels.column("label")).to_pylist():
                    counts[vc["values"]] += vc["counts"]
                done += n
            writer.close()
            final = os.path.join(out, f"date={day}")
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp_dir, final)
    os.replace(labels_tmp, labels_path)
    return SampleSummary(out=out, dates=dates, flows=flows_per_day * days, labels_path=labels_path,
                         label_counts={k: v for k, v in counts.items() if v})


def _copy_other_labels(path: str, dates: set[str], writer: pq.ParquetWriter) -> None:
    """Keep labels of dates this run does not rewrite; an unreadable old file is dropped."""
    if not os.path.exists(path):
        return
    try:
        old = pq.ParquetFile(path)
        if not old.schema_arrow.equals(LABEL_SCHEMA):
            return
        for batch in old.iter_batches(batch_size=_CHUNK_ROWS):
            keep = ~np.isin(batch.column("date").to_numpy(zero_copy_only=False), list(dates))
            if keep.any():
                writer.write_table(pa.Table.from_batches([batch]).filter(pa.array(keep)))
    except (OSError, pa.ArrowInvalid):
        return


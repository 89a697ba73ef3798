"""The daily report's trend: Spark window functions checked against pandas' rolling windows."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from portprint.jobs.warehouse.tables import RUNS, spark_schema
from portprint.jobs.warehouse.views import TREND_COLUMNS, detector_counts, latest_per_date, plot_trend, trend_frame

pytestmark = pytest.mark.slow
UTC = dt.timezone.utc


def _run(date: str, anomalies: int, *, run_id: str, started: dt.datetime, status: str = "succeeded") -> dict:
    row = dict.fromkeys(RUNS.names)
    row.update(run_id=run_id, date=date, status=status, anomalies=anomalies, started_at=started,
               model_version="m1", flows_read=1000, flows_scored=990, flows_skipped=10, model_flagged=0,
               rule_flagged=anomalies, threshold=0.1, writer="delta-rs", seconds=1.0, archive="/a")
    return row


def _history() -> tuple[list[dict], dict[str, int]]:
    """Three weeks of nightly runs with a gap, a spike, a rescored date and a failed run."""
    rng = np.random.default_rng(5)
    first = dt.date(2026, 10, 1)
    truth: dict[str, int] = {}
    rows = []
    for i in range(24):
        if i in (9, 10):
            continue  # two nights never scored: absent, not zero
        d = (first + dt.timedelta(days=i)).isoformat()
        n = 200 if i == 17 else int(rng.poisson(20))
        started = dt.datetime(2026, 10, 1, 2, tzinfo=UTC) + dt.timedelta(days=i + 1)
        rows.append(_run(d, n, run_id=f"r{i:02d}", started=started))
        truth[d] = n
    # Date 5 rescored later with a new model: only the newest succeeded run counts.
    rescored = (first + dt.timedelta(days=5)).isoformat()
    rows.append(_run(rescored, 55, run_id="rescore", started=dt.datetime(2026, 11, 1, tzinfo=UTC)))
    truth[rescored] = 55
    # A later run that failed for date 6 changes nothing.
    failed = (first + dt.timedelta(days=6)).isoformat()
    rows.append(_run(failed, 999, run_id="failed", started=dt.datetime(2026, 11, 2, tzinfo=UTC), status="failed"))
    return rows, truth


def _expected(truth: dict[str, int], window_days: int, k: float) -> pd.DataFrame:
    s = pd.Series(truth, dtype=float)
    s.index = pd.to_datetime(s.index)
    s = s.sort_index()
    # closed="left": the window [d - window_days, d) is the trailing baseline, today excluded.
    roll = s.rolling(f"{window_days}D", closed="left")
    mean, sd = roll.mean(), roll.std(ddof=1)
    out = pd.DataFrame({"date": s.index.strftime("%Y-%m-%d"), "anomalies": s.astype(int).to_numpy(),
                        "moving_avg": mean.to_numpy(), "band_low": (mean - k * sd).to_numpy(),
                        "band_high": (mean + k * sd).to_numpy()})
    out["outside_band"] = ((out["anomalies"] > out["band_high"]) | (out["anomalies"] < out["band_low"])).fillna(False)
    return out


@pytest.fixture(scope="module")
def runs(spark):
    rows, truth = _history()
    return spark.createDataFrame(rows, schema=spark_schema(RUNS)), truth


@pytest.mark.parametrize(("window_days", "k"), [(7, 2.0), (3, 1.5)])
def test_trend_frame_matches_pandas_rolling_windows(runs, window_days, k):
    df, truth = runs
    got = trend_frame(df, window_days=window_days, k=k).toPandas()
    want = _expected(truth, window_days, k)
    assert tuple(got.columns) == TREND_COLUMNS
    assert got["date"].tolist() == want["date"].tolist()  # ordered, one row per scored date
    assert got["anomalies"].tolist() == want["anomalies"].tolist()
    for col in ("moving_avg", "band_low", "band_high"):
        np.testing.assert_allclose(got[col].astype(float).to_numpy(), want[col].to_numpy(), rtol=1e-9,
                                   equal_nan=True, err_msg=col)
    assert got["outside_band"].tolist() == want["outside_band"].tolist()


def test_the_spike_is_outside_and_early_dates_have_no_bands(runs):
    df, _ = runs
    got = trend_frame(df).toPandas().set_index("date")
    assert bool(got.loc["2026-10-18", "outside_band"])  # the 200-anomaly night
    assert pd.isna(got.loc["2026-10-01", "moving_avg"]) and pd.isna(got.loc["2026-10-02", "band_high"])
    assert not got.loc[["2026-10-01", "2026-10-02"], "outside_band"].any()
    assert got.loc["2026-10-06", "anomalies"] == 55  # the rescore, not the first run
    assert got.loc["2026-10-07", "anomalies"] != 999  # the failed run is ignored


def test_latest_per_date_keeps_one_row_per_date(runs):
    df, truth = runs
    got = latest_per_date(df).toPandas()
    assert sorted(got["date"]) == sorted(truth)
    assert dict(zip(got["date"], got["anomalies"], strict=True)) == truth


def test_trend_frame_rejects_an_empty_window(runs):
    with pytest.raises(ValueError, match="window_days"):
        trend_frame(runs[0], window_days=0)


def test_detector_counts_pivot(spark):
    df = spark.createDataFrame([("2026-10-01", "header-rule"), ("2026-10-01", "header-model"),
                                ("2026-10-01", "header-rule"), ("2026-10-02", "header-model"),
                                ("2026-10-02", "qname-model"), ("2026-10-02", "tunnel"),
                                ("2026-10-02", "tunnel")],
                               "date string, detector string")
    got = [tuple(r) for r in detector_counts(df).collect()]
    assert got == [("2026-10-01", 2, 1, 0, 0), ("2026-10-02", 0, 1, 1, 2)]


def test_plot_trend_draws_or_says_it_cannot(runs, tmp_path):
    pdf = trend_frame(runs[0]).toPandas()
    path = plot_trend(pdf, str(tmp_path / "trend.png"))
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert path is None
    else:
        assert path and (tmp_path / "trend.png").stat().st_size > 1000

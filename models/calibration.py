"""Thresholds on reconstruction loss, set from held-out benign flows at a target false-positive rate."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from statistics import NormalDist

import numpy as np

# An empirical quantile at rate p is trusted only when the held-out set expects this many
# exceedances; below that, the log-normal fit (Kitsune's method) extrapolates the tail.
MIN_TAIL_COUNT = 20


@dataclass(frozen=True)
class Threshold:
    value: float
    method: str  # empirical | lognormal
    target_fpr: float
    held_out: int
    reason: str
    empirical: float
    lognormal: float
    lognormal_mu: float
    lognormal_sigma: float

    def as_dict(self) -> dict:
        return asdict(self)


def empirical_threshold(losses: np.ndarray, target_fpr: float) -> float:
    """Smallest value exceeded by at most target_fpr of the held-out losses (order statistic)."""
    x = np.sort(np.asarray(losses, dtype=np.float64))
    k = math.floor(len(x) * target_fpr)  # how many may lie above the threshold
    return float(x[len(x) - 1 - k]) if len(x) else float("inf")


def lognormal_threshold(losses: np.ndarray, target_fpr: float) -> tuple[float, float, float]:
    """Fit log(loss) ~ Normal(mu, sigma) and return (threshold, mu, sigma) at the target tail."""
    x = np.asarray(losses, dtype=np.float64)
    x = np.log(np.clip(x, 1e-12, None))
    mu, sigma = float(x.mean()), float(x.std(ddof=1)) if len(x) > 1 else 0.0
    z = NormalDist().inv_cdf(1.0 - target_fpr)
    return float(math.exp(mu + sigma * z)), mu, sigma


def calibrate(losses: np.ndarray, target_fpr: float, method: str = "auto") -> Threshold:
    """Choose and explain a threshold. ``auto`` takes the empirical quantile when the held-out set
    is large enough to observe the tail, else the log-normal fit."""
    if len(losses) < 2:
        raise ValueError("calibration needs at least 2 held-out flows")
    emp = empirical_threshold(losses, target_fpr)
    logn, mu, sigma = lognormal_threshold(losses, target_fpr)
    expected_tail = len(losses) * target_fpr
    if method == "auto":
        method = "empirical" if expected_tail >= MIN_TAIL_COUNT else "lognormal"
        reason = (f"{len(losses)} held-out flows expect {expected_tail:.1f} exceedances at {target_fpr:g}; "
                  + ("enough to read the quantile directly" if method == "empirical"
                     else f"fewer than {MIN_TAIL_COUNT}, so the tail is extrapolated by a log-normal fit"))
    else:
        reason = f"method {method} chosen by configuration"
    value = emp if method == "empirical" else logn
    return Threshold(value, method, target_fpr, len(losses), reason, emp, logn, mu, sigma)

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
    method: str  # empirical | lognormal | pot
    target_fpr: float
    held_out: int
    reason: str
    empirical: float
    lognormal: float
    lognormal_mu: float
    lognormal_sigma: float
    # A lower bound the threshold never goes under, whatever the method says (0: none), and why.
    floor: float = 0.0
    floor_reason: str = ""

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


TAIL_QUANTILE = 0.99  # peaks over threshold: the tail is modelled above this quantile of held-out losses


def pot_threshold(losses: np.ndarray, target_fpr: float) -> float:
    """Peaks over threshold (extreme value theory, as SPOT, Siffer et al. KDD'17): above u, the 99th
    percentile, model the excesses as exponential (a generalised Pareto of shape 0) and extrapolate to
    the target rate: t = u + scale * ln(0.01 / target). The scale is estimated from the median excess
    (an exponential's median is scale * ln 2), not the mean: held-out flows come from an unlabelled
    archive, and a few attack flows in the top 1% would inflate a mean and lift the threshold over them.

    Only the tail is fitted, so a wide body (names range from 'a.b' to ip6.arpa) does not inflate the
    threshold the way a log-normal fit over all losses does. The exponential is written out rather than
    fitted with scipy: the estimate is one line, and scipy would be one more dependency on every worker.
    """
    x = np.asarray(losses, dtype=np.float64)
    u = float(np.quantile(x, TAIL_QUANTILE))
    excess = x[x > u] - u
    if len(excess) == 0:
        return u
    tail = len(excess) / len(x)
    scale = float(np.median(excess)) / math.log(2.0)
    return u + scale * math.log(tail / target_fpr) if target_fpr < tail else u


def calibrate(losses: np.ndarray, target_fpr: float, method: str = "auto", floor: float = 0.0,
              floor_reason: str = "") -> Threshold:
    """Choose and explain a threshold. ``auto`` takes the empirical quantile when the held-out set
    is large enough to observe the tail, else the log-normal fit. The result is never below ``floor``."""
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
    value = {"empirical": emp, "lognormal": logn}.get(method)
    if method == "pot":
        value = pot_threshold(losses, target_fpr)
        reason += f" (exponential tail above the {TAIL_QUANTILE:g} quantile)"
    if value is None:
        raise ValueError(f"unknown threshold method {method!r}: use auto, empirical, lognormal or pot")
    if value < floor:
        reason += f"; raised from {value:.6g} to the floor {floor:.6g}: {floor_reason}"
        value = floor
    return Threshold(value, method, target_fpr, len(losses), reason, emp, logn, mu, sigma, floor, floor_reason)

"""Detection metrics on labelled flows: flag rates, ROC-AUC, recall at a false-positive rate.

Written with numpy rather than taken from scikit-learn: these are a few lines each, and scikit-learn
would be a large dependency on every Spark worker for them.
"""

from __future__ import annotations

import numpy as np

from portprint.models.calibration import empirical_threshold

BENIGN = "dns"
TUNNEL = "dns-tunnel"
# Labels that are not on port 53 or carry nothing to judge; they are never part of recall or FPR.
NOT_SCORED = ("other-port", "empty")


def roc_auc(benign: np.ndarray, attack: np.ndarray) -> float:
    """P(attack score > benign score) + 0.5 P(tie): the Mann-Whitney form of the ROC area."""
    if len(benign) == 0 or len(attack) == 0:
        return float("nan")
    scores = np.concatenate([benign, attack])
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), dtype=np.float64)
    sorted_scores = scores[order]
    # Average ranks over ties, so equal scores count one half.
    _, start, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    avg = start + (counts + 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
    rank_sum = ranks[len(benign):].sum()
    n_a, n_b = len(attack), len(benign)
    return float((rank_sum - n_a * (n_a + 1) / 2.0) / (n_a * n_b))


def roc_curve(benign: np.ndarray, attack: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False-positive and true-positive rates for every threshold (flag when score > threshold)."""
    thresholds = np.unique(np.concatenate([benign, attack, [-np.inf]]))[::-1]
    b, a = np.sort(benign), np.sort(attack)
    fpr = 1.0 - np.searchsorted(b, thresholds, side="right") / max(1, len(b))
    tpr = 1.0 - np.searchsorted(a, thresholds, side="right") / max(1, len(a))
    return fpr, tpr


def recall_at_fpr(benign: np.ndarray, attack: np.ndarray, fpr: float) -> tuple[float, float]:
    """(threshold that keeps benign flags at or under fpr, recall of attacks at that threshold)."""
    th = empirical_threshold(benign, fpr)
    return th, float(np.mean(attack > th)) if len(attack) else float("nan")


def per_label(labels: np.ndarray, flagged: np.ndarray) -> dict[str, dict[str, float]]:
    """Flows, flagged and flag rate of each label."""
    out = {}
    for lab in sorted(set(labels.tolist())):
        sel = labels == lab
        n, f = int(sel.sum()), int(flagged[sel].sum())
        out[lab] = {"flows": n, "flagged": f, "rate": f / n if n else float("nan")}
    return out


def attack_mask(labels: np.ndarray) -> np.ndarray:
    """Non-DNS protocols: everything but benign DNS, tunnels (reported apart) and unscored labels."""
    return ~np.isin(labels, [BENIGN, TUNNEL, *NOT_SCORED])

"""The autoencoder that learns what the site's DNS headers look like, and its training loop."""

from __future__ import annotations

import io
import itertools
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn


class PrefixAutoencoder(nn.Module):
    """A small dense autoencoder, e.g. 66 -> 32 -> 12 -> 32 -> 66 (linear output: inputs hold -1 fills)."""

    def __init__(self, n_features: int, hidden: tuple[int, ...] = (32, 12)) -> None:
        super().__init__()
        dims = [n_features, *hidden]
        enc: list[nn.Module] = []
        for a, b in itertools.pairwise(dims):
            enc += [nn.Linear(a, b), nn.ReLU()]
        dec: list[nn.Module] = []
        rev = dims[::-1]
        for k, (a, b) in enumerate(itertools.pairwise(rev)):
            dec.append(nn.Linear(a, b))
            if k < len(rev) - 2:
                dec.append(nn.ReLU())
        self.encoder = nn.Sequential(*enc)
        self.decoder = nn.Sequential(*dec)
        self.n_features = n_features
        self.hidden = tuple(hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


def feature_weights(width: int, id_mode: str) -> np.ndarray:
    """Per-feature loss weights. The random ID cannot be reconstructed, so with id_mode=mask it
    weighs 0 instead of adding a constant floor to every flow's loss."""
    w = np.ones(width * 8 + 2, dtype=np.float32)
    if id_mode == "mask":
        w[: min(16, width * 8)] = 0.0
    return w


def squared_errors(model: PrefixAutoencoder, feats: np.ndarray, batch: int = 65536) -> np.ndarray:
    """Per-feature squared reconstruction error [n, n_features], in the model's precision."""
    dtype = next(model.parameters()).dtype
    np_dtype = np.float64 if dtype == torch.float64 else np.float32
    out = np.empty(feats.shape, dtype=np_dtype)
    with torch.inference_mode():
        for s in range(0, feats.shape[0], batch):
            x = torch.from_numpy(np.ascontiguousarray(feats[s : s + batch], dtype=np_dtype))
            out[s : s + batch] = ((model(x) - x) ** 2).numpy()
    return out


def reconstruction_loss(model: PrefixAutoencoder, feats: np.ndarray, weights: np.ndarray,
                        batch: int = 65536) -> np.ndarray:
    """Per-flow loss: weighted mean squared error over the features, float64 [n]."""
    if feats.shape[0] == 0:
        return np.zeros(0, dtype=np.float64)
    err = squared_errors(model, feats, batch)
    return (err @ weights).astype(np.float64) / float(weights.sum())


@dataclass(frozen=True)
class TrainResult:
    model: PrefixAutoencoder
    epochs_run: int
    best_val_loss: float
    history: list[tuple[float, float]]  # (train, validation) mean loss per epoch


def unique_patterns(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct feature rows and how often each occurs."""
    uniq, counts = np.unique(feats, axis=0, return_counts=True)
    return uniq, counts


def train_autoencoder(feats: np.ndarray, weights: np.ndarray, *, hidden: tuple[int, ...], epochs: int,
                      batch_size: int, learning_rate: float, patience: int, seed: int,
                      validation_fraction: float, counts: np.ndarray | None = None,
                      balance: float = 1.0, epoch_rows: int = 50_000) -> TrainResult:
    """Train with a validation split and early stopping; deterministic on CPU for a given seed.

    With ``counts`` the rows of ``feats`` are distinct patterns seen ``counts`` times, and each epoch
    draws ``epoch_rows`` of them with probability proportional to count**balance: balance 1 is the
    traffic's own mix, 0 makes a rare legal header (NOTIFY, UPDATE) as important as a common one.
    """
    if feats.shape[0] < 2 or (counts is None and feats.shape[0] < 50):
        raise ValueError(f"only {feats.shape[0]} training rows; too few to learn anything")
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    rng = np.random.default_rng(seed)
    if counts is not None:
        probs = counts.astype(np.float64) ** balance
        probs /= probs.sum()
        draw = rng.choice(len(feats), size=max(epoch_rows, 2 * len(feats)), p=probs)
        feats = feats[draw]
    order = rng.permutation(feats.shape[0])
    n_val = max(1, int(len(order) * validation_fraction))
    val = torch.from_numpy(feats[order[:n_val]])
    train = torch.from_numpy(feats[order[n_val:]])
    w = torch.from_numpy(weights) / float(weights.sum())
    model = PrefixAutoencoder(feats.shape[1], hidden)
    opt = torch.optim.Adam(model.parameters(), lr=learning_rate)
    gen = torch.Generator().manual_seed(seed)
    best, best_state, stale, history = float("inf"), None, 0, []
    epoch = 0
    for epoch in range(1, epochs + 1):  # noqa: B007 - epoch is reported after the loop
        model.train()
        perm = torch.randperm(train.shape[0], generator=gen)
        total = 0.0
        for s in range(0, train.shape[0], batch_size):
            x = train[perm[s : s + batch_size]]
            loss = (((model(x) - x) ** 2) @ w).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * x.shape[0]
        model.eval()
        with torch.inference_mode():
            v = float(((((model(val) - val) ** 2) @ w)).mean())
        history.append((total / max(1, train.shape[0]), v))
        if v < best - 1e-7:
            best, stale = v, 0
            best_state = {k: t.clone() for k, t in model.state_dict().items()}
        else:
            stale += 1
            if stale >= patience:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return TrainResult(model, epoch, best, history)


def state_bytes(model: PrefixAutoencoder) -> bytes:
    """Serialise the weights: these bytes are what is shipped to each Spark worker."""
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.getvalue()


def model_from_bytes(blob: bytes, n_features: int, hidden: tuple[int, ...]) -> PrefixAutoencoder:
    """Rebuild the model for scoring from ``state_bytes`` output (weights_only: never unpickle objects).

    Scoring runs in float64: float32 matrix products differ in the last bits with the batch's size
    and make-up, and a rerun of the same flows must give the same losses. With each distinct header
    scored once per batch, the matrix work is small enough for that to cost little.
    """
    model = PrefixAutoencoder(n_features, hidden)
    model.load_state_dict(torch.load(io.BytesIO(blob), weights_only=True))
    model.double().eval()
    return model

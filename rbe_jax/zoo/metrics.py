"""Distribution-level metrics."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

__all__ = ["frechet_distance", "gaussian_stats", "DigitClassifier", "train_digit_classifier"]


def gaussian_stats(x) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``(D,)`` and covariance ``(D, D)`` of samples ``(N, ...)`` (flattened), float64."""
    f = np.asarray(x, np.float64).reshape(np.shape(x)[0], -1)
    return f.mean(axis=0), np.cov(f, rowvar=False)


def _sqrtm_psd(m: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((m + m.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(x, y) -> float:
    """Frechet distance between Gaussians fitted to two sample sets ``(N, ...)``, ``(M, ...)``.

    ``||mu_x - mu_y||^2 + tr(S_x + S_y - 2 (S_x^1/2 S_y S_x^1/2)^1/2)`` (the FID formula,
    computed with symmetric square roots, which is exact for PSD covariances).
    """
    mx, sx = gaussian_stats(x)
    my, sy = gaussian_stats(y)
    r = _sqrtm_psd(sx)
    cross = _sqrtm_psd(r @ sy @ r)
    return float(np.sum((mx - my) ** 2) + np.trace(sx) + np.trace(sy) - 2 * np.trace(cross))


# ---------------------------------------------------------------------------- digits classifier
class DigitClassifier:
    """A small CNN trained on the digits data set, for evaluating generated digits.

    Inception weights cannot be downloaded here, so this classifier plays their role: its
    confidence says whether a sample looks like a digit, and its penultimate features give
    a Frechet distance (the project's FID analogue).  Built by :func:`train_digit_classifier`.
    """

    def __init__(self, graphdef, state, holdout_accuracy: float):
        self.graphdef, self.state = graphdef, state
        self.holdout_accuracy = holdout_accuracy
        self._run = jax.jit(lambda st, x: nnx.merge(graphdef, st).forward(x))

    def features_and_probs(self, x, batch: int = 512):
        """``x`` ``(N, 16, 16, 1)`` in ``[-1, 1]`` -> features ``(N, 64)``, probabilities ``(N, 10)``."""
        feats, probs = [], []
        for i in range(0, len(x), batch):
            f, p = self._run(self.state, np.asarray(x[i : i + batch], np.float32))
            feats.append(np.asarray(f))
            probs.append(np.asarray(p))
        return np.concatenate(feats), np.concatenate(probs)


class _CNN(nnx.Module):
    def __init__(self, rngs):
        self.c1 = nnx.Conv(1, 32, (3, 3), rngs=rngs)
        self.c2 = nnx.Conv(32, 64, (3, 3), rngs=rngs)
        self.f1 = nnx.Linear(64 * 4 * 4, 64, rngs=rngs)
        self.f2 = nnx.Linear(64, 10, rngs=rngs)

    def features(self, x):
        h = nnx.max_pool(nnx.relu(self.c1(x)), (2, 2), (2, 2))
        h = nnx.max_pool(nnx.relu(self.c2(h)), (2, 2), (2, 2))
        return nnx.relu(self.f1(h.reshape(h.shape[0], -1)))

    def logits(self, x):
        return self.f2(self.features(x))

    def forward(self, x):
        feat = self.features(x)
        return feat, jax.nn.softmax(self.f2(feat))


def train_digit_classifier(images, labels, *, seed: int = 0, steps: int = 1500, holdout: float = 0.2) -> DigitClassifier:
    """Trains the evaluation CNN (AdamW, random 1-pixel shifts) on a split of the digits.

    Args:
      images: ``(N, 16, 16, 1)`` in ``[-1, 1]``; labels: ``(N,)``.
      seed: fixes the split, the initialisation and the batches.
      steps: optimisation steps (batch 128).
      holdout: fraction kept out to report accuracy.
    """
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(images))
    n_hold = int(len(images) * holdout)
    hold, tr = perm[:n_hold], perm[n_hold:]
    xtr, ytr = jnp.asarray(images[tr]), jnp.asarray(labels[tr])
    model = _CNN(nnx.Rngs(seed))
    graphdef, params = nnx.split(model)
    opt = optax.adamw(1e-3, weight_decay=1e-4)
    opt_state = opt.init(params)

    @jax.jit
    def step(params, opt_state, key):
        k1, k2 = jax.random.split(key)
        idx = jax.random.randint(k1, (128,), 0, xtr.shape[0])
        x = xtr[idx]
        shift = jax.random.randint(k2, (2,), -1, 2)
        x = jnp.roll(x, shift, axis=(1, 2))

        def loss_fn(p):
            logits = nnx.merge(graphdef, p).logits(x)
            return optax.softmax_cross_entropy_with_integer_labels(logits, ytr[idx]).mean()

        loss, g = jax.value_and_grad(loss_fn)(params)
        upd, opt_state = opt.update(g, opt_state, params)
        return optax.apply_updates(params, upd), opt_state, loss

    key = jax.random.key(seed)
    for i in range(steps):
        params, opt_state, _ = step(params, opt_state, jax.random.fold_in(key, i))
    clf = DigitClassifier(graphdef, params, holdout_accuracy=float("nan"))
    _, p = clf.features_and_probs(images[hold])
    clf.holdout_accuracy = float(np.mean(p.argmax(1) == labels[hold]))
    return clf

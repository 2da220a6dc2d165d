"""The digits data set: scikit-learn's bundled 8x8 handwritten digits (1,797 images).

Model hubs and dataset downloads are out of reach, so the shipped model trains on images
that ship inside a package.  Needs the ``train`` extra (scikit-learn).
"""

from __future__ import annotations

import numpy as np

__all__ = ["load_digits"]


def load_digits(image_size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Digits upscaled (bilinear) to ``image_size``, scaled to ``[-1, 1]``.

    Returns:
      ``images`` ``(1797, image_size, image_size, 1)`` float32 and ``labels`` ``(1797,)`` int32.
    """
    try:
        from sklearn.datasets import load_digits as _sk_load
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("the digits data set needs scikit-learn: pip install 'rbe_jax[train]'") from e
    import jax
    import jax.numpy as jnp

    d = _sk_load()
    x = d.images.astype(np.float32) / 16.0  # (N, 8, 8) in [0, 1]
    if image_size != 8:
        x = np.asarray(jax.image.resize(jnp.asarray(x), (x.shape[0], image_size, image_size), "bilinear"))
    x = np.clip(x, 0.0, 1.0) * 2.0 - 1.0
    return x[..., None].astype(np.float32), d.target.astype(np.int32)

"""autograd.scipy.stats.multivariate_normal in the shim: logpdf, pdf and entropy as formulas with
``np.linalg.solve`` and ``slogdet`` (with ``allow_singular=True``, SciPy's pseudo-inverse and
pseudo-determinant from the eigendecomposition of a constant covariance; as in autograd, a singular
covariance is not differentiated). Other methods are SciPy's."""

import math
from typing import Any

import numpy as np

from .._proxy import module_getattr

__getattr__ = module_getattr("scipy.stats", "multivariate_normal")

_LOG_2PI = math.log(2 * math.pi)


def _params(x: Any, mean: Any, cov: Any) -> tuple[Any, Any, Any, int]:
    """SciPy's conventions: mean None is zeros, a scalar or vector cov is a multiple of I or a diagonal, and
    x is one point (a vector) or a stack of points along its last axis."""
    dim = np.shape(mean)[-1] if mean is not None and np.ndim(mean) else (np.shape(cov)[0] if np.ndim(cov) else 1)
    mean = np.zeros(dim) if mean is None else mean
    if np.ndim(cov) == 0:
        cov = cov * np.eye(dim)
    elif np.ndim(cov) == 1:
        cov = np.diag(cov)
    if x is not None:
        if np.ndim(x) == 0:
            x = np.reshape(x, (1,))
        if np.ndim(x) == 1:
            x = np.reshape(x, (-1, 1) if dim == 1 else (1, -1))
    return x, mean, cov, dim


def _squeeze(out: Any) -> Any:
    return np.squeeze(out)


def _singular_terms(dev: Any, cov: Any) -> tuple[Any, Any, int]:
    import chainrule

    if isinstance(cov, chainrule.Tensor) and cov.requires_grad:
        raise NotImplementedError("The multivariate normal pdf is not differentiable w.r.t. a singular "
                                  "covariance matrix (as in autograd)")
    c = np.asarray(getattr(cov, "data", cov))
    s, u = np.linalg.eigh(c)
    eps = {np.dtype(np.float32): 1e3, np.dtype(np.float64): 1e6}.get(s.dtype, 1e6) * np.finfo(s.dtype).eps
    eps = eps * np.max(np.abs(s))
    keep = s > eps
    U = u[:, keep] / np.sqrt(s[keep])
    maha = np.sum((dev @ U) ** 2, axis=-1)
    return maha, float(np.sum(np.log(s[keep]))), int(keep.sum())


def logpdf(x: Any, mean: Any = None, cov: Any = 1, allow_singular: bool = False) -> Any:
    x, mean, cov, dim = _params(x, mean, cov)
    dev = x - mean
    if allow_singular:
        maha, logdet, rank = _singular_terms(dev, cov)
    else:
        maha = np.sum(dev * np.linalg.solve(cov, dev.T).T, axis=-1)
        logdet, rank = np.linalg.slogdet(cov)[1], dim
    return _squeeze(-0.5 * (rank * _LOG_2PI + logdet + maha))


def pdf(x: Any, mean: Any = None, cov: Any = 1, allow_singular: bool = False) -> Any:
    return np.exp(logpdf(x, mean, cov, allow_singular))


def entropy(mean: Any = None, cov: Any = 1) -> Any:
    _, _, cov, dim = _params(None, mean, cov)
    return 0.5 * (dim * (1 + _LOG_2PI) + np.linalg.slogdet(cov)[1])

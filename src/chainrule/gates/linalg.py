"""Linear-algebra gates: matrix products (matmul, einsum) and ``np.linalg`` (inv, solve, det, slogdet,
cholesky, eigh, svd, pinv).

Functions with several results (eigh's values and vectors, svd's U, s, Vᴴ) are one gate per result,
each computing the factorization and sending back only its own part of the gradient: the gradient
of a factorization is linear in the gradients of its results, so the parts add up to the whole.
Batched inputs (``(..., M, N)``) work as in NumPy.
"""

from __future__ import annotations

import string
from collections import Counter
from typing import Any

import numpy as np

from .core import LINALG, Gate, constant, register, unbroadcast


def _gate(name: str, forward: Any, explain: str, fmt: str, **kw: Any) -> Gate:
    return register(Gate(name, forward, explain, fmt, kind=kw.pop("kind", LINALG), **kw))


def _T(m: Any, a: Any) -> Any:
    """Swap the last two axes (the transpose of each matrix in a stack)."""
    nd = len(a.shape)
    return m.transpose(a, tuple(range(nd - 2)) + (nd - 1, nd - 2))


def _swap_last(ndim: int) -> tuple[int, ...]:
    return tuple(range(ndim - 2)) + (ndim - 1, ndim - 2)


def _eye(m: Any, n: int) -> Any:
    """The identity matrix as a constant of the ops namespace ``m`` (see :func:`.core.constant`)."""
    return constant(m, np.eye(n))


# ---- matmul -------------------------------------------------------------------------------------------


def _matmul_vjp(m, g, a, b, out, needs):
    # promote 1-D operands to matrices as matmul does, differentiate, then undo the promotion
    a2 = m.reshape(a, (1,) + a.shape) if a.ndim == 1 else a
    b2 = m.reshape(b, b.shape + (1,)) if b.ndim == 1 else b
    g2 = g
    if a.ndim == 1:
        g2 = m.reshape(g2, g2.shape[:-1] + (1,) + g2.shape[-1:]) if b.ndim > 1 else m.reshape(g2, (1,) + g2.shape)
    if b.ndim == 1:
        g2 = m.reshape(g2, g2.shape + (1,))
    ga = gb = None
    if needs[0]:
        ga = unbroadcast(m, m.matmul(g2, m.transpose(b2, _swap_last(b2.ndim))), a2.shape)
        ga = m.reshape(ga, a.shape) if a.ndim == 1 else ga
    if needs[1]:
        gb = unbroadcast(m, m.matmul(m.transpose(a2, _swap_last(a2.ndim)), g2), b2.shape)
        gb = m.reshape(gb, b.shape) if b.ndim == 1 else gb
    return ga, gb


def _matmul_shape(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
    if len(a) == 0 or len(b) == 0:
        raise ValueError("matmul of a 0-d value")
    a2 = (1,) + a if len(a) == 1 else a
    b2 = b + (1,) if len(b) == 1 else b
    if a2[-1] != b2[-2]:
        raise ValueError(f"matmul shapes {a} and {b} do not fit ({a2[-1]} != {b2[-2]})")
    out = tuple(np.broadcast_shapes(a2[:-2], b2[:-2])) + (a2[-2], b2[-1])
    if len(a) == 1:
        out = out[:-2] + out[-1:]
    if len(b) == 1:
        out = out[:-1]
    return out


# ---- einsum ---------------------------------------------------------------------------------------------


def einsum_terms(subscripts: str, shapes: list[tuple[int, ...]]) -> tuple[list[str], str]:
    """The input terms and the output term of an einsum, with ``...`` spelled out as letters and the
    implicit output (no ``->``) made explicit."""
    s = subscripts.replace(" ", "")
    ins_text, out_text = (s.split("->") + [None])[:2] if "->" in s else (s, None)
    ins = ins_text.split(",")
    if len(ins) != len(shapes):
        raise ValueError(f"einsum: {len(ins)} terms in {subscripts!r} for {len(shapes)} operands")
    free = [c for c in string.ascii_letters if c not in s]
    widths = [len(shape) - (len(t) - 3) for t, shape in zip(ins, shapes) if "..." in t]
    n_ell = max(widths, default=0)
    ell = "".join(free[:n_ell])
    terms = []
    for t, shape in zip(ins, shapes):
        if "..." in t:
            w = len(shape) - (len(t) - 3)
            t = t.replace("...", ell[n_ell - w:])
        if len(t) != len(shape):
            raise ValueError(f"einsum: term {t!r} does not fit an operand of shape {shape}")
        terms.append(t)
    if out_text is None:
        counts = Counter(c for t in ins for c in t if c.isalpha())
        out = ell + "".join(sorted(c for c, k in counts.items() if k == 1))
    else:
        out = out_text.replace("...", ell)
    return terms, out


def _einsum(xp, *operands, subscripts=""):
    return xp.einsum(subscripts, *operands)


def _einsum_vjp(m, g, *args, subscripts=""):
    *xs, out, needs = args
    shapes = [tuple(x.shape) for x in xs]
    terms, out_term = einsum_terms(subscripts, shapes)
    size = _letter_sizes(terms, shapes)
    # operands whose dimensions broadcast (size 1 against n) are broadcast first, summed back after
    full = [x if tuple(x.shape) == tuple(size[c] for c in t) else m.broadcast_to(x, tuple(size[c] for c in t))
            for x, t in zip(xs, terms)]
    grads = []
    for i, (x, t) in enumerate(zip(xs, terms)):
        if not needs[i]:
            grads.append(None)
            continue
        others = [(terms[j], full[j]) for j in range(len(xs)) if j != i]
        uniq = "".join(dict.fromkeys(t))
        known = set(out_term).union(*[set(tj) for tj, _ in others]) if others else set(out_term)
        present = "".join(c for c in uniq if c in known)
        spec = ",".join([out_term] + [tj for tj, _ in others]) + "->" + present
        r = m.einsum(spec, g, *[a for _, a in others])
        missing = "".join(c for c in uniq if c not in known)
        if missing:  # a letter summed inside this operand alone: its gradient is the same along it
            r = m.einsum(f"{present},{missing}->{uniq}", r, constant(m, np.ones(tuple(size[c] for c in missing))))
        elif present != uniq:
            r = m.einsum(f"{present}->{uniq}", r)
        if len(uniq) != len(t):  # a repeated letter (a diagonal): the gradient goes onto it
            spare = [c for c in string.ascii_letters if c not in subscripts and c not in out_term]
            target, eyes, seen = [], [], set()
            for c in t:
                if c in seen:
                    d = spare.pop()
                    eyes.append((c + d, _eye(m, size[c])))
                    target.append(d)
                else:
                    seen.add(c)
                    target.append(c)
            spec = ",".join([uniq] + [e for e, _ in eyes]) + "->" + "".join(target)
            r = m.einsum(spec, r, *[e for _, e in eyes])
        if tuple(r.shape) != tuple(x.shape):
            r = unbroadcast(m, r, tuple(x.shape))
        grads.append(r)
    return tuple(grads)


def _letter_sizes(terms: list[str], shapes: list[tuple[int, ...]]) -> dict[str, int]:
    """Each letter's size, broadcasting as einsum does (a 1 gives way to the other size, even 0)."""
    size: dict[str, int] = {}
    for t, shape in zip(terms, shapes):
        for c, n in zip(t, shape):
            size[c] = n if size.get(c, 1) == 1 else size[c]
    return size


def _einsum_shape(*shapes, subscripts=""):
    terms, out = einsum_terms(subscripts, list(shapes))
    size = _letter_sizes(terms, list(shapes))
    return tuple(size[c] for c in out)


def _einsum_code(args: list[str], params: dict[str, Any]) -> str:
    return f"np.einsum({params['subscripts']!r}, {', '.join(args)})"


def _einsum_call(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
    if args and not isinstance(args[0], str):  # the interleaved form: a, [0, 1], b, [1, 2], [0, 2]
        args = _from_sublists(args)
    if not args:
        raise TypeError("np.einsum: give the subscripts first (np.einsum('ij,jk->ik', a, b))")
    bad = [k for k, v in kwargs.items() if k not in ("optimize",) and v is not None]
    if bad:
        raise TypeError(f"np.einsum: argument(s) {', '.join(bad)} are not supported on chainrule tensors")
    return list(args[1:]), {"subscripts": args[0]}


def _from_sublists(args: tuple[Any, ...]) -> tuple[Any, ...]:
    """``np.einsum(a, [0, 1], b, [1, 2], [0, 2])`` as ``np.einsum('ab,bc->ac', a, b)``."""
    def letters(sub: Any) -> str:
        return "".join("..." if s is Ellipsis else string.ascii_letters[int(s)] for s in sub)

    operands, terms = list(args[0:len(args) - len(args) % 2:2]), [letters(s) for s in args[1::2]]
    spec = ",".join(terms)
    if len(args) % 2:
        spec += "->" + letters(args[-1])
    return (spec, *operands)


# ---- np.linalg ------------------------------------------------------------------------------------------


def _inv_vjp(m, g, a, out, needs):
    return (-m.matmul(m.matmul(_T(m, out), g), _T(m, out)),)


def _solve_vjp(m, g, a, b, out, needs):
    # x = A⁻¹ b: gb = A⁻ᵀ g and gA = −gb xᵀ (NumPy 2: b is a vector only when it is 1-D)
    vector = b.ndim == 1
    gb = m.solve(_T(m, a), g)
    ga = None
    if needs[0]:
        if vector:
            ga = -(m.reshape(gb, gb.shape + (1,)) * m.reshape(out, out.shape[:-1] + (1,) + out.shape[-1:]))
        else:
            ga = -m.matmul(gb, _T(m, out))
        ga = unbroadcast(m, ga, tuple(a.shape)) if tuple(ga.shape) != tuple(a.shape) else ga
    if needs[1] and tuple(gb.shape) != tuple(b.shape):
        gb = unbroadcast(m, gb, tuple(b.shape))
    return ga, (gb if needs[1] else None)


def _adjugate_t(m, a, out):
    """adj(A)ᵀ, the gradient of det(A): det(A)·A⁻ᵀ where A is regular. On NumPy's arrays it is also
    computed where A is singular (det·A⁻ᵀ has no value there, its limit adj(A)ᵀ has), from the SVD
    A = U S Vᵀ: adj(A)ᵀ = det(U) det(V) U diag(∏_{j≠i} s_j) Vᵀ. (Graphs of second derivatives and
    printed rules keep det·A⁻ᵀ.)"""
    if a.__class__ is not np.ndarray:
        try:
            return m.reshape(out, tuple(out.shape) + (1, 1)) * _T(m, m.inv(a))
        except np.linalg.LinAlgError:
            raise np.linalg.LinAlgError(
                "det: the gradient of det as a graph (for second derivatives: cr.hessian, grad of grad) is "
                "written det(A)·A⁻ᵀ, which has no value at this singular matrix; first derivatives (cr.grad, "
                "cr.jvp) are computed there") from None
    try:
        return out[..., None, None] * np.swapaxes(np.linalg.inv(a), -1, -2)  # the fast path: A regular
    except np.linalg.LinAlgError:
        pass
    u, s, vt = np.linalg.svd(a)
    ones = np.ones(s.shape[:-1] + (1,), dtype=s.dtype)
    before = np.cumprod(np.concatenate([ones, s[..., :-1]], axis=-1), axis=-1)  # ∏_{j<i} s_j
    after = np.cumprod(np.concatenate([ones, s[..., :0:-1]], axis=-1), axis=-1)[..., ::-1]  # ∏_{j>i} s_j
    sign = np.linalg.det(u) * np.linalg.det(vt)
    return sign[..., None, None] * ((u * (before * after)[..., None, :]) @ vt)


def _det_vjp(m, g, a, out, needs):
    return (m.reshape(g, tuple(g.shape) + (1, 1)) * _adjugate_t(m, a, out),)


def _logabsdet(xp, a):
    return xp.linalg.slogdet(a)[1]


def _logabsdet_vjp(m, g, a, out, needs):
    return (m.reshape(g, tuple(g.shape) + (1, 1)) * _T(m, m.inv(a)),)


def _cholesky_vjp(m, g, a, out, needs):
    # Murray (2016), arXiv:1602.07527, as HIPS autograd: Φ(Lᵀ ḡ) then L⁻ᵀ · L⁻¹, symmetrized
    n = a.shape[-1]
    phi = m.tril(m.matmul(_T(m, out), g)) / (1.0 + _eye(m, n))
    s = m.solve(_T(m, out), _T(m, m.solve(_T(m, out), _T(m, phi))))
    return (0.5 * (s + _T(m, s)),)


def _eigh_values(xp, a, UPLO="L"):
    return xp.linalg.eigh(a, UPLO=UPLO)[0]


def _eigh_vectors(xp, a, UPLO="L"):
    return xp.linalg.eigh(a, UPLO=UPLO)[1]


def _uplo_fold(m, temp, n, UPLO):
    # eigh reads one triangle of the matrix: the gradient lives on the diagonal and that triangle
    tri = constant(m, np.tril(np.ones((n, n)), -1) if UPLO == "L" else np.triu(np.ones((n, n)), 1))
    return temp * _eye(m, n) + (temp + _T(m, temp)) * tri


def _eigh_values_vjp(m, g, a, out, needs, UPLO="L"):
    v = m.eigh_vectors(a, UPLO=UPLO)
    n = a.shape[-1]
    temp = m.matmul(v * m.reshape(g, tuple(g.shape[:-1]) + (1, n)), _T(m, v))
    return (_uplo_fold(m, temp, n, UPLO),)


def _eigh_vectors_vjp(m, g, a, out, needs, UPLO="L"):
    w = m.eigh_values(a, UPLO=UPLO)
    v = out
    n = a.shape[-1]
    wr = m.reshape(w, tuple(w.shape[:-1]) + (1, n))
    gap = wr - _T(m, wr) + _eye(m, n)   # w_j − w_i off the diagonal, 1 on it
    f = (1.0 - _eye(m, n)) / gap
    temp = m.matmul(m.matmul(v, f * m.matmul(_T(m, v), g)), _T(m, v))
    return (_uplo_fold(m, temp, n, UPLO),)


def _eigh_std(k):
    def forward(xp, a, UPLO="L"):
        # the standard's eigh has no UPLO: the upper triangle of a is the lower one of its transpose
        return xp.linalg.eigh(a if UPLO == "L" else xp.matrix_transpose(a))[k]

    return forward


def _svd_std(k):
    def forward(xp, a, full_matrices=False):
        return xp.linalg.svdvals(a) if k == 1 else xp.linalg.svd(a, full_matrices=full_matrices)[k]

    return forward


# the parts of svd, each a function of its own: generated code includes them by name (helpers)
def _svd_u(xp, a, full_matrices=False):
    return xp.linalg.svd(a, full_matrices=full_matrices)[0]


def _svd_s(xp, a, full_matrices=False):
    return xp.linalg.svd(a, compute_uv=False)


def _svd_vh(xp, a, full_matrices=False):
    return xp.linalg.svd(a, full_matrices=full_matrices)[2]


def _svd_vjp(part):
    def vjp(m, g, a, out, needs, full_matrices=False):
        mm, nn = a.shape[-2:]
        if full_matrices and mm != nn:
            raise ValueError("the gradient of svd with full_matrices=True is not defined for non-square "
                             "matrices: use np.linalg.svd(a, full_matrices=False)")
        u, s, vh = m.svd_u(a), m.svd_s(a), m.svd_vh(a)
        v = _T(m, vh)
        k = min(mm, nn)
        eye = _eye(m, k)
        srow = m.reshape(s, tuple(s.shape[:-1]) + (1, k))
        scol = m.reshape(s, tuple(s.shape[:-1]) + (k, 1))
        if part == "s":  # needs no f: repeated singular values (the identity's) divide nothing by zero
            return (m.matmul(u * m.reshape(g, tuple(g.shape[:-1]) + (1, k)), vh),)
        f = 1.0 / (srow**2 - scol**2 + eye)
        if part == "u":
            utgu = m.matmul(_T(m, u), g)
            t1 = m.matmul(m.matmul(u, (f * (utgu - _T(m, utgu))) * srow), vh)
            if mm > nn:
                rest = _eye(m, mm) - m.matmul(u, _T(m, u))
                t1 = t1 + m.matmul(rest, m.matmul(g / srow, vh))
            return (t1,)
        gv = _T(m, g)
        vtgv = m.matmul(_T(m, v), gv)
        t1 = m.matmul(m.matmul(u, scol * (f * (vtgv - _T(m, vtgv)))), vh)
        if mm < nn:
            rest = _eye(m, nn) - m.matmul(v, vh)
            t1 = t1 + m.matmul(m.matmul(u / srow, _T(m, gv)), rest)
        return (t1,)

    return vjp


def _svd_shape(part):
    def shape(s, full_matrices=False):
        mm, nn = s[-2:]
        k = min(mm, nn)
        if part == 0:
            return s[:-2] + (mm, mm if full_matrices else k)
        if part == 1:
            return s[:-2] + (k,)
        return s[:-2] + (nn if full_matrices else k, nn)

    return shape


def _pinv_vjp(m, g, a, out, needs):
    # d(A⁺) = −A⁺ dA A⁺ + A⁺A⁺ᵀ dAᵀ (I − AA⁺) + (I − A⁺A) dAᵀ A⁺ᵀA⁺ (A of full rank), transposed
    p, pt = out, _T(m, out)
    mm, nn = a.shape[-2:]
    left = _eye(m, mm) - m.matmul(a, p)
    right = _eye(m, nn) - m.matmul(p, a)
    gt = _T(m, g)
    return (-m.matmul(m.matmul(pt, g), pt) + m.matmul(m.matmul(left, gt), m.matmul(p, pt))
            + m.matmul(m.matmul(m.matmul(pt, p), gt), right),)


def _inv_jvp(m, tangents, a, out):
    return -m.matmul(m.matmul(out, tangents[0]), out)


def _solve_jvp(m, tangents, a, b, out):
    ta, tb = tangents
    rhs = m.zeros_like(out) if tb is None else tb
    if ta is not None:
        rhs = rhs - (m.matmul(ta, out) if b.ndim > 1 else m.matmul(ta, out))
    return m.solve(a, rhs)


def _det_jvp(m, tangents, a, out):
    return m.sum(_adjugate_t(m, a, out) * tangents[0], axis=(-2, -1))


def _logabsdet_jvp(m, tangents, a, out):
    return m.sum(_T(m, m.inv(a)) * tangents[0], axis=(-2, -1))


def _square(s, **_):
    return s


# ---- the gates --------------------------------------------------------------------------------------------

MATMUL = _gate("matmul", "matmul", "matmul gate: ∂(A@B) gives g@Bᵀ to A and Aᵀ@g to B (mul's swap, for matrices)",
               "{0} @ {1}", linear="multilinear", vjp=_matmul_vjp, arity=2, shape=_matmul_shape, code="{0} @ {1}")
EINSUM = _gate("einsum", _einsum, "einsum gate: each operand gets the einsum of the upstream gradient with the "
               "other operands (mul's swap, for any index pattern)", "einsum({subscripts}, {xs})",
               linear="multilinear", vjp=_einsum_vjp, params={"subscripts": ""}, arity=None, shape=_einsum_shape,
               code=_einsum_code,
               numpy=("einsum",), call=_einsum_call)
INV = _gate("inv", "linalg.inv", "inverse gate: ∂(A⁻¹) sends −A⁻ᵀ·g·A⁻ᵀ to A", "inv({0})", jvp=_inv_jvp, vjp=_inv_vjp,
            shape=_square)
SOLVE = _gate("solve", "linalg.solve", "solve gate: x = A⁻¹b sends A⁻ᵀg to b and −(A⁻ᵀg)·xᵀ to A",
              "solve({0}, {1})", jvp=_solve_jvp, vjp=_solve_vjp, arity=2, shape=lambda a, b: np.broadcast_shapes(
                  a[:-2], b[:-2] if len(b) > 1 else ())[:] + ((b[-1],) if len(b) == 1 else b[-2:]))
DET = _gate("det", "linalg.det", "det gate: ∂det(A)/∂A = det(A)·A⁻ᵀ", "det({0})", jvp=_det_jvp, vjp=_det_vjp,
            shape=lambda s: s[:-2])
LOGABSDET = _gate("logabsdet", _logabsdet, "log|det| gate: ∂ln|det A|/∂A = A⁻ᵀ", "ln|det({0})|",
                  jvp=_logabsdet_jvp, vjp=_logabsdet_vjp, shape=lambda s: s[:-2], numpy=(), helper=True)
CHOLESKY = _gate("cholesky", "linalg.cholesky", "cholesky gate: A = LLᵀ; the gradient of L is pulled back "
                 "through Φ(Lᵀḡ) and two triangular solves (Murray 2016)", "cholesky({0})", vjp=_cholesky_vjp,
                 shape=_square)
EIGH_VALUES = _gate("eigh_values", _eigh_values, "eigenvalue gate: ∂λᵢ/∂A = vᵢvᵢᵀ (on the triangle eigh reads)",
                    "eigvalsh({0})", vjp=_eigh_values_vjp, params={"UPLO": "L"}, shape=lambda s, UPLO="L": s[:-1],
                    numpy=("linalg.eigvalsh",), std=_eigh_std(0), helper=True)
EIGH_VECTORS = _gate("eigh_vectors", _eigh_vectors, "eigenvector gate: each vector moves by the others, "
                     "weighted 1/(λⱼ − λᵢ)", "eigh_vectors({0})", vjp=_eigh_vectors_vjp, params={"UPLO": "L"},
                     shape=lambda s, UPLO="L": s, numpy=(), std=_eigh_std(1), helper=True)
SVD_U = _gate("svd_u", _svd_u, "svd gate (U): the gradient of the left singular vectors", "svd_u({0})",
              vjp=_svd_vjp("u"), params={"full_matrices": False}, shape=_svd_shape(0), numpy=(),
              std=_svd_std(0), helper=True)
SVD_S = _gate("svd_s", _svd_s, "svd gate (s): ∂sᵢ/∂A = uᵢvᵢᵀ", "svd_s({0})", vjp=_svd_vjp("s"),
              shape=lambda s, **_: s[:-2] + (min(s[-2:]),), numpy=(), std=_svd_std(1), helper=True)
SVD_VH = _gate("svd_vh", _svd_vh, "svd gate (Vᴴ): the gradient of the right singular vectors", "svd_vh({0})",
               vjp=_svd_vjp("vh"), params={"full_matrices": False}, shape=_svd_shape(2), numpy=(),
               std=_svd_std(2), helper=True)
PINV = _gate("pinv", "linalg.pinv", "pseudo-inverse gate: −A⁺ᵀgA⁺ᵀ plus the two projections' terms (A of full rank)",
             "pinv({0})", vjp=_pinv_vjp, shape=lambda s: s[:-2] + (s[-1], s[-2]))

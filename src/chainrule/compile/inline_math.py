"""exp, log, sin and cos written out for the fused loops, so LLVM vectorizes them with the loop.

A libm or libmvec call inside a fused loop is a call: scalar (one element per call), or a vector
call over a block of values stored in scratch arrays, which clobbers every vector register and
splits the loop in two. The functions here are scalar numba functions made of what LLVM vectorizes
by itself -- multiplications, fused multiply-adds, integer operations on the bits, comparisons and
selects, no branch and no table -- inlined (``inline="always"``) into the kernel's loop, which then
runs them eight lanes at a time (AVX-512) beside the loop's other arithmetic.

Each is the classic double-precision algorithm: a range reduction exact in double arithmetic, a
published minimax polynomial, a scaling by a power of two; special values (±0, subnormals, ±inf,
NaN, the overflow and underflow thresholds) are produced by comparisons and selects, so they come
out as NumPy's. Measured errors (``tests/test_inline_math.py`` sweeps them; the README gives the
figures) are below one ulp for exp, log, sin and cos.

Sources (algorithms and coefficients; the code is written anew here):

* ``exp``: SLEEF 3.x ``xexp`` (``sleefdp.c``, Naoki Shibata, Boost Software License 1.0): Cody-Waite
  reduction ``x = k ln2 + s`` with ln 2 in two parts (the first has trailing zeros, so ``k * hi`` is
  exact), the polynomial of degree 12 on ``|s| <= ln2 / 2`` and its coefficients.
* ``log``: fdlibm 5.3 ``e_log.c`` (Sun Microsystems; "Permission to use, copy, modify, and
  distribute this software is freely granted, provided that this notice is preserved"): ``x = 2^k
  (1 + f)`` with ``1 + f`` in ``[sqrt(2)/2, sqrt(2))``, ``s = f / (2 + f)``, ``log(1 + f) = f - (hfsq -
  s (hfsq + R(s^2)))``, ``Lg1..Lg7`` and ln 2 split in ``ln2_hi`` (``k * ln2_hi`` exact) and
  ``ln2_lo``; the reduction done on the whole 64-bit word as in musl's ``log.c`` (MIT).
  :func:`log` holds everywhere; :func:`log_normal` is its core for positive normal finite numbers,
  which a fused loop uses, counting the other arguments with :func:`log_outside` and computing a
  block again with :func:`log` where there is one.
* ``sin``, ``cos``: Cody-Waite reduction ``r = x - n pi/2`` with pi/2 in three doubles, by fused
  multiply-adds (the first exact), then FreeBSD's ``k_sin.c`` / ``k_cos.c`` (Sun's notice as above;
  ``S1..S6``, ``C1..C6``, Bruce Evans's form of the cosine kernel that keeps the error of
  ``1 - r^2/2``) on ``|r| <= pi/4``, both computed (one ``sincos``) and chosen by the quadrant.
  Beyond ``|x| < 2^20 pi/2`` the reduction needs more bits of pi than it has: a fused loop counts
  such arguments (:func:`trig_outside`), and where there is one it computes its block again with
  :func:`sin_exact` and :func:`cos_exact` (libm's ``sin``/``cos`` for those elements).

Where the CPU has AVX-512 and LLVM lowers ``llvm.ldexp`` to ``vscalefpd`` (LLVM 22 does), exp's
scaling by ``2^k`` is that one instruction (exact, overflowing and underflowing gradually as IEEE
says); elsewhere it is two multiplications by powers of two built from the bits. :data:`VARIANT`
names the one in use (it is part of each kernel file's text, so a change recompiles the kernels).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

__all__ = ["exp", "log", "log_normal", "log_outside", "sin", "cos", "sincos", "sin_exact", "cos_exact",
           "sincos_exact", "trig_outside", "VARIANT", "TRIG_MAX"]

_DBL = ir.DoubleType()
_I64 = ir.IntType(64)


@intrinsic
def _bits(typingctx: Any, x: Any) -> Any:
    """The IEEE bits of a float64, as an int64 (a register move, vectorized as nothing at all)."""
    if x != types.float64:
        return None

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        return builder.bitcast(args[0], _I64)
    return types.int64(types.float64), codegen


@intrinsic
def _from_bits(typingctx: Any, i: Any) -> Any:
    """The float64 whose IEEE bits are the int64 ``i``."""
    if not isinstance(i, types.Integer):
        return None

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        return builder.bitcast(context.cast(builder, args[0], sig.args[0], types.int64), _DBL)
    return types.float64(i), codegen


def _multiply_add(llvm_name: str, doc: str) -> Any:
    """An intrinsic ``f(a, b, c) = a * b + c`` on float64, lowered to the LLVM intrinsic ``llvm_name``."""
    def typer(typingctx: Any, a: Any, b: Any, c: Any) -> Any:
        if not all(t == types.float64 for t in (a, b, c)):
            return None

        def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
            fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_DBL, [_DBL] * 3), llvm_name)
            return builder.call(fn, args)
        return types.float64(types.float64, types.float64, types.float64), codegen

    typer.__name__ = typer.__qualname__ = llvm_name.replace(".", "_")
    typer.__doc__ = doc
    return intrinsic(typer)


#: ``a * b + c``, fused where the CPU has FMA (``llvm.fmuladd``: one rounding there, two elsewhere;
#: nothing here relies on the fused rounding for exactness)
_fma = _multiply_add("llvm.fmuladd.f64", "a * b + c, fused where the CPU has FMA")


@intrinsic
def _ldexp(typingctx: Any, x: Any, k: Any) -> Any:
    """``x * 2^k`` rounded once (``llvm.ldexp``; ``vscalefpd`` with AVX-512)."""
    if x != types.float64 or not isinstance(k, types.Integer):
        return None

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        # an int64 exponent: one conversion (vcvtqq2pd) feeds vscalefpd, where an int32 takes two
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_DBL, [_DBL, _I64]), "llvm.ldexp.f64.i64")
        return builder.call(fn, [args[0], context.cast(builder, args[1], sig.args[1], types.int64)])
    return types.float64(x, k), codegen


def _scalef_available() -> bool:
    """Whether exp's scaling is one ``vscalefpd``: AVX-512 on the CPU numba compiles for, and an LLVM
    that lowers ``llvm.ldexp`` on vectors to it (checked here with LLVM 22; older ones may call libm)."""
    import llvmlite.binding as llvm
    from numba.core import config

    if config.CPU_NAME or config.CPU_FEATURES or llvm.llvm_version_info < (22,):
        return False
    return "+avx512f" in llvm.get_host_cpu_features().flatten().split(",")


_SCALEF = _scalef_available()
#: which scaling exp uses: "scalef" (AVX-512) or "bits" (two multiplications)
VARIANT = "scalef" if _SCALEF else "bits"

_JIT = {"error_model": "numpy", "inline": "always"}
_SHIFT = 6755399441055744.0          # 1.5 * 2^52: t = v + _SHIFT rounds v to an integer, held in t's low bits
_SHIFT_BITS = 0x4338000000000000     # the bits of _SHIFT

# ---- exp (SLEEF xexp) ------------------------------------------------------------------------------
_INV_LN2 = 1.442695040888963407359924681001892137426645954152985934135449406931
_L2U = 0.69314718055966295651160180568695068359375            # ln 2, upper part (k * _L2U exact)
_L2L = 0.28235290563031577122588448175013436025525412068e-12  # ln 2 - _L2U


_E = (0.5, 0.1666666666666669072e+0, 0.4166666666666602598e-1, 0.8333333333314938210e-2,
      0.1388888888914497797e-2, 0.1984126989855865850e-3, 0.2480158687479686264e-4, 0.2755723402025388239e-5,
      0.2755762628169491192e-6, 0.2511210703042288022e-7, 0.2081276378237164457e-8)   # SLEEF's, lowest first


@njit(**_JIT)
def _exp_poly(x: float) -> tuple[float, int]:
    """(exp(s), k) with x = k ln2 + s, |s| <= ln2/2 (x already clamped): exp(s) = 1 + s + s^2 u(s)."""
    t = _fma(x, _INV_LN2, _SHIFT)
    kd = t - _SHIFT
    s = _fma(kd, -_L2U, x)
    s = _fma(kd, -_L2L, s)
    # u(s) = sum _E[i] s^i as its even and odd halves in s^2: two short chains instead of one long
    # (the loop is bound by the latency of its chains more than by the count of its operations)
    s2 = s * s
    ev = _fma(s2, _E[10], _E[8])
    ev = _fma(s2, ev, _E[6])
    ev = _fma(s2, ev, _E[4])
    ev = _fma(s2, ev, _E[2])
    ev = _fma(s2, ev, _E[0])
    od = _fma(s2, _E[9], _E[7])
    od = _fma(s2, od, _E[5])
    od = _fma(s2, od, _E[3])
    od = _fma(s2, od, _E[1])
    u = _fma(s, od, ev)
    hi = 1.0 + s                           # the sum 1 + s kept exact as hi + lo
    lo = (1.0 - hi) + s
    return hi + _fma(s2, u, lo), _bits(t) - _SHIFT_BITS


@njit(**_JIT)
def _exp_scalef(x: float) -> float:
    # clamped (numba's min and max keep NaN; one vminpd, one vmaxpd): beyond these exp is inf or 0
    # anyway, and k stays small
    u, k = _exp_poly(max(min(x, 710.0), -750.0))
    return _ldexp(u, k)


@njit(**_JIT)
def _exp_bits(x: float) -> float:
    u, k = _exp_poly(max(min(x, 710.0), -750.0))
    # 2^k as two normal powers of two (k in [-1082, 1025]): the second product rounds once, into
    # the subnormals or to inf, as IEEE multiplication does
    h = (k + 2048) >> 1                   # k // 2 + 1024, the shift of a positive number
    return u * _from_bits((h - 1) << 52) * _from_bits((k - h + 2047) << 52)


#: exp(x) for a float64 x: below 1 ulp; inf above 709.78..., 0 below -745.13..., subnormal between
exp = _exp_scalef if _SCALEF else _exp_bits

# ---- log (fdlibm e_log.c) -------------------------------------------------------------------------
_LN2_HI = 6.93147180369123816490e-01   # 3fe62e42 fee00000: k * _LN2_HI exact for |k| < 2^11
_LN2_LO = 1.90821492927058770002e-10   # 3dea39ef 35793c76
_LG1 = 6.666666666666735130e-01
_LG2 = 3.999999999940941908e-01
_LG3 = 2.857142874366239149e-01
_LG4 = 2.222219843214978396e-01
_LG5 = 1.818357216161805012e-01
_LG6 = 1.531383769920937332e-01
_LG7 = 1.479819860511658591e-01
_TWO54 = 18014398509481984.0
_MIN_NORMAL = 2.2250738585072014e-308


@njit(**_JIT)
def _log_reduced(y: float, k: int) -> float:
    """log(y) + k ln2 for a positive normal finite y."""
    # 1 + f in [sqrt(2)/2, sqrt(2)): move the mantissa's bits so the exponent steps at sqrt(2)/2
    ix = _bits(y) + (0x3ff0000000000000 - 0x3fe6a09e00000000)
    k = k + (ix >> 52) - 1023
    f = _from_bits((ix & 0x000fffffffffffff) + 0x3fe6a09e00000000) - 1.0
    dk = _from_bits(k + _SHIFT_BITS) - _SHIFT     # float(k), exact, without a conversion
    # fdlibm's log(1 + f) = f - (hfsq - s (hfsq + R)) with hfsq = f^2/2, computed doubled (f^2 and
    # 2R: the same roundings, bit for bit, one multiplication fewer)
    f2 = f * f
    s = f / (2.0 + f)
    z = s * s
    w = z * z                                  # 2R(z) in fdlibm's two halves (two short chains)
    r2 = _fma(w, _fma(w, _fma(w, 2 * _LG6, 2 * _LG4), 2 * _LG2),
              z * _fma(w, _fma(w, _fma(w, 2 * _LG7, 2 * _LG5), 2 * _LG3), 2 * _LG1))
    return _fma(dk, _LN2_HI, -(0.5 * (f2 - _fma(s, f2 + r2, dk * (2 * _LN2_LO))) - f))


@njit(**_JIT)
def log_normal(x: float) -> float:
    """log(x) for a positive normal finite x (below 1 ulp); :func:`log_outside` says where not."""
    return _log_reduced(x, 0)


@intrinsic
def _ult(typingctx: Any, a: Any, b: Any) -> Any:
    """``a < b`` with both int64 read as unsigned (one comparison for a range test)."""
    if not (isinstance(a, types.Integer) and isinstance(b, types.Integer)):
        return None

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        a64 = context.cast(builder, args[0], sig.args[0], types.int64)
        b64 = context.cast(builder, args[1], sig.args[1], types.int64)
        return builder.icmp_unsigned("<", a64, b64)
    return types.boolean(a, b), codegen


@njit(**_JIT)
def log_outside(x: float) -> bool:
    """Whether x is not a positive normal finite number (:func:`log_normal` does not hold)."""
    return not _ult(_bits(x) - 0x0010000000000000, 0x7fe0000000000000)


@njit(**_JIT)
def log(x: float) -> float:
    """log(x) for every float64 x (below 1 ulp): -inf at ±0, NaN below 0 and at NaN, inf at inf."""
    tiny = x < _MIN_NORMAL                     # subnormal: scaled into the normal range first
    res = _log_reduced(x * _TWO54 if tiny else x, -54 if tiny else 0)
    res = res if x < np.inf else x             # inf and NaN: themselves
    if not x > 0.0:                            # ±0: -inf; below 0: NaN
        res = -np.inf if x == 0.0 else np.nan
    return res


# ---- sin, cos (FreeBSD k_sin.c / k_cos.c) -------------------------------------------------------
_INV_PIO2 = 6.36619772367581382433e-01   # 2/pi
_PIO2_A = 1.5707963267948966             # pi/2 rounded to a double (0x1.921fb54442d18p+0)
_PIO2_B = 6.123233995736766e-17          # pi/2 - _PIO2_A, rounded
_PIO2_C = -1.4973849048591698e-33        # pi/2 - _PIO2_A - _PIO2_B, rounded (the rest is 5.6e-50)
_S1 = -1.66666666666666324348e-01
_S2 = 8.33333333332248946124e-03
_S3 = -1.98412698298579493134e-04
_S4 = 2.75573137070700676789e-06
_S5 = -2.50507602534068634195e-08
_S6 = 1.58969099521155010221e-10
_C1 = 4.16666666666666019037e-02
_C2 = -1.38888888888741095749e-03
_C3 = 2.48015872894767294178e-05
_C4 = -2.75573143513906633035e-07
_C5 = 2.08757232129817482790e-09
_C6 = -1.13596475577881948265e-11
#: the largest |x| the reduction below is exact enough for (2^20 pi/2: n has at most 20 bits)
TRIG_MAX = 1647099.3291652855


#: ``a * b + c`` rounded once (``llvm.fma``: the FMA instruction; a libm call on a CPU without)
_fma_exact = _multiply_add("llvm.fma.f64", "a * b + c rounded once")


@njit(**_JIT)
def sincos(x: float) -> tuple[float, float]:
    """(sin x, cos x) for |x| <= :data:`TRIG_MAX`; NaN at ±inf and NaN; ±0 and subnormals: (x, 1)."""
    t = _fma(x, _INV_PIO2, _SHIFT)
    fn = t - _SHIFT                            # n = rint(x 2/pi); its low bits in t's: the quadrant
    n = _bits(t)
    # r + rl = x - n pi/2 to about 2^-100 relative: a is exact (n has at most 20 bits, and the
    # difference is a multiple of x's or pi/2's last bit below 1); b's rounding error is recovered
    # exactly where |a| >= 2^-32 (then a - b is exact, by Sterbenz); below, x is within 1e-9 of a
    # multiple of pi/2, b = a - n B is exact or nearly, and the error is left out
    a = _fma_exact(-fn, _PIO2_A, x)
    r = _fma_exact(-fn, _PIO2_B, a)
    rl = _fma_exact(-fn, _PIO2_B, a - r) if abs(a) >= 2.3283064365386963e-10 else 0.0
    rl = _fma(-fn, _PIO2_C, rl)
    z = r * r
    ps = _fma(z, _S6, _S5)
    ps = _fma(z, ps, _S4)
    ps = _fma(z, ps, _S3)
    ps = _fma(z, ps, _S2)
    ps = _fma(z, ps, _S1)
    ks = r + _fma(z * r, ps, rl)               # k_sin(r, rl): r + (r^3 (S1 + z S2 + ...) + rl)
    pc = _fma(z, _C6, _C5)
    pc = _fma(z, pc, _C4)
    pc = _fma(z, pc, _C3)
    pc = _fma(z, pc, _C2)
    pc = _fma(z, pc, _C1)
    hz = 0.5 * z
    w = 1.0 - hz
    # k_cos(r, rl): 1 - z/2 + z^2 (C1 + ...) - r rl, with the rounding error of 1 - z/2 kept
    kc = w + (((1.0 - w) - hz) + _fma(-r, rl, z * (z * pc)))
    ks = math.copysign(ks, r)                  # sin(-0) is -0
    odd = (n & 1) != 0
    s = kc if odd else ks
    c = ks if odd else kc
    s = -s if (n & 2) != 0 else s
    c = -c if ((n + 1) & 2) != 0 else c
    return s, c


@njit(**_JIT)
def trig_outside(x: float) -> bool:
    """Whether :func:`sincos` does not hold at x (beyond :data:`TRIG_MAX`, or inf: libm's then)."""
    return abs(x) > TRIG_MAX


@njit(**_JIT)
def sin(x: float) -> float:
    """sin(x) for |x| <= :data:`TRIG_MAX` (below 1 ulp)."""
    return sincos(x)[0]


@njit(**_JIT)
def cos(x: float) -> float:
    """cos(x) for |x| <= :data:`TRIG_MAX` (below 1 ulp)."""
    return sincos(x)[1]


@njit(error_model="numpy")
def sincos_exact(x: float) -> tuple[float, float]:
    """(sin x, cos x) for every x: libm's beyond :data:`TRIG_MAX` (a branch: not for the vectorized loops)."""
    return (math.sin(x), math.cos(x)) if abs(x) > TRIG_MAX else sincos(x)


@njit(error_model="numpy")
def sin_exact(x: float) -> float:
    """sin(x) for every x: libm's beyond :data:`TRIG_MAX` (a branch: not for the vectorized loops)."""
    return math.sin(x) if abs(x) > TRIG_MAX else sincos(x)[0]


@njit(error_model="numpy")
def cos_exact(x: float) -> float:
    """cos(x) for every x: libm's beyond :data:`TRIG_MAX`."""
    return math.cos(x) if abs(x) > TRIG_MAX else sincos(x)[1]

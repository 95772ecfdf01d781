"""The fused loops' runtime: numba, the transcendental functions, and kernels cached on disk.

**exp, log, sin, cos.** numba compiles ``np.exp(x[i])`` in a loop to one scalar libm call per
element (its SVML route needs an LLVM patch that numba 0.62+ no longer carries), while NumPy's own
loops are SIMD. The fused loops compute ``exp``, ``log``, ``sin`` and ``cos`` with the inline
functions of :mod:`.inline_math` (:data:`INLINE_UFUNCS`): scalar code LLVM vectorizes with the loop
around it, so they cost a few vector instructions beside the loop's other arithmetic, and no pass
over memory. Some (:data:`GUARDED`) hold on the usual part of their domain only (``sin`` and ``cos``
for ``|x| <= 2^20 pi/2``, ``log`` for positive normal numbers): a loop counts the arguments outside,
and where there is one it runs again with the functions that hold everywhere (libm's ``sin`` and
``cos`` beyond that range; ``log`` with its subnormals, zeros, negatives, inf and NaN).
Chosen over libmvec by measurement (``bench/README.md``); :func:`libmvec_only` lowers programs the
old way, for measuring one against the other.

**libmvec** is the vector math library of every x86-64 Linux (the functions GCC calls under
``-ftree-loop-vectorize -ffast-math``; derived from Intel's SVML, at most 4 ulp, special values per
C99): :func:`vector_function` returns a numba intrinsic that calls its 8-lane (AVX-512), 4-lane
(AVX2) or 2-lane (SSE2) variant over a block, so a fused loop evaluates the other transcendentals
(``tan``, ``expm1``, ``arctan2``, ...) in register-sized chunks without a pass over memory. Where
libmvec or a function is missing, :data:`VECTOR_UFUNCS` lacks the function and the fused back end
calls NumPy instead.

**Cached kernels.** :func:`kernel` writes a kernel's source to a file named by its hash in the
cache folder (``$CHAINRULE_CACHE_DIR``, else ``$XDG_CACHE_HOME/chainrule``, else
``~/.cache/chainrule``) and compiles it with ``numba.njit(cache=True)``: a second process loads the
machine code numba stored beside it instead of compiling again.
"""

from __future__ import annotations

import functools
import hashlib
import os
import platform
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

#: NumPy ufunc -> libmvec function (one argument)
_UNARY = {"exp": "exp", "log": "log", "sin": "sin", "cos": "cos", "tan": "tan", "arcsin": "asin",
          "arccos": "acos", "arctan": "atan", "sinh": "sinh", "cosh": "cosh", "tanh": "tanh",
          "arcsinh": "asinh", "arccosh": "acosh", "arctanh": "atanh", "exp2": "exp2", "expm1": "expm1",
          "log2": "log2", "log10": "log10", "log1p": "log1p", "cbrt": "cbrt"}
#: NumPy ufunc -> libmvec function (two arguments)
_BINARY = {"power": "pow", "arctan2": "atan2", "hypot": "hypot"}
#: the variants: ISA letter, lanes, and the CPU feature the caller needs for its vector ABI
_VARIANTS = (("e", 8, "avx512f"), ("d", 4, "avx2"), ("b", 2, None))

_lock = threading.RLock()
_numba: Any = None
_libmvec: Any = None
_variant: tuple[str, int] | None = None
#: ufunc name -> (libmvec symbol, lanes, arity) for the functions vectorized here
VECTOR_UFUNCS: dict[str, tuple[str, int, int]] = {}
#: ufuncs computed in the loops by :mod:`.inline_math` (ufunc -> its function there)
INLINE_UFUNCS: dict[str, str] = {}
#: those whose inline form holds on part of the domain only: ufunc -> (the function that says where
#: it does not, the function that holds everywhere)
GUARDED: dict[str, tuple[str, str]] = {"sin": ("trig_outside", "sin_exact"), "cos": ("trig_outside", "cos_exact"),
                                       "log": ("log_outside", "log")}
#: what :mod:`.inline_math` provides, installed into INLINE_UFUNCS when numba loads
_INLINE = {"exp": "exp", "log": "log_normal", "sin": "sin", "cos": "cos"}
_variant_name = ""
_intrinsics: dict[str, Any] = {}
_kernels: dict[str, Callable[..., None]] = {}


@functools.lru_cache(maxsize=1)
def _runtime_hash() -> str:
    """A hash of this module and of :mod:`.inline_math` (numba's cache does not follow the functions
    a kernel inlines): cached kernels are compiled anew when the runtime they call changes."""
    h = hashlib.sha256()
    for path in (__file__, os.path.join(os.path.dirname(__file__), "inline_math.py")):
        with open(path, "rb") as fh:
            h.update(fh.read())
    return h.hexdigest()[:16]


def available() -> bool:
    """Whether numba can be imported (imported once, on the first large fusable program); the
    vector functions are set up at the same time."""
    global _numba
    if _numba is None:
        with _lock:
            if _numba is None:
                try:
                    import numba
                except ImportError:
                    _numba = False
                else:
                    _setup_libmvec(numba)
                    _setup_inline()
                    _numba = numba
    return _numba is not False


def _setup_libmvec(numba: Any) -> None:
    """Load libmvec into the process (numba's JIT links against it) and list its functions."""
    global _libmvec, _variant
    import ctypes
    import ctypes.util

    if platform.machine() not in ("x86_64", "AMD64") or not sys.platform.startswith("linux"):
        return
    path = ctypes.util.find_library("mvec") or "libmvec.so.1"
    try:
        lib = ctypes.CDLL(path)
        import llvmlite.binding as llvm

        llvm.load_library_permanently(path)
    except OSError:
        return
    _libmvec = lib
    # the vector ABI of the wider variants needs the caller compiled with those registers: the
    # CPU numba compiles for (the host's, unless NUMBA_CPU_NAME names another)
    if numba.config.CPU_NAME or numba.config.CPU_FEATURES:
        features = set()
    else:
        import llvmlite.binding as llvm

        features = {f[1:] for f in llvm.get_host_cpu_features().flatten().split(",") if f.startswith("+")}
    for letter, lanes, need in _VARIANTS:
        if need is None or need in features:
            _variant = (letter, lanes)
            break
    assert _variant is not None
    letter, lanes = _variant
    for table, arity in ((_UNARY, 1), (_BINARY, 2)):
        for ufunc, name in table.items():
            sym = f"_ZGV{letter}N{lanes}{'v' * arity}_{name}"
            if hasattr(lib, sym):
                VECTOR_UFUNCS[ufunc] = (sym, lanes, arity)


def _setup_inline() -> None:
    """Install the inline functions (where :mod:`.inline_math` loads: it needs numba's intrinsics)."""
    global _variant_name
    try:
        from . import inline_math
    except ImportError:   # an llvmlite or numba without what it uses: libmvec (or NumPy) computes them
        return
    _variant_name = inline_math.VARIANT
    INLINE_UFUNCS.update(_INLINE)


@contextmanager
def libmvec_only() -> Iterator[None]:
    """Programs lowered inside compute every transcendental with libmvec (or NumPy where it lacks
    one), as before :mod:`.inline_math`: for measuring one against the other in the same process."""
    saved = dict(INLINE_UFUNCS)
    INLINE_UFUNCS.clear()
    try:
        yield
    finally:
        INLINE_UFUNCS.update(saved)


def vector_function(symbol: str, lanes: int, arity: int, negate: bool = False) -> Any:
    """A numba intrinsic ``f(x, [y,] out, m)``: ``out[k] = symbol(x[k], y[k])`` for ``k < m``, over
    contiguous float64 arrays (``y`` may be a number), calling the libmvec ``symbol`` on ``lanes``
    elements at a time; a last partial chunk goes through a padded vector on the stack. ``negate``
    (one argument): ``symbol(-x[k])``, the negation done in registers (``exp(-x)`` of a sigmoid)."""
    key = symbol + ("_neg" if negate else "")
    with _lock:
        if key in _intrinsics:
            return _intrinsics[key]
        from llvmlite import ir
        from numba import types
        from numba.core import cgutils
        from numba.extending import intrinsic

        def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
            dbl = ir.DoubleType()
            i64 = ir.IntType(64)
            vty = ir.VectorType(dbl, lanes)
            fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vty, [vty] * arity), symbol)
            m = args[-1]
            if sig.args[-1] != types.int64:
                m = context.cast(builder, m, sig.args[-1], types.int64)
            srcs = []   # (pointer, None) for an array operand, (None, splat vector) for a number
            for ty, v in zip(sig.args[:arity], args[:arity]):
                if isinstance(ty, types.Array):
                    srcs.append((context.make_array(ty)(context, builder, v).data, None))
                else:
                    x = context.cast(builder, v, ty, types.float64)
                    vec = ir.Constant(vty, ir.Undefined)
                    for k in range(lanes):
                        vec = builder.insert_element(vec, x, i64(k))
                    srcs.append((None, vec))
            dst = context.make_array(sig.args[arity])(context, builder, args[arity]).data
            full = builder.mul(builder.sdiv(m, i64(lanes)), i64(lanes))

            def vptr(p: Any, k: Any) -> Any:
                return builder.bitcast(builder.gep(p, [k]), vty.as_pointer())

            def operands(loaded: list[Any]) -> list[Any]:
                return [builder.fneg(v) for v in loaded] if negate else loaded

            with cgutils.for_range_slice(builder, i64(0), full, i64(lanes)) as (k, _):
                ops = [builder.load(vptr(p, k), align=8) if p is not None else vec for p, vec in srcs]
                builder.store(builder.call(fn, operands(ops)), vptr(dst, k), align=8)
            rest = builder.sub(m, full)
            with builder.if_then(builder.icmp_signed(">", rest, i64(0)), likely=False):
                tmps = []
                for p, _ in srcs:
                    if p is None:
                        tmps.append(None)
                        continue
                    tmp = cgutils.alloca_once(builder, vty)
                    builder.store(ir.Constant(vty, [1.0] * lanes), tmp)   # harmless lanes past the end
                    tp = builder.bitcast(tmp, dbl.as_pointer())
                    with cgutils.for_range(builder, rest) as loop:
                        k = builder.add(full, loop.index)
                        builder.store(builder.load(builder.gep(p, [k])), builder.gep(tp, [loop.index]))
                    tmps.append(tmp)
                ops = [builder.load(t) if t is not None else vec for t, (_, vec) in zip(tmps, srcs)]
                res = cgutils.alloca_once(builder, vty)
                builder.store(builder.call(fn, operands(ops)), res)
                rp = builder.bitcast(res, dbl.as_pointer())
                with cgutils.for_range(builder, rest) as loop:
                    k = builder.add(full, loop.index)
                    builder.store(builder.load(builder.gep(rp, [loop.index])), builder.gep(dst, [k]))
            return context.get_dummy_value()

        def typer(typingctx: Any, *args: Any) -> Any:
            operands, out, m = args[:arity], args[arity], args[arity + 1]
            ok = all((isinstance(a, types.Array) and a.dtype == types.float64 and a.ndim == 1)
                     or isinstance(a, (types.Float, types.Integer)) for a in operands)
            if ok and isinstance(out, types.Array) and out.dtype == types.float64 and isinstance(m, types.Integer):
                return types.void(*args), codegen
            return None

        if arity == 1:
            def unary(typingctx: Any, x: Any, out: Any, m: Any) -> Any:
                return typer(typingctx, x, out, m)
            f = intrinsic(unary)
        else:
            def binary(typingctx: Any, x: Any, y: Any, out: Any, m: Any) -> Any:
                return typer(typingctx, x, y, out, m)
            f = intrinsic(binary)
        _intrinsics[key] = f
        return f


def cache_dir() -> str | None:
    """The folder kernels are cached in (made if missing), or None where none can be written."""
    base = os.environ.get("CHAINRULE_CACHE_DIR")
    if not base:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        base = os.path.join(xdg, "chainrule")
    path = os.path.join(base, "kernels")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError:
        return None
    return path if os.access(path, os.W_OK) else None


def kernel_file_text(body: str, functions: list[str]) -> str:
    """The module a kernel is compiled from: the functions it calls (``_name``: :mod:`.inline_math`'s
    ``name``; else a libmvec symbol, with ``_neg`` where it negates its argument), then its source."""
    lines = ["# generated by chainrule.compile (a fused loop of one compiled program); numba caches its",
             f"# machine code beside this file. runtime {_runtime_hash()} {_variant_name}",
             "import numpy as np",
             "from numba import njit",
             "from chainrule.compile.vecmath import vector_function", ""]
    for name in functions:
        if name.startswith("_") and not name.startswith("_ZGV"):
            lines.append(f"from chainrule.compile.inline_math import {name[1:]} as {name}")
            continue
        sym = name.removesuffix("_neg")
        _, lanes, arity = next(v for v in VECTOR_UFUNCS.values() if v[0] == sym)
        lines.append(f"{name} = vector_function({sym!r}, {lanes}, {arity}{', True' if name != sym else ''})")
    lines += ["", "", "@njit(error_model='numpy', nogil=True, cache=CACHE)", body]
    return "\n".join(lines)


def kernel(body: str, functions: list[str]) -> Callable[..., None]:
    """The compiled kernel ``_kernel`` of ``body`` (calling ``functions``), compiled once
    per process and cached on disk across processes (in memory only where no cache folder can be
    written)."""
    import importlib.util
    import tempfile

    text = kernel_file_text(body, functions)
    with _lock:
        k = _kernels.get(text)
        if k is not None:
            return k
        folder = cache_dir()
        digest = hashlib.sha256(text.encode()).hexdigest()[:24]
        name = f"chainrule_kernel_{digest}"
        namespace: dict[str, Any] | None = None
        if folder is not None:
            path = os.path.join(folder, f"k_{digest}.py")
            try:
                if not _same_text(path, text):
                    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
                    with os.fdopen(fd, "w") as fh:
                        fh.write(text)
                    os.replace(tmp, path)
                    prune_cache(keep=digest)
                _mark_used(folder, digest)
                module = sys.modules.get(name)
                if module is None:   # numba's cache finds a kernel's globals by its module's name
                    spec = importlib.util.spec_from_file_location(name, path)
                    assert spec is not None and spec.loader is not None
                    module = importlib.util.module_from_spec(spec)
                    module.CACHE = True  # type: ignore[attr-defined]
                    sys.modules[name] = module
                    try:
                        spec.loader.exec_module(module)
                    except BaseException:
                        del sys.modules[name]
                        raise
                namespace = vars(module)
            except (OSError, RuntimeError):
                # the folder changed under us (another process pruned or cleared it): compile in memory.
                # numba raises RuntimeError ("no locator available") when the file goes after its
                # source was read; a real fault in the text raises again from the in-memory compile
                namespace = None
        if namespace is None:
            namespace = {"CACHE": False}
            exec(compile(text, f"<chainrule kernel {digest}>", "exec"), namespace)  # noqa: S102 - generated
        k = namespace["_kernel"]
        _kernels[text] = k
        return k


#: the kernel cache's default size limit, in MiB (``CHAINRULE_CACHE_MAX_MB`` sets another)
CACHE_MAX_MB = 256
#: a kernel's last use is the time of this file beside it (numba keys its cache on the kernel
#: file's own time, so that one is never touched)
_USED = ".used"


def cache_limit() -> int:
    """The kernel cache's size limit in bytes: ``$CHAINRULE_CACHE_MAX_MB`` MiB, else :data:`CACHE_MAX_MB`
    (a value that is not a size is said once, in a warning, and the default used)."""
    raw = os.environ.get("CHAINRULE_CACHE_MAX_MB", "").strip()
    try:
        mb = float(raw) if raw else float(CACHE_MAX_MB)
    except ValueError:
        mb = float("nan")
    if not 0 <= mb < float("inf"):
        _warn_limit(raw)
        mb = CACHE_MAX_MB
    return int(mb * (1 << 20))


@functools.cache
def _warn_limit(raw: str) -> None:
    import warnings

    warnings.warn(f"CHAINRULE_CACHE_MAX_MB={raw!r} is not a size in MiB (0 or more): the kernel cache keeps "
                  f"{CACHE_MAX_MB} MiB", RuntimeWarning, stacklevel=3)


def _mark_used(folder: str, digest: str) -> None:
    marker = os.path.join(folder, f"k_{digest}{_USED}")
    try:
        with open(marker, "a"):
            pass
        os.utime(marker)
    except OSError:
        pass


def _kernel_files(folder: str) -> dict[str, tuple[float, int, list[str]]]:
    """digest -> (last use, bytes, paths) for every kernel in ``folder``, numba's files included;
    temporary files left by an interrupted write an hour ago or more count as one more entry."""
    import time

    groups: dict[str, list[Any]] = {}
    now = time.time()
    for d in (folder, os.path.join(folder, "__pycache__")):
        try:
            entries = list(os.scandir(d))
        except OSError:
            continue
        for e in entries:
            try:
                st = e.stat()
            except OSError:
                continue
            if e.name.startswith("k_") and e.is_file():
                digest = e.name[2:].split(".", 1)[0]
                g = groups.setdefault(digest, [0.0, 0, [], 0.0])
                if d == folder and e.name.endswith(_USED):
                    g[0] = st.st_mtime
                elif d == folder and e.name.endswith(".py"):
                    g[3] = st.st_mtime   # the last use where no marker says it (written, never loaded)
                g[1] += st.st_size
                g[2].append(e.path)
            elif e.name.endswith(".tmp") and d == folder and now - st.st_mtime > 3600:
                g = groups.setdefault("~" + e.name, [0.0, 0, [], 0.0])
                g[1] += st.st_size
                g[2].append(e.path)
    return {k: (v[0] or v[3], v[1], v[2]) for k, v in groups.items()}


def cache_usage() -> tuple[str | None, int, int]:
    """(the kernel cache folder or None, how many kernels it holds, their size in bytes)."""
    folder = cache_dir()
    if folder is None:
        return None, 0, 0
    files = _kernel_files(folder)
    return folder, _count(files), sum(v[1] for v in files.values())


def _count(files: dict[str, tuple[float, int, list[str]]]) -> int:
    """How many kernels ``files`` holds (a kernel has its source; a lone marker or temporary is not one)."""
    return sum(1 for k, (_, _, paths) in files.items()
               if not k.startswith("~") and any(p.endswith(".py") for p in paths))


def _remove(paths: list[str]) -> int:
    freed = 0
    for p in sorted(paths, key=lambda p: not p.endswith(".py")):   # the kernel's source first
        try:
            size = os.stat(p).st_size
            os.remove(p)
            freed += size
        except OSError:   # removed meanwhile by another process
            pass
    return freed


def prune_cache(limit: int | None = None, keep: str = "") -> tuple[int, int]:
    """Keep the kernel cache under ``limit`` bytes (default :func:`cache_limit`): past it, the kernels
    used longest ago are removed until it is under three quarters of the limit (each new kernel
    does not prune again). Kernels of an older chainrule are never used again and go first.
    Returns (kernels removed, bytes freed)."""
    folder = cache_dir()
    if folder is None:
        return 0, 0
    limit = cache_limit() if limit is None else limit
    files = _kernel_files(folder)
    total = sum(v[1] for v in files.values())
    if total <= limit:
        return 0, 0
    removed = freed = 0
    for digest, (_, _, paths) in sorted(files.items(), key=lambda kv: kv[1][0]):
        if total - freed <= limit * 3 // 4:
            break
        if digest == keep:
            continue
        freed += _remove(paths)
        removed += _count({digest: (0.0, 0, paths)})
    return removed, freed


def clear_cache() -> tuple[int, int]:
    """Remove every cached kernel (they compile again when next used). Returns (kernels, bytes)."""
    folder = cache_dir()
    if folder is None:
        return 0, 0
    files = _kernel_files(folder)
    freed = sum(_remove(paths) for _, _, paths in files.values())
    return _count(files), freed


def _same_text(path: str, text: str) -> bool:
    try:
        with open(path) as fh:
            return fh.read() == text
    except OSError:
        return False

"""The public ``cr.compile``: the signature cache, specialization, and the validation probes.

``compile(f, argnums)`` is ``value_and_grad(f, argnums)`` as generated, compiled code. Each new
input signature (shapes, dtypes; integer arrays by value) is traced once through the eager engine,
its program (the one ``Graph.to_source`` prints) lowered by :mod:`.pipeline`, and the new code is
checked on moved inputs against the engine before it is cached (a trace records array operations
only: a Python ``if`` on values would be frozen into it). Later calls with the same signature go
straight to the cached function.
"""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..codegen import Program, build_program
from .backends import BACKENDS
from .pipeline import lower

__all__ = ["compile", "Compiled"]

#: the names generated code uses for itself besides ``np`` (which every program keeps free): its
#: temporaries ``r1``, outputs ``o0``, buffers, kernels and runners ``_b0``, ``_k0``, ``_run``...; a
#: value of ``f`` named so is renamed
_GENERATED_NAME = re.compile(r"_.*|[ro]\d+").fullmatch


@dataclass(frozen=True)
class _Static:
    """An integer or boolean array argument (labels, indices, masks): compiled by value."""

    value: np.ndarray


@dataclass
class _Specialization:
    fn: Callable[..., tuple[Any, ...]]
    source: str
    program: Program
    backend: str
    #: whether ``fn`` takes ``_cr_out=`` (the arrays to write the results into)
    writes_out: bool = False
    #: the results' (shape, dtype), known after the first call
    meta: list[tuple[tuple[int, ...], np.dtype]] | None = None


class Compiled:
    """A compiled ``value_and_grad``: ``fast(*args) -> (out, grads)``, specialized per input signature.

    ``fast.source`` is the code that runs for the latest signature, ``fast.program_source`` the
    readable combined function it was lowered from (the same text ``Graph.to_source`` prints).
    Not reentrant across threads (the buffers of one signature are shared by its calls).
    """

    def __init__(self, f: Callable[..., Any], argnums: int | Sequence[int] = 0, backend: str = "auto") -> None:
        from ..autodiff import _argnums

        if not callable(f):
            raise TypeError(f"compile needs a function, not {type(f).__name__}")
        if backend not in BACKENDS:
            raise ValueError(f"compile: backend must be one of {', '.join(map(repr, BACKENDS))}, not {backend!r}")
        self.f = f
        self.nums, self.single = _argnums(argnums)
        self.backend = backend
        self._cache: dict[Any, _Specialization] = {}
        #: positions of float arguments compiled by value (see ``_slow_call``)
        self._by_value: set[int] = set()
        #: the same specializations for calls whose arguments are all float arrays or tensors, keyed
        #: without the integer arrays' values (cheaper to look up at N = 1)
        self._float_cache: dict[Any, _Specialization] = {}
        self._last: _Specialization | None = None
        functools.update_wrapper(self, f)  # type: ignore[arg-type]

    @property
    def source(self) -> str:
        """The code that runs for the latest input signature (call the function once first)."""
        if self._last is None:
            raise RuntimeError("compile: call the function once; it is traced and compiled on its first call")
        return self._last.source

    @property
    def program_source(self) -> str:
        """The readable combined forward+backward function of the latest input signature."""
        if self._last is None:
            raise RuntimeError("compile: call the function once; it is traced and compiled on its first call")
        return self._last.program.source(getattr(self.f, "__name__", "f").replace("<lambda>", "f"))

    @property
    def backend_used(self) -> str:
        """The backend that runs the latest input signature: ``"numba"`` (fused loops), ``"numpy"``
        or ``"numexpr"``; small, non-elementwise or non-float64 programs run as NumPy code."""
        if self._last is None:
            raise RuntimeError("compile: call the function once; it is traced and compiled on its first call")
        return self._last.backend

    @property
    def signatures(self) -> int:
        """How many input signatures (shapes, dtypes, static arguments) have been compiled."""
        return len({id(s.program) for s in self._cache.values()})  # Tensor calls share their arrays' code

    def __call__(self, *args: Any, out: Any = None, **kwargs: Any) -> tuple[Any, Any]:
        """``(out, grads)`` at ``args``. ``out=(out, grads)``, arrays shaped like the results, makes
        the call write its results into them (and return them) instead of allocating new ones."""
        spec = None
        # out= is checked first: a wrong one (f's own argument named out, given by name) is named
        # before a new signature is traced, not found by f failing inside the trace
        dests = None if out is None else self._destinations(out)
        if not kwargs:
            try:
                # float arrays only (the usual call): type, shape and dtype name the code
                spec = self._float_cache.get(tuple([(type(a), a.shape, a.dtype) for a in args]))
                if spec is None:
                    spec = self._cache.get(tuple([(type(a), a.shape, a.dtype,
                                                   a.tobytes() if a.dtype.kind in "biu" else None) for a in args]))
            except AttributeError:   # a number among the arguments
                pass
        if spec is None:
            prepared = self._slow_call(args, kwargs, out)
            if not isinstance(prepared[0], _Specialization):   # another array library's answer
                return prepared
            spec, args = prepared
        res = spec.fn(*args) if dests is None else self._into(spec, args, dests)
        return (res[0], res[1]) if self.single else (res[0], res[1:])

    def _into(self, spec: _Specialization, args: Sequence[Any], dests: list[np.ndarray]) -> tuple[np.ndarray, ...]:
        """Run ``spec`` with its results written into ``dests``, the arrays of ``out=`` (checked
        against the results' shapes and dtypes). The fused loops write there directly; other code, or
        destinations that are not C-contiguous or that share memory with an argument, get the
        results copied in (so ``out`` may be an input, as with NumPy's ``out=``)."""
        from ..tensor import Tensor

        res = None
        if spec.meta is None:
            res = spec.fn(*args)
            spec.meta = [(np.shape(r), np.asarray(r).dtype) for r in res]
        what = ["the output", *(["the gradient"] if self.single else
                                [f"the gradient for argument {i}" for i in self.nums])]
        if len(dests) != len(spec.meta):
            raise ValueError(f"compile: out= holds {len(dests)} arrays; the call returns {len(spec.meta)}")
        for k, (d, (shape, dtype)) in enumerate(zip(dests, spec.meta)):
            if d.shape != shape or d.dtype.newbyteorder("=") != dtype:   # either byte order, as NumPy's out=
                raise ValueError(f"compile: out= array {k} has shape {d.shape} and dtype {d.dtype}; {what[k]} "
                                 f"has shape {shape} and dtype {dtype}")
            for j in range(k):
                if _overlap(d, dests[j]):
                    raise ValueError(f"compile: out= arrays {j} and {k} share memory: each result needs its own")
        inputs = [a.data if isinstance(a, Tensor) else a for a in args]
        direct = (res is None and spec.writes_out
                  and all(d.flags.c_contiguous and d.flags.aligned and d.dtype == m[1]
                          for d, m in zip(dests, spec.meta))
                  and not any(isinstance(a, np.ndarray) and _overlap(d, a) for d in dests for a in inputs))
        if direct:
            spec.fn(*args, _cr_out=tuple(dests))
        else:
            for d, r in zip(dests, res if res is not None else spec.fn(*args)):
                np.copyto(d, r)
        return tuple(dests)

    def _destinations(self, out: Any) -> list[np.ndarray]:
        """The arrays of ``out=(out, grads)``, in result order, each a writeable ndarray."""
        name = getattr(self.f, "__name__", "f")
        shape_text = "(out, grad)" if self.single else f"(out, ({', '.join('grad' for _ in self.nums)}))"
        usage = (f"compile: out= takes arrays to write the results into, shaped like the result {shape_text} "
                 f"(an argument of {name}'s own that is named out goes by position)")
        if not isinstance(out, (tuple, list)) or len(out) != 2:
            raise TypeError(usage)
        grads = out[1]
        if self.single:
            grads = [grads]
        elif not isinstance(grads, (tuple, list)) or len(grads) != len(self.nums):
            raise TypeError(usage)
        dests = [out[0], *grads]
        for k, d in enumerate(dests):
            if not isinstance(d, np.ndarray):
                raise TypeError(f"{usage}; array {k} is a {type(d).__name__}, not a NumPy array")
            if not d.flags.writeable:
                raise ValueError(f"compile: out= array {k} is read-only")
        return dests

    def _slow_call(self, args: tuple[Any, ...], kwargs: dict[str, Any],
                   out: Any = None) -> tuple[Any, ...]:
        """(the specialization for these arguments, the arrays it is called with), compiling it on
        the first call; for another array library than NumPy, its ``(out, grads)``."""
        from .. import compile_libraries
        from ..autodiff import as_float_array
        from ..tensor import Tensor

        lib = None if kwargs else compile_libraries.library_of_args(args)
        if lib is not None:  # another array library than NumPy (Dask: the kernel per chunk; see there)
            if out is not None:
                raise TypeError(f"compile: out= takes NumPy arrays; these arguments are {lib.name} arrays")
            return compile_libraries.call(self, args, lib)

        if kwargs:
            try:
                bound = inspect.signature(self.f).bind(*args, **kwargs)
            except TypeError as e:
                raise TypeError(f"compile: the arguments do not fit {getattr(self.f, '__name__', 'f')}: {e}") \
                    from None
            args = bound.args
            if bound.kwargs:
                raise TypeError("compile: pass keyword-only arguments positionally")
        n = len(args)
        nums = tuple(i % n if -n <= i < n else i for i in self.nums)
        for i in nums:
            if not 0 <= i < n:
                raise ValueError(f"argnums names argument {i}, but the function was called with {n} positional "
                                 f"argument{'s' if n != 1 else ''}")
        conv: list[Any] = []
        key: list[Any] = []
        unwrapped = True   # every array argument is an ndarray or a Tensor's own .data, unconverted
        for i, a in enumerate(args):
            orig = a
            if isinstance(a, Tensor):
                a = a.data
            elif not isinstance(a, np.ndarray):
                unwrapped = False
            if i in nums:
                a = as_float_array(a, f"argument {i}")
            elif isinstance(a, (np.ndarray, list)) and not isinstance(a, bool):
                a = np.asarray(a)
                if a.dtype.kind in "biu" or i in self._by_value:
                    # labels, indices, masks: they pick elements rather than flow through arithmetic,
                    # so the code is specialized to their values (new values compile anew); so are
                    # the orders of special functions (jn's n, betainc's a), which take no gradient
                    a = _Static(a)
                    key.append((np.ndarray, a.value.shape, a.value.dtype, a.value.tobytes()))
                    conv.append(a)
                    unwrapped = False
                    continue
            if isinstance(a, np.ndarray):
                key.append((np.ndarray, a.shape, a.dtype, None))
                unwrapped = unwrapped and (a is orig or a is getattr(orig, "data", None))
            else:
                try:
                    hash(a)
                except TypeError:
                    raise TypeError(f"compile: argument {i} ({type(a).__name__}) is neither an array nor a "
                                    "hashable constant") from None
                key.append(("static", type(a), a))
            conv.append(a)
        k = tuple(key)
        spec = self._cache.get(k)
        if spec is None:
            try:
                spec = self._specialize(conv, nums)
            except TypeError as e:
                # an input the function's gates take no gradient for (a special function's order):
                # every float argument not differentiated is compiled by value, and the call retried
                others = {i for i, a in enumerate(conv) if i not in nums and isinstance(a, np.ndarray)}
                if "has no gradient rule with respect to" not in str(e) or not others - self._by_value:
                    raise
                self._by_value |= others
                return self._slow_call(args, {}, out)   # args: every argument by position by now
            if any(isinstance(a, _Static) for a in conv):
                # called with every array argument, statics included (as the fast path does)
                keep = [j for j, a in enumerate([a for a in conv if isinstance(a, (np.ndarray, _Static))])
                        if isinstance(a, np.ndarray)]
                inner = spec.fn
                spec = _Specialization(lambda *xs, **kw: inner(*[xs[j] for j in keep], **kw), spec.source,
                                       spec.program, spec.backend, spec.writes_out)
            self._cache[k] = spec
        self._last = spec
        if unwrapped and not kwargs and any(isinstance(a, Tensor) for a in args):
            # the same code, for calls with these Tensors (parameters) again: unwrap their .data
            fn = spec.fn

            def on_tensors(*targs: Any, **kw: Any) -> tuple[Any, ...]:
                return fn(*[a.data if isinstance(a, Tensor) else a for a in targs], **kw)

            self._cache[tuple((type(a), a.shape, a.dtype, None) for a in args)] = _Specialization(
                on_tensors, spec.source, spec.program, spec.backend, spec.writes_out)
        if unwrapped and not kwargs and all(isinstance(a, (np.ndarray, Tensor)) and a.dtype.kind in "fc"
                                            for a in args):
            self._float_cache[tuple((type(a), a.shape, a.dtype) for a in args)] = (
                self._cache[tuple((type(a), a.shape, a.dtype, None) for a in args)])
        if any(isinstance(a, _Static) for a in conv):
            return spec, [a.value if isinstance(a, _Static) else a for a in conv
                          if isinstance(a, (np.ndarray, _Static))]
        return spec, [a for a in conv if isinstance(a, np.ndarray)]

    def _specialize(self, args: list[Any], nums: tuple[int, ...]) -> _Specialization:
        from ..graph import _build, _call_naming_locals
        from ..tensor import _PREVIOUS, Tensor, enable_grad, original, refuse_none

        try:
            pnames = [p.name for p in inspect.signature(self.f).parameters.values()
                      if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        except (TypeError, ValueError):
            pnames = []
        call_args: list[Any] = []
        leaves: list[Tensor] = []
        for i, a in enumerate(args):
            if isinstance(a, np.ndarray):
                name = pnames[i] if i < len(pnames) and pnames[i].isidentifier() else f"x{i + 1}"
                t = Tensor(a, requires_grad=a.dtype.kind in "fc", name=name)
                leaves.append(t)
                call_args.append(t)
            else:
                call_args.append(a.value if isinstance(a, _Static) else a)
        with enable_grad():
            out, local_names = _call_naming_locals(self.f, call_args, {})
        if _PREVIOUS:  # an input changed in place inside f: its first version is the input
            leaves = [original(t) for t in leaves]
        if not isinstance(out, Tensor):
            if isinstance(out, (tuple, list, dict)):
                raise TypeError(f"compile: {getattr(self.f, '__name__', 'f')} must return one array or tensor, "
                                f"not a {type(out).__name__}")
            refuse_none(out, self.f)
            out = Tensor(out)
        graph = _build(out, [t for t in leaves if t.requires_grad], local_names, False)
        order = [i for i, a in enumerate(args) if isinstance(a, np.ndarray)]
        input_nodes = {id(n.tensor): n for n in graph.inputs}
        wrt = [input_nodes[id(leaves[order.index(i)])].name for i in nums]
        # results never alias inputs: see the emitters
        program = build_program(graph, wrt=wrt, fold_seed=True, reserved=_GENERATED_NAME)
        # every array argument is a parameter of the generated function, in argument order, under
        # the name the program gives it (an argument named like the code's own names is renamed)
        code_name = dict(zip([id(n) for n in graph.nodes if n.kind == "input"], program.params))
        params = [code_name[id(input_nodes[id(t)])] if id(t) in input_nodes else f"_unused{j}"
                  for j, t in enumerate(leaves)]
        arrays = [a for a in args if isinstance(a, np.ndarray)]
        # the trace's values (every intermediate, at the inputs' size) are not needed past here: let
        # them go before the validation runs the function twice more
        del graph, out, local_names, call_args, input_nodes, leaves
        xp = self.__dict__.get("array_module", np)  # another NumPy-like library (see compile_libraries)
        source, fn, backend = lower(program, params, dict(zip(params, arrays)), self.backend if xp is np else "numpy",
                                    xp=xp)
        self._validate(fn, args, nums)
        code = getattr(fn, "__code__", None)
        writes_out = code is not None and "_cr_out" in code.co_varnames[:code.co_argcount]
        return _Specialization(fn, source, program, backend, writes_out)

    def _validate(self, fn: Callable[..., Any], args: list[Any], nums: tuple[int, ...]) -> None:
        """Run the new code on other inputs and compare with the eager engine.

        A trace records array operations only: an ``if`` on values, ``.data`` read in Python, or a
        boolean-mask index computed from the inputs (``a[a > 0]``, whose result's shape depends on the
        values) would be frozen into the code. (Masks used as values, ``cr.where(x > 0, ...)`` or
        ``z * (z > 0)``, are recorded as forward-only nodes and recomputed on every call.) Two probes
        move the values: the inputs' elements shuffled (each input keeps its range, so logs stay
        defined) and the inputs negated (which catches ``if x > 0`` on a scalar); entries where the
        engine's answer is not finite are not compared."""
        from .. import backend
        from ..autodiff import ArgumentChangedError, value_and_grad
        from .pipeline import on_library

        xp = self.__dict__.get("array_module", np)
        rng = np.random.default_rng(0)
        probes = [
            [rng.permutation(a.ravel()).reshape(a.shape) if isinstance(a, np.ndarray) and a.size > 1 else a
             for a in args],
            [np.asarray(-a) if isinstance(a, np.ndarray) and a.dtype.kind in "fc" else a for a in args],
        ]
        for probe in probes:
            if all(p is a for p, a in zip(probe, args)):
                continue
            plain = [a.value if isinstance(a, _Static) else a for a in probe]
            with np.errstate(all="ignore"):
                try:
                    expected = value_and_grad(self.f, argnums=nums)(*plain)
                except ArgumentChangedError:
                    raise  # f changes an argument that is not differentiated: refused as value_and_grad does
                except (ValueError, TypeError, ArithmeticError, IndexError):
                    continue  # the function is not defined there: nothing to compare
                got = fn(*[on_library(xp, a) for a in probe if isinstance(a, np.ndarray)])
                if xp is not np:
                    got = [backend.to_numpy(g) for g in got]
            out, grads = expected
            for g, e in zip(got, [out, *(grads if isinstance(grads, tuple) else (grads,))]):
                e = np.asarray(e.data if hasattr(e, "data") and not isinstance(e, np.ndarray) else e)
                e = e.astype(np.result_type(e, np.float16))
                rtol = 1e-6 if np.finfo(e.dtype).eps < 1e-10 else 1e-3  # float32 rounding is coarser
                ok = np.isfinite(e)  # where the engine overflows, rewritten algebra may differ: skip those
                finite = np.abs(e[ok])
                atol = rtol * (float(finite.max()) if finite.size else 1.0)
                if np.shape(g) != np.shape(e) or not np.allclose(np.asarray(g)[ok], e[ok], rtol=rtol, atol=atol):
                    raise ValueError(
                        f"compile: {getattr(self.f, '__name__', 'f')} does not trace to one fixed computation: "
                        "its result depends on the input values in a way the graph does not record: a Python "
                        "`if` or float() on values, .data read in Python, boolean-mask indexing with a mask "
                        "computed from the inputs (a[a > 0]: the result's shape depends on the values), or a "
                        "sort (np.sort, x.sort(): the order comes from the values), which compile does not "
                        "support. Masks as values are fine: write a[a > 0] as "
                        "cr.where(a > 0, a, 0.0), an `if` as cr.where(cond, then, else) (or cr.relu / "
                        "cr.maximum / cr.abs), or use cr.value_and_grad, which handles all of these")


def _overlap(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two arrays share an element (interleaved views such as ``w[:, 0]`` and ``w[:, 1]``
    do not); where that is too costly to settle, they are taken to."""
    if not np.may_share_memory(a, b):
        return False
    try:
        return bool(np.shares_memory(a, b, max_work=1 << 20))
    except np.exceptions.TooHardError:
        return True


def compile(f: Callable[..., Any], argnums: int | Sequence[int] = 0, backend: str = "auto") -> Compiled:  # noqa: A001
    """``value_and_grad(f, argnums)`` as generated, compiled code: traced on the first call and again
    for each new input signature (shapes, dtypes). Returns ``(out, grads)`` like value_and_grad.

    ``backend``: ``"auto"`` (default) runs float64 elementwise programs on large arrays as fused
    numba loops when numba is installed (extra ``fast``): one loop reading each input and writing each
    result once, exp/log/sin/cos computed inside it (other transcendentals as vector calls of glibc's
    libmvec), large calls split among the CPUs the process may use; everything else as planned NumPy
    code; ``"numba"`` is the same but warns once when numba is missing; ``"numpy"`` never fuses;
    ``"numexpr"`` fuses elementwise chains with numexpr. ``fast.backend_used`` tells which ran.

    ``fast(*args, out=(out, grads))`` writes the results into those arrays and returns them.
    """
    return Compiled(f, argnums, backend)


"""The array-namespace seam: which array library computes a call, found from its inputs.

NumPy arrays (and plain numbers) take the NumPy path: every gate's forward bound once to NumPy's own
function (``gate.fn``), the rules run in :data:`array_ops`. Arrays of any other library that meets
the Array API standard (CuPy, Dask, ``array-api-strict``; PyTorch and JAX through
``array-api-compat``) are detected per call, cached per array type (:func:`library_of`): that library's
:class:`Library` binds each gate to the standard's function, or to what its adapter in
:mod:`chainrule.adapters` supplies where the standard has none, and results stay in that library.
NumPy constants (index arrays, ``np.eye``) used with another library's arrays are moved into it;
arrays of two libraries in one operation, or one call, are an error (:class:`MixedLibrariesError`).

:func:`set_array_namespace` stays as an override: one NumPy-compatible module for all array math,
whatever the inputs are.
"""

from __future__ import annotations

from types import ModuleType, SimpleNamespace
from typing import Any

import numpy

xp: Any = numpy
#: the module :func:`set_array_namespace` forced for all array math (None: follow the inputs)
override: Any = None

#: The gate functions bound to NumPy (or the override) by name (``array_ops.exp``, ``array_ops.sum``,
#: ...): the namespace the fast (non-differentiable) backward pass evaluates the gate rules in.
array_ops = SimpleNamespace()

#: NumPy's and Python's own types: operands of these classes take the NumPy path without a lookup
NATIVE: frozenset[type] = frozenset(
    {numpy.ndarray, int, float, bool, complex, type(None)} | set(numpy.sctypeDict.values()))


class MixedLibrariesError(TypeError):
    """Arrays of two array libraries in one operation or one call."""


class UnsupportedError(TypeError):
    """A gate that an array library cannot serve (names the gate and the library)."""


def set_array_namespace(module: ModuleType) -> None:
    """Use ``module`` (NumPy-compatible: exp, sum, where, matmul, ...) for all array math, whatever the
    inputs' library (an override: by default the library follows the inputs)."""
    global xp, override
    xp = module
    override = None if module is numpy else module
    from . import gates

    gates.bind(module, array_ops)


def get_array_namespace() -> Any:
    """The NumPy-path array module (NumPy unless :func:`set_array_namespace` changed it)."""
    return xp


# ----------------------------------------------------------------------------------------------
# the library of an array
# ----------------------------------------------------------------------------------------------

_BY_TYPE: dict[type, Library | None] = {}
_BY_NAMESPACE: dict[int, Library] = {}


def library_of(x: Any) -> Library | None:
    """The :class:`Library` of an array, or None for NumPy arrays, plain numbers and anything that is not
    an array (those take the NumPy path). Cached per type: one dict lookup after the first."""
    cls = x.__class__
    try:
        return _BY_TYPE[cls]
    except KeyError:
        pass
    lib = _detect(x)
    _BY_TYPE[cls] = lib
    return lib


def _detect(x: Any) -> Library | None:
    if isinstance(x, (numpy.ndarray, numpy.generic, int, float, complex, list, tuple)) or x is None:
        return None
    module = type(x).__module__.split(".")[0]
    own = getattr(x, "__array_namespace__", None)
    known = module in ("cupy", "dask", "torch", "jax", "jaxlib", "sparse", "ndonnx")
    if own is None and not known:
        return None
    try:
        import array_api_compat
    except ImportError:
        if own is None:
            raise TypeError(f"{type(x).__module__}.{type(x).__name__} arrays are used through the Array API "
                            "standard, which needs array-api-compat: pip install 'chainrule[array]'") from None
        ns = own()
    else:
        ns = array_api_compat.array_namespace(x)
        if ns is getattr(array_api_compat, "numpy", None) or ns is numpy:
            return None
    lib = _BY_NAMESPACE.get(id(ns))
    if lib is None:
        lib = _BY_NAMESPACE[id(ns)] = Library(ns, type(x))
    return lib


def library_name(x: Any) -> str:
    """The name of an array's library (``numpy``, ``dask.array``, ``array_api_strict``...)."""
    lib = library_of(x)
    return "numpy" if lib is None else lib.name


def common_library(values: Any, who: str) -> Library | None:
    """The one library of ``values`` (None: NumPy or numbers only); :class:`MixedLibrariesError` naming
    ``who`` and both libraries when the arrays come from two of them. NumPy arrays count here: the
    arrays passed to one call must all come from one library."""
    found: Library | None = None
    numpy_too = False
    for v in values:
        if v.__class__ in NATIVE:
            numpy_too = numpy_too or isinstance(v, numpy.ndarray)
            continue
        lib = library_of(v)
        if lib is None:
            numpy_too = numpy_too or isinstance(v, numpy.ndarray)
        elif found is None:
            found = lib
        elif lib is not found:
            raise MixedLibrariesError(f"{who}: arrays of two array libraries, {found.name} and {lib.name}; "
                                      "convert them to one library first")
    if found is not None and numpy_too:
        raise MixedLibrariesError(f"{who}: arrays of two array libraries, numpy and {found.name}; convert them "
                                  f"to one library first (e.g. {found.name}.asarray(a))")
    return found


def operands(gate: Any, datas: list[Any], grads: Any) -> tuple[Library | None, list[Any]]:
    """The library an operation runs in and its operands in it, for operands that are not all NumPy's.

    NumPy constants among them (index arrays, ``np.eye``, a NumPy scalar) are moved into that library
    (a value that carries a gradient is not: ``grads[i]`` says which do), so a function that mixes
    NumPy constants with, say, Dask inputs runs unchanged. Two libraries: one clear error."""
    if override is not None:
        return None, datas
    lib: Library | None = None
    for d in datas:
        if d.__class__ not in NATIVE:
            other = library_of(d)
            if other is None:
                continue
            if lib is None:
                lib = other
            elif other is not lib:
                raise MixedLibrariesError(f"{gate.name}: operands from two array libraries, {lib.name} and "
                                          f"{other.name}; convert them to one library first")
    if lib is None:
        return None, datas
    out = list(datas)
    for i, d in enumerate(datas):
        if isinstance(d, (numpy.ndarray, numpy.generic)):
            if grads and grads[i]:
                raise MixedLibrariesError(
                    f"{gate.name}: a NumPy array that requires grad meets {lib.name} arrays; the values "
                    f"differentiated together must come from one library (convert with {lib.name}.asarray)")
            out[i] = lib.constant(d)
    return lib, out


def ops_for(data: Any) -> Any:
    """The ops namespace the fast backward pass runs rules in, for a computation on ``data``."""
    if override is not None or data.__class__ in NATIVE:
        return array_ops
    lib = library_of(data)
    return array_ops if lib is None else lib.ops


def namespace_of(data: Any) -> Any:
    """The array module to build arrays like ``data`` with (NumPy, the override, or the library's
    standard namespace)."""
    if override is not None or data.__class__ in NATIVE:
        return xp
    lib = library_of(data)
    return xp if lib is None else lib.xp


def to_numpy(data: Any) -> numpy.ndarray:
    """The values as a NumPy array (a Dask array is computed, a CuPy array copied to the host)."""
    lib = None if data.__class__ in NATIVE else library_of(data)
    return numpy.asarray(data) if lib is None else lib.to_numpy(data)


def is_lazy(data: Any) -> bool:
    """Whether ``data`` is a lazy array (Dask) whose values are computed only when asked for."""
    lib = None if data.__class__ in NATIVE else library_of(data)
    return lib is not None and lib.lazy


def numpy_dtype(dtype: Any) -> numpy.dtype:
    """The NumPy dtype of the same name as a dtype of any library (``array_api_strict.float64``)."""
    if isinstance(dtype, numpy.dtype):
        return dtype
    try:
        return numpy.dtype(dtype)
    except TypeError:
        return numpy.dtype(str(dtype).rsplit(".", 1)[-1])


def kind(dtype: Any) -> str:
    """NumPy's one-letter kind of a dtype of any library: "f" floating, "c" complex, "i"/"u" integer,
    "b" bool ("?" when unknown)."""
    k = getattr(dtype, "kind", None)
    if isinstance(k, str):
        return k
    try:
        return numpy_dtype(dtype).kind
    except TypeError:
        return "?"


# ----------------------------------------------------------------------------------------------
# one library
# ----------------------------------------------------------------------------------------------


class Library:
    """One array library other than NumPy: its standard namespace ``xp``, its own module ``native``
    (``dask.array``, ``cupy``; None where it has none beyond the standard), its adapter for what the
    standard lacks, each gate's forward bound to it (:meth:`forward`) and the ops namespace the rules
    run in on its arrays (:attr:`ops`)."""

    def __init__(self, namespace: Any, array_type: type) -> None:
        from . import adapters

        self.xp = namespace
        self.array_type = array_type
        root = array_type.__module__.split(".")[0]
        self.name = {"dask": "dask.array", "jaxlib": "jax"}.get(root, root)
        self.native = _native_module(self.name)
        self.lazy = root == "dask"
        self.adapter = adapters.adapter_for(self)
        self._forward: dict[str, Any] = {}
        self.ops = _LibraryOps(self)
        from . import gates

        gates.on_register(self._forget)

    def __repr__(self) -> str:
        return f"<array library {self.name}>"

    def _forget(self, gate: Any) -> None:
        self._forward.pop(gate.name, None)
        self.ops.__dict__.pop(gate.name, None)

    def forward(self, gate: Any) -> Any:
        """The gate's forward on this library's arrays, called as ``fn(*inputs, **params)``."""
        fn = self._forward.get(gate.name)
        if fn is None:
            from .gates import bind_library

            fn = self._forward[gate.name] = bind_library(gate, self)
        return fn

    def constant(self, value: Any, dtype: Any = None) -> Any:
        """A NumPy constant (an index map, ``np.eye``, a NumPy scalar) as this library's array."""
        if isinstance(value, numpy.generic) and dtype is None:
            return value.item()  # a plain number: the standard's scalars are Python's
        return self.xp.asarray(value) if dtype is None else self.xp.asarray(value, dtype=dtype)

    def to_numpy(self, data: Any) -> numpy.ndarray:
        get = getattr(data, "get", None)
        if self.name == "cupy" and get is not None:
            return get()
        if self.lazy:
            return numpy.asarray(data.compute())
        try:
            return numpy.asarray(data)
        except (TypeError, ValueError, RuntimeError):
            return numpy.from_dlpack(self.xp.asarray(data, device=_cpu(self.xp)))

    def float_dtype(self) -> Any:
        """The default real floating dtype of the library (float64 where it has one)."""
        return getattr(self.xp, "float64", None) or self.xp.__array_namespace_info__().default_dtypes()[
            "real floating"]


def _cpu(xp: Any) -> Any:
    try:
        return xp.__array_namespace_info__().default_device()
    except AttributeError:
        return None


def _native_module(name: str) -> Any:
    import importlib

    if name in ("dask.array", "cupy"):
        try:
            return importlib.import_module(name)
        except ImportError:
            return None
    return None


class _LibraryOps:
    """The ops namespace rules run in on one library's arrays: each gate by name, with NumPy's calling
    convention (as :data:`array_ops`), plus the constants rules build (``ones_like``, ``eye``,
    ``asarray``) and ``mask`` (a truth value as a number, see :func:`chainrule.gates.mask`)."""

    namespace_kind = "arrays"

    def __init__(self, lib: Library) -> None:
        self._lib = lib
        x = lib.xp
        self.ones_like, self.zeros_like, self.zeros, self.ones = x.ones_like, x.zeros_like, x.zeros, x.ones
        self.asarray = lib.constant
        self.mask = lib.adapter.mask

    def apply_gate(self, gate: Any, *inputs: Any, **params: Any) -> Any:
        """The gate on this library's arrays with its own convention (inputs, then params)."""
        return self._lib.forward(gate)(*inputs, **params)

    def eye(self, n: int, m: int | None = None, k: int = 0, dtype: Any = None) -> Any:
        return self._lib.xp.eye(n, m, k=k, dtype=dtype or self._lib.float_dtype())

    def __getattr__(self, name: str) -> Any:
        from .gates import GATES, numpy_call

        gate = GATES.get(name)
        if gate is None or name.startswith("_"):
            raise AttributeError(f"the {self._lib.name} ops namespace has no {name!r}")
        fn = self._lib.forward(gate)
        fn = fn if gate.arity is not None and gate.call is None else numpy_call(gate, fn)
        setattr(self, name, fn)
        return fn

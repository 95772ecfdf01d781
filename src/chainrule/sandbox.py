"""Run a function from someone's Python file in a child process with limits, and get its results back.

``chainrule check`` (and a grader) hands over code it must not trust: it may exit, print, hang,
allocate without bound or crash the interpreter. None of that may produce a verdict, so the code
never runs in the checking process. A *runner* (a small server process started with
``python -m chainrule.sandbox``, which has imported NumPy and chainrule once and has never seen the
reference answer) forks one child per run. The child:

- runs in its own process group, in a fresh scratch folder (its working directory, ``HOME`` and
  ``TMPDIR``; removed afterwards), with a scrubbed environment and stdin from ``/dev/null``;
- has limits: wall-clock time (the group is killed), CPU time (``RLIMIT_CPU``), memory
  (``RLIMIT_AS``: the address space it may add to what Python and NumPy already map), file size
  (``RLIMIT_FSIZE``), no core dumps;
- has its stdout and stderr captured, bounded (the first 64 KiB of each are kept, the rest counted);
- imports the file (its top-level code runs, as with ``python FILE``), finds the function, binds the
  inputs by parameter name (or by position), and calls it once per input set, keeping what it
  returned and its local variables when it returned (traced once per call: a ``return`` event
  only, no per-line tracing);
- sends the results back over a pipe that only the runner reads, as data (JSON and raw array bytes,
  never pickles), framed with a per-run random token and length, and then leaves through the
  runner's own ``os._exit(0)``.

The runner accepts a result only when the frame is complete and the child then exited with status 0;
anything else (``sys.exit``, ``os._exit``, a signal, a timeout, a memory error) is a failure with a
one-line reason. Printing cannot forge a result (stdout is only captured text), nor can exiting.

A grader runs several functions of one submission (``Runner.run_all``): the file is imported once
and the child sends a frame after the import and after each function, as each finishes. A function
that kills the child (a crash, a timeout, ``os._exit``) fails alone, with its reason: the functions
before it keep their frames (each was written by the runner's code after that function returned,
so it says no more than returning those values would), and those after it run in a fresh child.
The wall-clock limit covers the import and the first function, then each further function.

What it does NOT stop: the checked code can read any file this user can read (the reference
answer's file included, if it finds it), use the network, and start processes (which are killed
with its process group, unless they leave it). For that, run the whole command inside a container;
see the README ("Checking code you did not write").

Use :class:`Runner` (one runner process; ``run`` and ``run_all`` may be called many times, one run at
a time, so start several for parallel work) or :func:`run` (a shared runner for this process).
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import json
import math
import os
import re
import secrets
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Limits", "Job", "Call", "RunResult", "Runner", "run", "SandboxError", "format_bytes", "parse_bytes"]


@dataclass(frozen=True)
class Limits:
    """What one run may use. ``memory_bytes`` is what the checked code may allocate on top of the
    Python, NumPy and chainrule already loaded (about 100 MB of address space)."""

    seconds: float = 10.0                 # wall clock, import and every call together
    cpu_seconds: float | None = None      # CPU time (default: ``seconds``)
    memory_bytes: int = 1 << 30           # address space the checked code may add
    output_bytes: int = 64 * 1024         # kept of stdout, and of stderr
    file_bytes: int = 64 << 20            # largest file it may write (in its scratch folder, or elsewhere)
    result_bytes: int = 64 << 20          # largest result (returned values and locals) sent back

    def __post_init__(self) -> None:
        if not (self.seconds > 0 and math.isfinite(self.seconds)):
            raise ValueError(f"the time limit must be a positive number of seconds, not {self.seconds!r}")
        if self.memory_bytes < 1 << 20:
            raise ValueError(f"the memory limit must be at least 1 MiB, not {self.memory_bytes} bytes")


@dataclass
class Job:
    """One run: import ``path``, take ``func``, call it once per input set.

    Each input set maps names to arrays. The inputs are passed by the function's own parameter
    names when every name in ``positional`` is one of its parameters (extra parameters take their
    values from the set too, like the worksheet's q2c(x, y, z) whose z is unused); otherwise they
    are passed by position in the order of ``positional``.
    """

    path: str
    func: str
    input_sets: list[dict[str, np.ndarray]]
    positional: list[str]
    capture_locals: bool = True
    readable: list[str] = field(default_factory=list)   # folders it may read besides Python's own (Landlock)


@dataclass
class Call:
    """One call's outcome: what it returned (a tuple's items, ``out, (g1, g2)`` flattened; arrays,
    or :class:`chainrule.check.Opaque` for anything that is not numbers), the local variables that
    hold each returned item, its numeric local variables when it returned, or the exception it raised."""

    result: Any = None
    holders: list[list[str]] = field(default_factory=list)
    locals: dict[str, np.ndarray] = field(default_factory=dict)
    error: str | None = None
    seconds: float = 0.0


@dataclass
class RunResult:
    """A run's outcome: ``ok`` when the child completed the runner's path (every call has a
    :class:`Call`, which may itself have raised); else ``kind`` and a one-line ``reason``."""

    ok: bool
    calls: list[Call] = field(default_factory=list)
    order: list[str] = field(default_factory=list)     # the input names, in the order they were passed
    kind: str | None = None       # timeout, cpu, memory, signal, exit, syntax, import, missing_function, arity,
    reason: str | None = None     # needs_values, result_too_large, internal
    stdout: str = ""
    stderr: str = ""
    stdout_dropped: int = 0       # bytes of output not kept
    stderr_dropped: int = 0
    seconds: float = 0.0


class SandboxError(RuntimeError):
    """The runner itself could not run (no fork on this system, or its process stopped answering)."""


class _RunnerLost(SandboxError):
    """The runner ended (``how``: died), was stopped (stopped) or stopped answering (hung) during a run."""

    def __init__(self, how: str) -> None:
        super().__init__(f"the sandbox runner {how}")
        self.how = how


def parse_bytes(text: str) -> int:
    """``512M``, ``2G``, ``1.5GiB``, ``100000`` -> bytes."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b)?\s*", str(text), re.IGNORECASE)
    if not m:
        raise ValueError(f"expected a size like 512M or 2G, got {text!r}")
    scale = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}[m.group(2).lower()]
    return int(float(m.group(1)) * scale)


def format_bytes(n: int) -> str:
    """Bytes as people write them: 512 MiB, 1 GiB, 64 KiB."""
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n} bytes"


# ---------------------------------------------------------------------------------------------
# the wire format: JSON for structure, raw bytes for arrays (never pickles: the parent must not run
# anything the child sends)
# ---------------------------------------------------------------------------------------------

_DTYPE = re.compile(r"[<>|=][biufc]\d{1,2}")


def pack(obj: Any) -> bytes:
    """``obj`` (dicts, lists, strings, numbers, arrays, Opaque) as bytes: a JSON header, then the arrays."""
    from .check import Opaque

    blobs: list[bytes] = []

    def enc(v: Any) -> Any:
        if isinstance(v, np.ndarray):
            a = v if v.flags.c_contiguous else np.ascontiguousarray(v)  # (ascontiguousarray makes 0-d 1-d)
            blobs.append(a.tobytes())
            return {"__array__": len(blobs) - 1, "dtype": a.dtype.str, "shape": list(a.shape)}
        if isinstance(v, Opaque):
            return {"__opaque__": v.type_name, "text": v.text}
        if isinstance(v, dict):
            return {"__dict__": [[str(k), enc(x)] for k, x in v.items()]}
        if isinstance(v, (list, tuple)):
            return [enc(x) for x in v]
        if v is None or isinstance(v, (str, bool, int, float)):
            return v
        raise TypeError(f"cannot send a {type(v).__name__}")

    header = json.dumps(enc(obj)).encode("utf-8")
    parts = [struct.pack("<Q", len(header)), header]
    for b in blobs:
        parts += [struct.pack("<Q", len(b)), b]
    return b"".join(parts)


def unpack(data: bytes) -> Any:
    """The inverse of :func:`pack`, checking every length, dtype and shape (ValueError when malformed)."""
    from .check import Opaque

    view = memoryview(data)
    pos = 0

    def take(n: int) -> memoryview:
        nonlocal pos
        if n < 0 or pos + n > len(view):
            raise ValueError("truncated message")
        out = view[pos: pos + n]
        pos += n
        return out

    (hlen,) = struct.unpack("<Q", take(8))
    header = json.loads(bytes(take(hlen)).decode("utf-8"))
    blobs: list[memoryview] = []
    while pos < len(view):
        (blen,) = struct.unpack("<Q", take(8))
        blobs.append(take(blen))

    def dec(v: Any) -> Any:
        if isinstance(v, list):
            return [dec(x) for x in v]
        if isinstance(v, dict):
            if "__array__" in v:
                dtype = str(v["dtype"])
                if not _DTYPE.fullmatch(dtype):
                    raise ValueError(f"refusing dtype {dtype!r}")
                dt = np.dtype(dtype)
                shape = tuple(int(s) for s in v["shape"])
                k = int(v["__array__"])
                if not 0 <= k < len(blobs) or any(s < 0 for s in shape):
                    raise ValueError("bad array reference")
                if math.prod(shape) * dt.itemsize != len(blobs[k]):
                    raise ValueError("array size does not match its data")
                return np.frombuffer(blobs[k], dtype=dt).reshape(shape).copy()
            if "__opaque__" in v:
                return Opaque(str(v["__opaque__"]), str(v.get("text", "")))
            if "__dict__" in v:
                return {str(k): dec(x) for k, x in v["__dict__"]}
            raise ValueError("unknown object in message")
        return v

    return dec(header)


def _write_frame(fd: int, payload: bytes, token: bytes = b"") -> None:
    data = token + struct.pack("<Q", len(payload)) + payload
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _read_exactly(fd: int, n: int, deadline: float | None) -> bytes:
    chunks = []
    while n > 0:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError
        chunk = os.read(fd, min(n, 1 << 20))
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


# ---------------------------------------------------------------------------------------------
# the child: everything below runs in the forked process, with the checked code
# ---------------------------------------------------------------------------------------------

_LOCALS_BYTES = 16 << 20  # numeric locals sent back per call, at most


def _child(jobs: list[Job], limits: Limits, fds: dict[str, int], token: bytes, scratch: str, base_vm: int) -> None:
    """Set up the child, import the file once, run each job's function, send one frame per step
    (the import's outcome, then each job's reply, as each finishes), leave. Never returns."""
    try:
        os.setpgid(0, 0)
        _die_with_parent()
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(fds["out"], 1)
        os.dup2(fds["err"], 2)
        result_fd = fds["result"]
        keep = sorted({0, 1, 2, result_fd})
        for lo, hi in zip(keep, keep[1:] + [_max_fd()]):
            os.closerange(lo + 1, hi)
        sys.stdin = open(0, encoding="utf-8", closefd=False)  # noqa: SIM115 - lives as long as the child
        # line-buffered, so what was printed before a crash or os._exit is still seen
        sys.stdout = open(1, "w", buffering=1, encoding="utf-8", errors="backslashreplace", closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", buffering=1, encoding="utf-8", errors="backslashreplace", closefd=False)  # noqa: SIM115
        _set_limits(limits, base_vm, len(jobs))
        os.chdir(scratch)
        _confine(jobs, scratch)
        os.environ.clear()
        os.environ.update({"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": scratch, "TMPDIR": scratch,
                           "LANG": "C.UTF-8", "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"})
        tempfile.tempdir = scratch
        sys.dont_write_bytecode = True  # no __pycache__ beside the checked file
        sys.argv = [jobs[0].path]
        module, failure = _import_file(jobs[0].path, limits)
        _send(result_fd, failure or {"imported": True}, token, limits)
        if module is not None:
            for k, job in enumerate(jobs):
                if k:
                    _more_cpu_time(limits)
                _send(result_fd, _run_job(module, job, limits), token, limits)
        os.close(result_fd)
    except BaseException:  # noqa: BLE001 - the runner's own code failed: no result, status 70
        with contextlib.suppress(BaseException):
            traceback.print_exc()
        os._exit(70)
    os._exit(0)


_SYSTEM_PATHS: list[str] | None = None  # what Python needs to read (computed once, in the runner)


def _confine(jobs: list[Job], scratch: str) -> None:
    """Landlock, where the kernel has it (:mod:`chainrule.landlock`): from here on the child writes only
    in its scratch folder, reads only what Python needs and the submission's own folders, and cannot
    signal or connect to processes outside its domain (the runner, the grader, other submissions)."""
    from . import landlock

    global _SYSTEM_PATHS
    if os.environ.get("CHAINRULE_NO_LANDLOCK"):  # to see what holds without it (tests, other systems)
        return
    if _SYSTEM_PATHS is None:
        _SYSTEM_PATHS = landlock.system_paths()
    own = {os.path.dirname(os.path.abspath(j.path)) for j in jobs} | {r for j in jobs for r in j.readable}
    with contextlib.suppress(OSError):  # refused by an unusual kernel: the other limits still hold
        landlock.confine([scratch], [*_SYSTEM_PATHS, *sorted(own)])


def _send(fd: int, reply: dict[str, Any], token: bytes, limits: Limits) -> None:
    """One step's reply to the runner, after what was printed so far (so output precedes it)."""
    payload = pack(reply)
    if len(payload) > limits.result_bytes:
        payload = pack(_fail("result_too_large", f"returned more than {format_bytes(limits.result_bytes)} of "
                             "values and local variables"))
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    _write_frame(fd, payload, token)


def _die_with_parent() -> None:
    """Linux: the child is killed if the runner dies (even by SIGKILL) while it runs."""
    with contextlib.suppress(Exception):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0)


def _max_fd() -> int:
    try:
        return int(os.sysconf("SC_OPEN_MAX"))
    except (ValueError, OSError):
        return 4096


def _set_limits(limits: Limits, base_vm: int, jobs: int = 1) -> None:
    import resource

    def cap(which: int, soft: int, hard: int | None = None) -> None:
        _, old_hard = resource.getrlimit(which)
        hard = soft if hard is None else hard
        if old_hard != resource.RLIM_INFINITY:
            soft, hard = min(soft, old_hard), min(hard, old_hard)
        resource.setrlimit(which, (soft, hard))

    cpu = _cpu_limit(limits)
    # the soft limit is one job's time (raised before each further job); the hard one, all of them
    cap(resource.RLIMIT_CPU, max(1, math.ceil(cpu)), max(1, math.ceil(cpu * jobs)) + 1)
    cap(resource.RLIMIT_AS, base_vm + limits.memory_bytes)
    cap(resource.RLIMIT_FSIZE, limits.file_bytes)
    cap(resource.RLIMIT_CORE, 0)


def _cpu_limit(limits: Limits) -> float:
    return limits.cpu_seconds if limits.cpu_seconds is not None else limits.seconds


def _more_cpu_time(limits: Limits) -> None:
    """Before the next function of the same file: its own CPU-time allowance on top of what was used."""
    import resource

    used = resource.getrusage(resource.RUSAGE_SELF)
    soft, hard = resource.getrlimit(resource.RLIMIT_CPU)
    want = math.ceil(used.ru_utime + used.ru_stime + _cpu_limit(limits))
    if hard != resource.RLIM_INFINITY:
        want = min(want, hard)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_CPU, (max(want, soft), hard))


def _fail(kind: str, reason: str) -> dict[str, Any]:
    return {"failure": kind, "reason": reason}


def _one_line(e: BaseException) -> str:
    try:
        text = str(e)
    except Exception:  # noqa: BLE001 - a user's exception whose str() fails
        text = ""
    text = " ".join(text.split())
    return f"{type(e).__name__}: {text[:300]}" if text else type(e).__name__


def _where(e: BaseException, path: str) -> str:
    """`` (FILE, line N)``: the last line of the checked file the traceback passed through."""
    target = os.path.realpath(path)
    shown = os.path.basename(path)
    if isinstance(e, SyntaxError) and e.lineno:
        return f" ({shown}, line {e.lineno})"
    lineno = None
    for frame in traceback.extract_tb(e.__traceback__):
        if frame.filename and os.path.realpath(frame.filename) == target:
            lineno = frame.lineno
    return f" ({shown}, line {lineno})" if lineno else ""


def _exit_reason(e: SystemExit, where: str) -> str:
    return f"called sys.exit({e.code!r}) {where}"


def _import_file(path: str, limits: Limits) -> tuple[Any, dict[str, Any] | None]:
    """Import the checked file (its top-level code runs): the module, or ``(None, failure)``."""
    import importlib.util

    shown = os.path.basename(path)
    folder = os.path.dirname(os.path.abspath(path))
    sys.path.insert(0, folder)
    name = _module_name(path)
    try:
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            return None, _fail("import", f"{shown} cannot be imported as Python")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    except SyntaxError as e:
        return None, _fail("syntax", f"{type(e).__name__}: {e.msg}{_where(e, path)}")
    except SystemExit as e:
        return None, _fail("exit", _exit_reason(e, f"while {shown} was being imported"))
    except MemoryError:
        return None, _fail("memory", f"ran out of memory (the limit is {format_bytes(limits.memory_bytes)}) while "
                           f"{shown} was being imported")
    except BaseException as e:  # noqa: BLE001 - whatever the file raised, in one line
        return None, _fail("import", f"importing {shown} raised {_one_line(e)}{_where(e, path)}")
    return module, None


def _module_name(path: str) -> str:
    return "_chainrule_checked_" + "".join(c if c.isalnum() else "_" for c in
                                           os.path.splitext(os.path.basename(path))[0])


def _run_job(module: Any, job: Job, limits: Limits) -> dict[str, Any]:
    """Find, bind, call: a dict for the wire, ``{"failure", "reason"}`` when the function could not run."""
    from .check import capture_call

    path, shown, name = job.path, os.path.basename(job.path), module.__name__
    fn = getattr(module, job.func, None)
    if fn is None:
        have = sorted(k for k, v in vars(module).items() if callable(v) and not k.startswith("_")
                      and getattr(v, "__module__", None) == name)
        return _fail("missing_function", f"{shown} has no function {job.func!r}"
                     + (f" (it has {', '.join(have)})" if have else ""))
    if not callable(fn):
        return _fail("missing_function", f"{shown}:{job.func} is not a function (it is {type(fn).__name__})")
    order, problem = _bind(fn, job)
    if problem is not None:
        return problem
    calls = []
    for values in job.input_sets:
        args = [np.array(values[k], copy=True) for k in order]
        start = time.perf_counter()
        try:
            cap = capture_call(fn, args) if job.capture_locals else None
            result = cap.result if cap is not None else fn(*args)
        except SystemExit as e:
            return _fail("exit", _exit_reason(e, f"in {job.func}"))
        except MemoryError:
            return _fail("memory", f"{job.func} ran out of memory (the limit is {format_bytes(limits.memory_bytes)})")
        except BaseException as e:  # noqa: BLE001 - reported per call, like a wrong value
            calls.append({"error": f"{job.func} raised {_one_line(e)}{_where(e, path)}",
                          "seconds": time.perf_counter() - start})
            continue
        seconds = time.perf_counter() - start
        items = list(result) if isinstance(result, (tuple, list)) else None
        wire = [_to_wire(v) for v in items] if items is not None else _to_wire(result)
        calls.append({"result": wire, "tuple": items is not None, "seconds": seconds,
                      "holders": cap.holders if cap is not None else [],
                      "locals": _numeric_locals(cap.locals) if cap is not None else {}})
        del cap, result, items  # the call's own arrays go before the next call makes its own
    return {"order": order, "calls": calls}


def _bind(fn: Any, job: Job) -> tuple[list[str], dict[str, Any] | None]:
    """The order to pass the inputs in (by parameter name, else by position), or a failure."""
    import inspect

    given = list(job.input_sets[0]) if job.input_sets else list(job.positional)
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return list(job.positional), None
    ps = list(sig.parameters.values())
    named = [p.name for p in ps if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    required = [p.name for p in ps if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
                and p.default is p.empty]
    varargs = any(p.kind is p.VAR_POSITIONAL for p in ps)
    shown = f"{job.func}({', '.join(named + (['*args'] if varargs else []))})"
    if set(job.positional) <= set(named):
        order = [n for n in named if n in given]
        missing = [n for n in required if n not in given]
        if missing:
            return [], _fail("needs_values", f"{shown} needs a value for {', '.join(missing)}: add "
                             f"{'=... '.join(missing)}=... to the inputs")
        unused = [n for n in given if n not in named]
        if unused:
            return [], _fail("needs_values", f"{', '.join(unused)} {'is' if len(unused) == 1 else 'are'} neither "
                             f"a variable of the reference nor a parameter of {shown}")
        return order, None
    extra = [n for n in given if n not in job.positional]
    order = list(job.positional)
    try:
        sig.bind(*order)
    except TypeError:
        have = ", ".join(job.positional)
        return [], _fail("arity", f"{shown} takes {len(named)} input{'s' if len(named) != 1 else ''} but the "
                         f"reference has variable{'s' if len(job.positional) != 1 else ''} {have}")
    if extra:
        return [], _fail("needs_values", f"{', '.join(extra)} {'is' if len(extra) == 1 else 'are'} neither a "
                         f"variable of the reference nor a parameter of {shown}")
    return order, None


def _to_wire(v: Any) -> Any:
    """A returned value as numbers (an array, dtype kept: complex stays complex), else a description."""
    from .check import Opaque
    from .tensor import Tensor

    if isinstance(v, Tensor):
        v = v.data
    if isinstance(v, (np.ndarray, np.generic, int, float, complex, bool, list, tuple)):
        try:
            a = np.asarray(v)
        except Exception:  # noqa: BLE001 - ragged lists and the like
            a = None
        if a is not None and a.dtype.kind in "biufc":
            return np.array(a, copy=True)
    try:
        text = repr(v)
    except Exception:  # noqa: BLE001
        text = ""
    return Opaque(type(v).__name__, text[:200])


def _numeric_locals(final: dict[str, Any]) -> dict[str, np.ndarray]:
    """The numeric local variables (arrays and numbers), in order, up to a size budget."""
    from .tensor import Tensor

    out: dict[str, np.ndarray] = {}
    budget = _LOCALS_BYTES
    for k, v in final.items():
        if isinstance(v, Tensor):
            v = v.data
        if not isinstance(v, (np.ndarray, np.generic, int, float, complex, bool)):
            continue
        try:
            a = np.asarray(v)
        except Exception:  # noqa: BLE001
            continue
        if a.dtype.kind not in "biufc" or a.nbytes > budget:
            continue
        budget -= a.nbytes
        out[k] = np.array(a, copy=True)
    return out


# ---------------------------------------------------------------------------------------------
# the runner process: forks a child per job, supervises it, answers the parent
# ---------------------------------------------------------------------------------------------


class _Capture:
    """A pipe read into a bounded buffer: the first ``keep`` bytes, and a count of the rest."""

    def __init__(self, fd: int, keep: int) -> None:
        self.fd, self.keep = fd, keep
        self.data = bytearray()
        self.dropped = 0
        self.open = True

    def read(self) -> None:
        try:
            chunk = os.read(self.fd, 1 << 16)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            self.close()
            return
        room = self.keep - len(self.data)
        self.data += chunk[:max(room, 0)]
        self.dropped += max(len(chunk) - max(room, 0), 0)

    def close(self) -> None:
        if self.open:
            self.open = False
            os.close(self.fd)


class _Frames:
    """Frames read off the result pipe as they complete (token, length, payload): the import's
    outcome, then one reply per job. Anything that is not a well-formed frame stops the reading."""

    def __init__(self, token: bytes) -> None:
        self.token = token
        self.pos = 0
        self.items: list[dict[str, Any]] = []
        self.bad = False

    def feed(self, data: bytearray) -> None:
        header = len(self.token) + 8
        while not self.bad and len(data) - self.pos >= header:
            if data[self.pos: self.pos + len(self.token)] != self.token:
                self.bad = True
                break
            (n,) = struct.unpack("<Q", data[self.pos + len(self.token): self.pos + header])
            if len(data) - self.pos - header < n:
                break
            body = bytes(data[self.pos + header: self.pos + header + n])
            self.pos += header + n
            try:
                item = unpack(body)
            except (ValueError, KeyError, TypeError, UnicodeDecodeError, struct.error):
                item = None
            self.items.append(item if isinstance(item, dict) else _fail("internal", "the result could not be read"))


@dataclass
class _ChildRun:
    frames: list[dict[str, Any]]
    ending: dict[str, Any]        # the failure its exit means, for a job whose frame never came
    clean: bool                   # exited with status 0 after its last frame, in time, frames well-formed
    out: _Capture
    err: _Capture


def _serve(jobs: list[Job], limits: Limits) -> dict[str, Any]:
    """Run ``jobs`` (functions of one file) in a child, and in a fresh child for the rest when one
    kills the child (a crash, a timeout, an exit): one reply per job, and what the children printed."""
    start = time.monotonic()
    replies: list[dict[str, Any]] = []
    runs: list[_ChildRun] = []
    while len(replies) < len(jobs):
        rest = jobs[len(replies):]
        run = _serve_child(rest, limits)
        runs.append(run)
        if not run.frames or "failure" in run.frames[0]:  # the import itself failed: so does every job
            replies += [run.frames[0] if run.frames else run.ending] * len(rest)
            break
        done = run.frames[1:]
        if len(done) == len(rest) and not run.clean:
            done = done[:-1]  # a result counts only if the child then left through the runner's own path
        replies += done
        if len(replies) < len(jobs):
            replies.append(run.ending)
    return {"replies": replies, "seconds": time.monotonic() - start,
            "stdout": "".join(r.out.data.decode("utf-8", "replace") for r in runs),
            "stderr": "".join(r.err.data.decode("utf-8", "replace") for r in runs),
            "stdout_dropped": sum(r.out.dropped for r in runs), "stderr_dropped": sum(r.err.dropped for r in runs)}


def _serve_child(jobs: list[Job], limits: Limits) -> _ChildRun:
    """Fork a child for ``jobs``, watch it until it ends or runs out of time, and collect its frames.

    The wall-clock limit covers the import and the first job, and then each further job on its own."""
    scratch = tempfile.mkdtemp(prefix="chainrule-run-")
    token = secrets.token_bytes(16)
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    res_r, res_w = os.pipe()
    base_vm = _address_space()
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:  # the child
        for fd in (out_r, err_r, res_r):
            os.close(fd)
        _child(jobs, limits, {"out": out_w, "err": err_w, "result": res_w}, token, scratch, base_vm)
    for fd in (out_w, err_w, res_w):
        os.close(fd)
    with contextlib.suppress(OSError):
        os.setpgid(pid, pid)
    out = _Capture(out_r, limits.output_bytes)
    err = _Capture(err_r, limits.output_bytes)
    res = _Capture(res_r, (limits.result_bytes + 64) * (len(jobs) + 1))
    frames = _Frames(token)
    deadline = start + limits.seconds
    status: int | None = None
    timed_out = False
    pidfd = _pidfd(pid)
    try:
        while True:
            if status is None and _exited(pid):
                _kill_group(pid)  # processes it started go with it (their pipe ends close)
                _, status = os.waitpid(pid, 0)
            streams = [c for c in (out, err, res) if c.open]
            if status is not None and not streams:
                break
            left = deadline - time.monotonic()
            if status is None and left <= 0:
                timed_out = True
                _kill_group(pid)
                _, status = os.waitpid(pid, 0)
                continue
            if status is not None:  # exited: read what is left, briefly (a grandchild may hold a pipe)
                left = min(left, 0.5) if left > 0 else 0.5
                ready = select.select([c.fd for c in streams], [], [], left)[0]
                if not ready:
                    break
            else:
                waits = [c.fd for c in streams] + ([pidfd] if pidfd is not None else [])
                ready = select.select(waits, [], [], min(left, 0.05 if pidfd is None else left))[0]
            for c in streams:
                if c.fd in ready:
                    c.read()
            if res.fd in ready:
                before = len(frames.items)
                frames.feed(res.data)
                if len(frames.items) > max(before, 1):  # a job finished: the next one has its own time
                    deadline = time.monotonic() + limits.seconds
    finally:
        for c in (out, err, res):
            c.close()
        if pidfd is not None:
            os.close(pidfd)
        if status is None:
            _kill_group(pid)
            _, status = os.waitpid(pid, 0)
        shutil.rmtree(scratch, ignore_errors=True)
    frames.feed(res.data)
    clean = not timed_out and os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0 and not frames.bad \
        and not res.dropped and frames.pos == len(res.data)
    ending = _verdict_of_exit(status, timed_out, bool(frames.items), frames.bad or frames.pos != len(res.data),
                              limits)
    return _ChildRun(frames.items, ending, clean, out, err)


def _verdict_of_exit(status: int, timed_out: bool, sent: bool, partial: bool, limits: Limits) -> dict[str, Any]:
    """Why a job has no result, from the child's exit status (``sent``: it had sent some frames;
    ``partial``: what it sent last was not a whole frame)."""
    if timed_out:
        return _fail("timeout", f"timed out after {limits.seconds:g} s (an endless loop, or waiting for input?)")
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        if sig == signal.SIGXCPU:
            return _fail("cpu", f"used more than the CPU time limit of {_cpu_limit(limits):g} s")
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        why = {signal.SIGSEGV: " (a crash in C code, or a stack overflow)", signal.SIGABRT: " (aborted)",
               signal.SIGKILL: " (out of memory, or killed from outside)", signal.SIGBUS: " (a crash in C code)",
               signal.SIGFPE: " (a crash in C code)"}.get(sig, "")
        return _fail("signal", f"killed by {name}{why}")
    code = os.WEXITSTATUS(status)
    if code == 70 and not sent:
        return _fail("internal", "the runner could not run the code (see its stderr)")
    if partial:
        return _fail("exit", f"exited with status {code} before returning a whole result (os._exit?)")
    return _fail("exit", f"exited with status {code} before returning a result (os._exit?)")


def _address_space() -> int:
    """Bytes of address space this process maps now (the child's memory limit is added to it)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 * 4


def _exited(pid: int) -> bool:
    """Whether the child has ended, without reaping it (its process group id stays reserved until
    the group is killed)."""
    try:
        info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return True
    return info is not None and info.si_pid == pid


def _pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)  # type: ignore[attr-defined]
    except (AttributeError, OSError):
        return None


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError, PermissionError, ChildProcessError):
        os.kill(pid, signal.SIGKILL)


def _stop(signum: int, frame: Any) -> None:
    raise SystemExit(0)  # unwinds _serve_child, whose ``finally`` kills and reaps the child's group


def _runner_main() -> None:
    """The runner's loop: one framed job in on stdin, one framed reply out on stdout, until EOF."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides; Ctrl-C reaches it, not us
    signal.signal(signal.SIGTERM, _stop)  # Runner.close: the running child's group is killed on the way out
    proto_in, proto_out = os.dup(0), os.dup(1)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(2, 1)  # nothing printed by accident may corrupt the replies
    os.close(null)
    from . import check, tensor  # noqa: F401 - imported once here, so a child starts with them loaded
    from .landlock import system_paths

    global _SYSTEM_PATHS
    _SYSTEM_PATHS = system_paths()

    _write_frame(proto_out, pack({"ready": True, "pid": os.getpid()}))
    while True:
        try:
            (n,) = struct.unpack("<Q", _read_exactly(proto_in, 8, None))
            request = unpack(_read_exactly(proto_in, n, None))
        except (EOFError, OSError):
            return
        try:
            limits = Limits(**request["limits"])
            jobs = [Job(**j) for j in request["jobs"]]
            reply = _serve(jobs, limits)
        except Exception as e:  # noqa: BLE001 - the runner answers, whatever happened
            reply = _fail("internal", f"the runner failed: {type(e).__name__}: {e}")
        _write_frame(proto_out, pack(reply))


# ---------------------------------------------------------------------------------------------
# the parent side
# ---------------------------------------------------------------------------------------------


class Runner:
    """A runner process (started on first use) that runs :class:`Job` objects in sandboxed children.

    One run at a time per runner (``run`` is thread-safe and queues); start several runners for
    parallel work. The runner is started with ``python -m chainrule.sandbox`` in a scrubbed
    environment, so it has imported NumPy and chainrule but never the caller's reference answer.
    """

    def __init__(self, limits: Limits | None = None) -> None:
        if not hasattr(os, "fork"):
            raise SandboxError("running checked code in a sandbox needs a POSIX system (os.fork)")
        self.limits = limits or Limits()
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self._home: str | None = None
        self._closes = 0  # how many times close() was called: a run in flight then fails, never retries

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def start(self) -> None:
        """Start the runner process now (about 0.2 s: Python, NumPy, chainrule), if it is not running."""
        if self._proc is not None and self._proc.poll() is None:
            return
        src = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        self._home = self._home or tempfile.mkdtemp(prefix="chainrule-runner-")
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "HOME": self._home,
               "PYTHONPATH": src, "PYTHONDONTWRITEBYTECODE": "1", "OPENBLAS_NUM_THREADS": "1",
               "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}
        if os.environ.get("CHAINRULE_NO_LANDLOCK"):
            env["CHAINRULE_NO_LANDLOCK"] = "1"
        debug = bool(os.environ.get("CHAINRULE_DEBUG"))
        self._proc = subprocess.Popen(
            [sys.executable, "-s", "-m", "chainrule.sandbox"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=None if debug else subprocess.DEVNULL, env=env, cwd=self._home, close_fds=True,
        )
        try:
            ready = self._read(time.monotonic() + 60)
        except SandboxError:
            self._stop_process()
            raise
        if not (isinstance(ready, dict) and ready.get("ready")):
            self._stop_process()
            raise SandboxError("the sandbox runner did not start")

    def close(self) -> None:
        """Stop the runner process (a run in flight in another thread ends with :class:`SandboxError`,
        its child killed); a later ``run`` starts a new one."""
        self._closes += 1
        self._stop_process()

    def _stop_process(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            for stream in (proc.stdin, proc.stdout):
                with contextlib.suppress(OSError):
                    if stream is not None:
                        stream.close()
            with contextlib.suppress(OSError):
                proc.terminate()  # the runner kills the child it is running, then exits
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(OSError):
                    proc.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=5)
        if self._home is not None:
            shutil.rmtree(self._home, ignore_errors=True)
            self._home = None

    def _read(self, deadline: float, watch: bool = False) -> Any:
        """One framed reply. With ``watch``, a runner seen stopped (SIGSTOP) twice a second apart
        ends the wait: SandboxError("... was stopped")."""
        try:
            proc = self._proc
            if proc is None or proc.stdout is None:
                raise OSError("the runner was stopped")
            fd = proc.stdout.fileno()
            if watch:
                seen = 0
                while not select.select([fd], [], [], min(1.0, max(deadline - time.monotonic(), 0)))[0]:
                    if time.monotonic() >= deadline:
                        raise TimeoutError
                    seen = seen + 1 if _is_stopped(proc.pid) else 0
                    if seen >= 2:
                        raise _RunnerLost("stopped")
            (n,) = struct.unpack("<Q", _read_exactly(fd, 8, deadline))
            if n > 4 * self.limits.result_bytes + (8 << 20):
                raise ValueError("reply too large")
            return unpack(_read_exactly(fd, n, deadline))
        except TimeoutError:
            raise _RunnerLost("hung") from None
        except (EOFError, OSError, ValueError, struct.error):
            raise _RunnerLost("died") from None

    def _kill_process(self) -> None:
        """End a runner that died, stopped or hangs, and the child group it was running (a stopped
        runner cannot do it: its children are found in /proc and their groups killed)."""
        proc = self._proc
        if proc is not None:
            for child in _children(proc.pid):
                with contextlib.suppress(OSError):
                    os.killpg(child, signal.SIGKILL)  # the child leads its own group
            with contextlib.suppress(OSError):
                proc.kill()
        self._stop_process()

    def run(self, job: Job, limits: Limits | None = None) -> RunResult:
        """Run ``job`` in a fresh child; returns its :class:`RunResult` (never raises for anything the
        checked code does; :class:`SandboxError` only when the runner itself fails twice)."""
        return self.run_all([job], limits)[0]

    def run_all(self, jobs: list[Job], limits: Limits | None = None) -> list[RunResult]:
        """Run several functions of one file (``jobs`` share ``path``), importing the file once: one
        :class:`RunResult` per job, in order. A job that kills its child (a crash, a timeout, an exit)
        fails alone: the jobs after it run in a fresh child. The wall-clock limit covers the import
        and the first job, then each further job; what the children printed is in every result."""
        if not jobs:
            return []
        if len({j.path for j in jobs}) != 1:
            raise ValueError("run_all runs functions of one file: every job needs the same path")
        limits = limits or self.limits
        request = pack({"jobs": [dataclasses.asdict(j) for j in jobs], "limits": dataclasses.asdict(limits)})
        # the watchdog: the runner gives each job its time limit (a fresh child per job at worst) and
        # answers; past this, it was stopped (or is stuck) and the run is charged to the code it ran
        watchdog = len(jobs) * (limits.seconds + 2.0) + 10.0
        with self._lock:
            closes, failed_starts, deaths = self._closes, 0, 0
            while True:
                try:
                    self.start()
                    proc = self._proc
                    if proc is None or proc.stdin is None:
                        raise OSError("the runner was stopped")
                    proc.stdin.write(struct.pack("<Q", len(request)) + request)
                    proc.stdin.flush()
                except (SandboxError, OSError, ValueError):  # ValueError: a stream closed under us
                    self._stop_process()
                    if self._closes != closes:
                        raise SandboxError("the runner was closed while the code ran") from None
                    failed_starts += 1
                    if failed_starts >= 2:
                        raise SandboxError("the sandbox runner failed twice; is the machine out of memory?") \
                            from None
                    continue
                try:
                    return _results_of(self._read(time.monotonic() + watchdog, watch=True), len(jobs))
                except _RunnerLost as e:  # the runner died, stopped or hung while the checked code ran
                    self._kill_process()
                    if self._closes != closes:
                        raise SandboxError("the runner was closed while the code ran") from None
                    deaths += e.how == "died"
                    # stopped or hung: the code did that (the watchdog is far past its limits); died: once
                    # may be the machine (the runner is tried again), twice is the code's doing
                    if e.how != "died" or deaths >= 2:
                        why = {"died": "killed", "stopped": "stopped"}.get(e.how, "stopped or hung")
                        return [RunResult(False, kind="runner", reason=f"{why} the grader's process (the sandbox "
                                          "runner that ran it)", seconds=watchdog) for _ in jobs]


def _is_stopped(pid: int) -> bool:
    """Linux: whether process ``pid`` is stopped (state T), e.g. by a SIGSTOP."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0] in (b"T", b"t")
    except (OSError, IndexError):
        return False


def _children(pid: int) -> list[int]:
    """Linux: the processes whose parent is ``pid``."""
    found = []
    try:
        names = os.listdir("/proc")
    except OSError:
        return []
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                if int(fh.read().rsplit(b")", 1)[1].split()[1]) == pid:
                    found.append(int(name))
        except (OSError, IndexError, ValueError):
            continue
    return found


def _results_of(body: Any, n: int) -> list[RunResult]:
    replies = body.get("replies") if isinstance(body, dict) else None
    if not isinstance(replies, list) or len(replies) != n:
        if isinstance(body, dict) and "failure" in body:  # the runner itself failed
            return [_result_of(body, body) for _ in range(n)]
        return [RunResult(False, kind="internal", reason="the runner's reply could not be read") for _ in range(n)]
    return [_result_of(r, body) for r in replies]


def _result_of(body: Any, shared: dict[str, Any]) -> RunResult:
    """One job's :class:`RunResult` from its reply, with the output and time of the whole run."""
    if not isinstance(body, dict):
        return RunResult(False, kind="internal", reason="the runner's reply could not be read")
    out = RunResult(ok="failure" not in body, kind=body.get("failure"), reason=body.get("reason"),
                    stdout=str(shared.get("stdout", "")), stderr=str(shared.get("stderr", "")),
                    stdout_dropped=int(shared.get("stdout_dropped", 0)),
                    stderr_dropped=int(shared.get("stderr_dropped", 0)), seconds=float(shared.get("seconds", 0.0)),
                    order=[str(k) for k in body.get("order", [])])
    for c in body.get("calls", []) if out.ok else []:
        result = c.get("result")
        if c.get("tuple"):
            result = tuple(result)
        out.calls.append(Call(result=result, holders=[list(h) for h in c.get("holders", [])],
                              locals=dict(c.get("locals", {})), error=c.get("error"),
                              seconds=float(c.get("seconds", 0.0))))
    return out


_shared: Runner | None = None
_shared_lock = threading.Lock()


def run(job: Job, limits: Limits | None = None) -> RunResult:
    """Run ``job`` on this process's shared runner (started on first use, stopped at exit)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = Runner()
            atexit.register(_shared.close)
        runner = _shared
    return runner.run(job, limits)


if __name__ == "__main__":
    _runner_main()

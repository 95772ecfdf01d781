"""Files in and out, safely.

Out: every file written for a user (models, reports, pictures, generated code) goes to a temporary
file beside the target and is moved into place with ``os.replace``, so a write that fails half way
(disk full, a file-size limit, the process killed) leaves the previous file as it was, never a
truncated one: :func:`atomic_write`, :func:`atomic_open`, :func:`atomic_path`. :func:`check_writable`
says, before any long work starts, whether a target can be written at all.

In: :func:`read_npz` reads a NumPy ``.npz`` archive with every array's size checked from its header
*before* anything is allocated, and one clear :class:`NpzError` for an empty, truncated or corrupt
file (never a ``BadZipFile`` traceback or a ``MemoryError``).
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np

__all__ = ["atomic_write", "atomic_open", "atomic_path", "check_writable", "OutputPathError", "read_npz",
           "NpzError", "memory_budget"]


# ---------------------------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; on success it replaces ``path``.

    For writers that want a file name (``fig.savefig``, Graphviz). ``suffix`` is the temporary
    file's extension (default: the target's), since some writers choose a format by it. The new
    file is flushed to disk before it replaces the old one. On any error (or interruption) the
    temporary file is removed and the target is untouched; only a process killed outright can leave
    the hidden temporary file (``.NAME.XXXX``) behind, and even then the target is whole.
    """
    target = Path(path)
    if target.is_symlink():  # write through a link (model.npz -> runs/v3.npz), do not replace the link
        target = Path(os.path.realpath(target))
    if target.exists() and not os.access(target, os.W_OK):
        raise PermissionError(f"{path}: the file is read-only")
    folder = target.parent if str(target.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=target.suffix if suffix is None else suffix,
                               dir=folder)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        _fsync(tmp_path)
        _keep_mode(target, tmp_path)
        os.replace(tmp_path, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        raise
    _fsync(folder)  # the rename itself, durable (best effort: not every file system allows it)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str]) -> Iterator[IO[bytes]]:
    """A binary file handle whose contents replace ``path`` only when the ``with`` block succeeds."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        yield fh


def atomic_write(path: str | os.PathLike[str], data: str | bytes, encoding: str = "utf-8") -> Path:
    """Write ``data`` (text or bytes) to ``path`` atomically and durably; returns the path."""
    target = Path(path)
    payload = data.encode(encoding) if isinstance(data, str) else data
    with atomic_open(target) as fh:
        fh.write(payload)
    return target


def _fsync(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _keep_mode(target: Path, tmp: Path) -> None:
    """Give the new file the old one's permissions (mkstemp makes it 0600), or the umask's default."""
    try:
        mode = target.stat().st_mode & 0o777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    os.chmod(tmp, mode)


class OutputPathError(ValueError):
    """A file that cannot be written where it was asked for (the message says why)."""


def check_writable(path: str | os.PathLike[str], what: str, suffixes: Iterable[str] | None = None) -> Path:
    """Check, before any work, that ``path`` can be written: a sensible extension (one of
    ``suffixes``, when given), an existing folder that this process may write into, and no folder
    in the target's place. Returns the path, or raises :class:`OutputPathError` naming ``what``."""
    target = Path(path)
    allowed = [s.lower() for s in suffixes] if suffixes is not None else None
    if target.is_dir():
        raise OutputPathError(f"{what} {path}: is a folder; give a file name inside it")
    if allowed is not None and target.suffix.lower() not in allowed:
        raise OutputPathError(f"{what} {path}: give a file name ending in {', '.join(allowed)}")
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.exists():
        raise OutputPathError(f"{what} {path}: the folder {folder} does not exist")
    if not folder.is_dir():
        raise OutputPathError(f"{what} {path}: {folder} is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputPathError(f"{what} {path}: cannot write into the folder {folder} (permission denied)")
    if target.exists() and not os.access(target, os.W_OK):
        raise OutputPathError(f"{what} {path}: the file is read-only")
    return target


# ---------------------------------------------------------------------------------------------
# reading .npz archives with their sizes checked first
# ---------------------------------------------------------------------------------------------


class NpzError(ValueError):
    """An ``.npz`` file that cannot be read as promised (missing, empty, truncated, corrupt, too large)."""


def memory_budget() -> int:
    """Bytes that one loaded data set may take: half of this machine's memory, or of the process's
    address-space limit when one is set (so a file never gets as far as a ``MemoryError``)."""
    total = 0
    with contextlib.suppress(ValueError, OSError, AttributeError):
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    with contextlib.suppress(ImportError, ValueError, OSError):
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
        if soft != resource.RLIM_INFINITY and soft > 0:
            total = min(total, soft) if total else soft
    return max(total // 2, 1 << 26) if total else 1 << 34


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n} bytes"


def read_npz(path: str | os.PathLike[str], names: Iterable[str] | None = None,
             max_bytes: int | None = None) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` file (only ``names``, when given), without pickles.

    Every array's shape and dtype are read from its ``.npy`` header first: an array whose header
    claims more bytes than its entry in the archive holds (a truncated or forged file), or more than
    ``max_bytes`` in all (default :func:`memory_budget`), is refused before anything is allocated.
    Raises :class:`NpzError` with one line saying what is wrong.
    """
    import zipfile
    import zlib

    name = os.fspath(path)
    budget = memory_budget() if max_bytes is None else max_bytes
    if not os.path.exists(name):
        raise NpzError(f"{name}: no such file")
    if os.path.isdir(name):
        raise NpzError(f"{name}: is a folder, not an .npz file")
    if os.path.getsize(name) == 0:
        raise NpzError(f"{name}: the file is empty")
    try:
        with open(name, "rb") as fh:
            magic = fh.read(6)
    except OSError as e:
        raise NpzError(f"{name}: cannot be read ({e.strerror or e})") from None
    if magic == b"\x93NUMPY":
        raise NpzError(f"{name}: holds a single array (np.save); save the named arrays together with "
                       f"np.savez({name!r}, X=X, y=y)")
    try:
        archive = zipfile.ZipFile(name)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError) as e:
        raise NpzError(f"{name}: not a NumPy .npz file, or a truncated or corrupt one ({e})") from None
    with archive:
        members = {m.filename.removesuffix(".npy"): m for m in archive.infolist() if m.filename.endswith(".npy")}
        wanted = list(members) if names is None else [n for n in names if n in members]
        headers = {k: _header(archive, members[k], name) for k in wanted}
        total = sum(nbytes for nbytes, _ in headers.values())
        if total > budget:
            sizes = ", ".join(f"{k} {shape}" for k, (_, shape) in headers.items())
            raise NpzError(f"{name}: the arrays need {_gib(total)} ({sizes}); the limit is {_gib(budget)} "
                           "(half of this machine's memory)")
        out: dict[str, np.ndarray] = {}
        for k in wanted:
            try:
                with archive.open(members[k]) as fh:
                    out[k] = np.lib.format.read_array(fh, allow_pickle=False)
            except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as e:
                raise NpzError(f"{name}: the array {k!r} cannot be read (truncated or corrupt? {e})") from None
    return out


def _header(archive: Any, member: Any, name: str) -> tuple[int, tuple[int, ...]]:
    """``(bytes of data, shape)`` from one member's ``.npy`` header, checked against the member's size."""
    import zipfile
    import zlib

    key = member.filename.removesuffix(".npy")
    try:
        with archive.open(member) as fh:
            version = np.lib.format.read_magic(fh)
            reader: Any = {(1, 0): np.lib.format.read_array_header_1_0,
                           (2, 0): np.lib.format.read_array_header_2_0}.get(version)
            if reader is None:
                raise ValueError(f"unsupported .npy format version {version}")
            shape, _fortran, dtype = reader(fh)
            header_len = fh.tell()
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, SyntaxError) as e:
        raise NpzError(f"{name}: the array {key!r} cannot be read (truncated or corrupt? {e})") from None
    if dtype.hasobject:
        raise NpzError(f"{name}: the array {key!r} holds Python objects ({dtype}); only numeric arrays are read "
                       "(a pickle could run code)")
    nbytes = math.prod(shape) * dtype.itemsize
    stored = member.file_size - header_len
    if nbytes > stored:
        raise NpzError(f"{name}: the array {key!r} claims shape {shape} of {dtype} ({_gib(nbytes)}), but the "
                       f"file holds only {_gib(max(stored, 0))} of it: truncated or corrupt")
    return nbytes, tuple(shape)

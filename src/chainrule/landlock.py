"""Landlock (Linux >= 5.13): what a sandboxed child may read, write and signal, enforced by the kernel.

The sandbox's child calls :func:`confine` just before it imports the checked file. From then on the
child and every process it starts:

- may write, create, rename or delete files only under its scratch folder (and write ``/dev/null``);
- may read and execute only what Python needs (the system folders, Python's own prefixes, the folders
  of ``sys.path`` and of the libraries already loaded) and the folders it is given (the submission's
  own); the reference answer's file, the grader's ``--out`` folder and the home folder are out of reach;
- cannot send a signal to, nor connect to an abstract Unix socket of, any process outside its domain
  (the runner, the grader, other submissions): Landlock ABI >= 6, Linux >= 6.12;
- cannot open or accept TCP connections: Landlock ABI >= 4, Linux >= 6.7.

Unprivileged, no root, no container: the rules are the kernel's. Where Landlock is missing (another
system, an older kernel, or a kernel built or booted without it), :func:`abi` is 0 and nothing is
confined; the sandbox's other limits still hold. The constants and struct layouts are those of
``include/uapi/linux/landlock.h``.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys

__all__ = ["abi", "confine", "system_paths"]

_CREATE_RULESET, _ADD_RULE, _RESTRICT_SELF = 444, 445, 446   # the same on every architecture but alpha
_CREATE_RULESET_VERSION = 1 << 0
_RULE_PATH_BENEATH = 1
_PR_SET_NO_NEW_PRIVS = 38

# filesystem access rights (and the ABI that brought them)
EXECUTE, WRITE_FILE, READ_FILE, READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
REMOVE_DIR, REMOVE_FILE, MAKE_CHAR, MAKE_DIR = 1 << 4, 1 << 5, 1 << 6, 1 << 7
MAKE_REG, MAKE_SOCK, MAKE_FIFO, MAKE_BLOCK, MAKE_SYM = 1 << 8, 1 << 9, 1 << 10, 1 << 11, 1 << 12
REFER = 1 << 13      # ABI 2
TRUNCATE = 1 << 14   # ABI 3
NET_BIND_TCP, NET_CONNECT_TCP = 1 << 0, 1 << 1                 # ABI 4
SCOPE_ABSTRACT_UNIX_SOCKET, SCOPE_SIGNAL = 1 << 0, 1 << 1      # ABI 6

_READ = EXECUTE | READ_FILE | READ_DIR
_FILE_RIGHTS = EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE     # the rights a rule on a file (not a folder) may grant

_SYSTEM = ("/usr", "/lib", "/lib32", "/lib64", "/libx32", "/bin", "/sbin", "/etc", "/dev", "/proc", "/sys",
           "/nix/store", "/gnu/store")


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1  # __attribute__((packed)) in the kernel's header
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.syscall.restype = ctypes.c_long
        return libc
    except (OSError, AttributeError):
        return None


def abi() -> int:
    """The Landlock ABI version this kernel offers to this process (0: none)."""
    libc = _libc()
    if libc is None:
        return 0
    n = libc.syscall(ctypes.c_long(_CREATE_RULESET), None, ctypes.c_size_t(0), ctypes.c_uint32(_CREATE_RULESET_VERSION))
    return max(int(n), 0)


def system_paths() -> list[str]:
    """What Python and the libraries already loaded need to read: the system folders, Python's
    prefixes, ``sys.path`` and the folders of every file mapped into this process."""
    found = [*_SYSTEM, sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix]
    found += [p for p in sys.path if p]
    with contextlib.suppress(OSError):
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                parts = line.split(None, 5)
                if len(parts) == 6 and parts[5].startswith("/"):
                    found.append(os.path.dirname(parts[5].strip()))
    out: list[str] = []
    for p in found:
        real = os.path.realpath(p)
        if real not in out and os.path.exists(real):
            out.append(real)
    return out


def confine(write: list[str], read: list[str], write_files: tuple[str, ...] = ("/dev/null",)) -> int:
    """Restrict this process and its future children (see the module docstring): full access under
    the folders ``write``, read and execute under ``read``, read and write of the files
    ``write_files``. Returns the ABI enforced (0: Landlock is not available, nothing was done).
    Raises OSError when Landlock is there but refused the rules."""
    libc = _libc()
    version = abi()
    if libc is None or version < 1:
        return 0
    write_rights = (WRITE_FILE | REMOVE_DIR | REMOVE_FILE | MAKE_CHAR | MAKE_DIR | MAKE_REG | MAKE_SOCK | MAKE_FIFO
                    | MAKE_BLOCK | MAKE_SYM | (REFER if version >= 2 else 0) | (TRUNCATE if version >= 3 else 0))
    handled = _READ | write_rights
    attr = _RulesetAttr(handled, NET_BIND_TCP | NET_CONNECT_TCP if version >= 4 else 0,
                        SCOPE_SIGNAL | SCOPE_ABSTRACT_UNIX_SOCKET if version >= 6 else 0)
    size = ctypes.sizeof(ctypes.c_uint64) * (3 if version >= 6 else 2 if version >= 4 else 1)
    ruleset = libc.syscall(ctypes.c_long(_CREATE_RULESET), ctypes.byref(attr), ctypes.c_size_t(size),
                           ctypes.c_uint32(0))
    if ruleset < 0:
        raise OSError(ctypes.get_errno(), "landlock_create_ruleset failed")
    try:
        rules = [(p, handled) for p in write] + [(p, _READ) for p in read] + \
                [(p, READ_FILE | WRITE_FILE | (TRUNCATE if version >= 3 else 0)) for p in write_files]
        for path, rights in rules:
            _add(libc, int(ruleset), path, rights)
        if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
        if libc.syscall(ctypes.c_long(_RESTRICT_SELF), ctypes.c_int(int(ruleset)), ctypes.c_uint32(0)) != 0:
            raise OSError(ctypes.get_errno(), "landlock_restrict_self failed")
    finally:
        os.close(int(ruleset))
    return version


def _add(libc: ctypes.CDLL, ruleset: int, path: str, rights: int) -> None:
    """One rule: ``rights`` beneath ``path`` (a file gets only the rights a file can have); a path
    that does not exist is skipped."""
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError:
        return
    try:
        if not os.path.isdir(path):
            rights &= _FILE_RIGHTS
        rule = _PathBeneathAttr(rights, fd)
        if libc.syscall(ctypes.c_long(_ADD_RULE), ctypes.c_int(ruleset), ctypes.c_int(_RULE_PATH_BENEATH),
                        ctypes.byref(rule), ctypes.c_uint32(0)) != 0:
            raise OSError(ctypes.get_errno(), f"landlock_add_rule({path}) failed")
    finally:
        os.close(fd)

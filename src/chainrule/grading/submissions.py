"""Finding the submissions in a folder, and the file that holds each graded function.

Layouts recognized (:func:`discover`):

- **one entry per student**: ``alice.py``, ``bob/solution.py`` (a folder, searched for Python files),
  ``carol.ipynb`` (a notebook: its code cells, with ``%magic`` and ``!shell`` lines commented out);
- **Gradescope's "Download Submissions" export**: ``submission_metadata.yml`` beside one
  ``submission_NNN/`` folder per submission; the students' names and ids come from the metadata;
- **Canvas's "Download Submissions" zip, unzipped**: flat files named
  ``name[_LATE]_USERID_SUBMISSIONID_original.py``; a student's files are staged together under their
  original names, so they can import each other.

Which file holds a function is decided by reading the files' text (``def q2a(`` at the start of a
line), never by running them. Nothing here executes a submission.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..fileio import atomic_write

__all__ = ["Submission", "discover", "choose_files", "file_choices", "digest", "SubmissionsError"]

PYTHON = (".py", ".ipynb")
_SKIP_DIRS = {"__pycache__", "__MACOSX", ".ipynb_checkpoints", ".git", "venv", ".venv", "node_modules"}
_MAX_FILES = 200        # Python files looked at per submission
_MAX_DEPTH = 6
_MAX_BYTES = 4 << 20    # a bigger "Python file" is not read to find functions in it
_CANVAS = re.compile(r"^(?P<name>[a-z0-9-]+?)(?P<late>_late)?_(?P<user>\d+)_(?P<sub>\d+)_(?P<file>.+)$",
                     re.IGNORECASE)


class SubmissionsError(ValueError):
    """The submissions folder cannot be used (one message)."""


@dataclass(frozen=True)
class Submission:
    """One student's submission: an id (unique, safe as a file name), the student's name where the
    export gives it, what was found (a file or folder), and its Python files (absolute paths, staged
    copies for notebooks and Canvas files)."""

    id: str
    path: str
    files: tuple[str, ...]
    name: str = ""
    late: bool = False
    notes: tuple[str, ...] = field(default=())
    sha256: str = ""      # of its files as read when the batch started (:func:`digest`)

    def readable(self) -> list[str]:
        """The folders its code may read in the sandbox: its own folder (or its file's), and those of
        its staged copies."""
        root = Path(self.path)
        own = [str(root.resolve())] if root.is_dir() else [str(root.resolve().parent)]
        return sorted(set(own) | {str(Path(f).parent) for f in self.files})


def digest(sub: Submission) -> str:
    """SHA-256 of a submission's files (names and contents): what its grade is bound to, so a file that
    changed after it was read (another submission wrote it, say) is noticed, and ``--resume`` keeps a
    record only for the files it was made from."""
    import hashlib

    h = hashlib.sha256()
    for f in sorted(sub.files):
        try:
            data = Path(f).read_bytes()
        except OSError:
            data = b"\0unreadable"
        h.update(f"{Path(f).name}\0{len(data)}\0".encode())
        h.update(data)
    return h.hexdigest()


def discover(root: str | Path, staging: str | Path) -> tuple[list[Submission], list[str]]:
    """The submissions in ``root`` (see the module docstring) and the entries skipped (with why).

    A single file, or a folder holding Python files at its top level and no student folders, is one
    submission (``chainrule grade --gradescope`` inside Gradescope's ``/autograder/submission``)."""
    root = Path(root)
    staging = Path(staging)
    if not root.exists():
        raise SubmissionsError(f"{root}: no such file or folder")
    if root.is_file():
        if root.suffix.lower() not in PYTHON:
            raise SubmissionsError(f"{root}: not a Python file (.py) or notebook (.ipynb)")
        return [_one(root.stem, root, [root], staging)], []
    if (root / "submission_metadata.yml").is_file():
        return _gradescope_export(root, staging)
    entries = sorted(p for p in root.iterdir() if not p.name.startswith(".") and p.name not in _SKIP_DIRS)
    files = [p for p in entries if p.is_file()]
    canvas = [p for p in files if p.suffix.lower() in PYTHON and _CANVAS.match(p.name)]
    if canvas and len(canvas) >= max(1, len([p for p in files if p.suffix.lower() in PYTHON]) // 2):
        return _canvas(files, entries, staging)
    subs, skipped = [], []
    for p in entries:
        if p.is_dir():
            found = _python_files(p)
            if found:
                subs.append(_one(_safe_id(p.name), p, found, staging))
            else:
                skipped.append(f"{p.name}/: no Python file or notebook in it")
        elif p.suffix.lower() in PYTHON:
            subs.append(_one(_safe_id(p.stem), p, [p], staging))
        else:
            skipped.append(f"{p.name}: not a Python file, notebook or folder"
                           + (" (unpack archives first)" if p.suffix.lower() in (".zip", ".tar", ".gz") else ""))
    _unique(subs)
    return subs, skipped


def _one(sid: str, path: Path, files: Sequence[Path], staging: Path, name: str = "", late: bool = False) -> Submission:
    staged = [_stage_notebook(f, staging / sid) if f.suffix.lower() == ".ipynb" else f.resolve() for f in files]
    return Submission(sid, str(path), tuple(str(f) for f in staged), name, late)


def _python_files(folder: Path) -> list[Path]:
    found: list[Path] = []
    stack = [(folder, 0)]
    while stack and len(found) < _MAX_FILES:
        d, depth = stack.pop()
        try:
            children = sorted(d.iterdir())
        except OSError:
            continue
        for c in children:
            if c.name.startswith(".") or c.name in _SKIP_DIRS or c.is_symlink():
                continue
            if c.is_dir() and depth < _MAX_DEPTH:
                stack.append((c, depth + 1))
            elif c.is_file() and c.suffix.lower() in PYTHON:
                found.append(c)
    return sorted(found, key=lambda p: (len(p.relative_to(folder).parts), str(p)))


def _safe_id(text: str) -> str:
    sid = re.sub(r"[^A-Za-z0-9._@-]+", "_", text).strip("._") or "submission"
    return sid[:100]


def _unique(subs: list[Submission]) -> None:
    seen: dict[str, int] = {}
    for k, s in enumerate(subs):
        n = seen.get(s.id, 0)
        seen[s.id] = n + 1
        if n:
            subs[k] = Submission(f"{s.id}-{n + 1}", s.path, s.files, s.name, s.late, s.notes)


def _gradescope_export(root: Path, staging: Path) -> tuple[list[Submission], list[str]]:
    meta = _gradescope_metadata((root / "submission_metadata.yml").read_text(encoding="utf-8", errors="replace"))
    subs, skipped = [], []
    for p in sorted(root.iterdir()):
        if not p.is_dir() or p.name.startswith("."):
            continue
        found = _python_files(p)
        people = meta.get(p.name, [])
        name = ", ".join(n for n, _ in people if n)
        if not found:
            skipped.append(f"{p.name}/{' (' + name + ')' if name else ''}: no Python file or notebook in it")
            continue
        subs.append(_one(_safe_id(p.name), p, found, staging, name))
    _unique(subs)
    return subs, skipped


def _gradescope_metadata(text: str) -> dict[str, list[tuple[str, str]]]:
    """``submission_NNN`` -> [(name, sid), ...] from Gradescope's ``submission_metadata.yml``, read
    line by line (the export is Ruby-style YAML: ``:submitters:`` lists of ``:name:`` and ``:sid:``),
    so that no YAML library is needed; what cannot be read is left out."""
    out: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    for raw in text.splitlines():
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        if not raw[0].isspace():
            key = raw.split(":", 1)[0].strip().strip("'\"")
            current = out.setdefault(key, []) if key.startswith("submission_") else None
            continue
        if current is None:
            continue
        m = re.match(r"^\s*-?\s*:(name|sid):\s*(.*)$", raw)
        if not m:
            continue
        value = m.group(2).strip().strip("'\"")
        if m.group(1) == "name" or not current:
            current.append((value if m.group(1) == "name" else "", value if m.group(1) == "sid" else ""))
        else:
            n, _ = current[-1]
            current[-1] = (n, value)
    return out


def _canvas(files: list[Path], entries: list[Path], staging: Path) -> tuple[list[Submission], list[str]]:
    groups: dict[tuple[str, str], list[tuple[Path, str]]] = {}
    late: set[tuple[str, str]] = set()
    skipped = [f"{p.name}/: a folder beside Canvas's files" for p in entries if p.is_dir()]
    for p in files:
        m = _CANVAS.match(p.name)
        if not m or p.suffix.lower() not in PYTHON:
            skipped.append(f"{p.name}: not a Canvas submission file (name_USERID_SUBMISSIONID_file.py)")
            continue
        key = (m.group("name"), m.group("user"))
        # Canvas adds -1, -2 to a file submitted again: q2-1.py is the student's q2.py
        original = re.sub(r"-\d+(\.[A-Za-z]+)$", r"\1", m.group("file"))
        groups.setdefault(key, []).append((p, original))
        if m.group("late"):
            late.add(key)
    names = [k[0] for k in groups]
    subs = []
    for (name, user), items in sorted(groups.items()):
        sid = _safe_id(name if names.count(name) == 1 else f"{name}_{user}")
        folder = staging / sid
        folder.mkdir(parents=True, exist_ok=True)
        staged = []
        for p, original in sorted(items, key=lambda t: t[0].name):
            target = folder / _safe_file(original)
            shutil.copyfile(p, target)
            staged.append(target)
        found = [_stage_notebook(f, folder) if f.suffix.lower() == ".ipynb" else f.resolve() for f in staged]
        subs.append(Submission(sid, str(items[0][0]), tuple(str(f) for f in found), name, (name, user) in late))
    return subs, skipped


def _safe_file(name: str) -> str:
    stem, dot, suffix = name.rpartition(".")
    return (_safe_id(stem) if dot else _safe_id(name)) + (f".{suffix.lower()}" if dot else "")


def _stage_notebook(path: Path, folder: Path) -> Path:
    """A notebook's code cells as a Python file (magics and shell lines commented out); a notebook that
    cannot be read becomes a file that says so when it is imported."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / (_safe_id(path.stem) + ".py")
    try:
        nb = json.loads(path.read_text(encoding="utf-8"))
        cells = [c for c in nb.get("cells", []) if c.get("cell_type") == "code"]
        chunks = []
        for c in cells:
            src = c.get("source", "")
            lines = ("".join(src) if isinstance(src, list) else str(src)).splitlines()
            chunks.append("\n".join(("# " + ln) if ln.lstrip().startswith(("%", "!")) else ln for ln in lines))
        text = "\n\n".join(chunks) + "\n"
    except (OSError, ValueError, AttributeError, TypeError) as e:
        text = f"raise ImportError({f'{path.name} is not a readable notebook: {type(e).__name__}'!r})\n"
    atomic_write(target, text)
    return target


def choose_files(sub: Submission, functions: Sequence[str]) -> dict[str, str | None]:
    """For each function, the submission's file that defines it (see :func:`file_choices`)."""
    return file_choices(sub, functions)[0]


def file_choices(sub: Submission, functions: Sequence[str]) -> tuple[dict[str, str | None], list[str]]:
    """For each function, the submission's file that defines it (``def NAME(`` at the start of a line;
    the shallowest, then the one named after it, then the first by name); a function defined in none
    goes to the only file, or to None (no file to run) when there are several. Also a warning for
    each function that several files define, naming the one graded and why."""
    texts = {}
    for f in sub.files:
        try:
            if Path(f).stat().st_size <= _MAX_BYTES:
                texts[f] = Path(f).read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
    chosen: dict[str, str | None] = {}
    warnings: list[str] = []
    for fn in functions:
        pattern = re.compile(rf"^def\s+{re.escape(fn)}\s*\(", re.MULTILINE)
        hits = [f for f in sub.files if f in texts and pattern.search(texts[f])]
        if hits:
            hits.sort(key=lambda f: (len(Path(f).parts), Path(f).stem != fn, f))
            chosen[fn] = hits[0]
            if len(hits) > 1:
                names = [_relative(f, Path(sub.path)) for f in hits]
                warnings.append(f"{fn} is defined in {len(hits)} files ({', '.join(names)}): graded {names[0]} "
                                "(the file nearest the top of the folder, then the one named after the function, "
                                "then the first by name)")
        else:
            chosen[fn] = sub.files[0] if len(sub.files) == 1 else None
    return chosen, warnings


def _relative(f: str, root: Path) -> str:
    """A file as the student knows it: relative to their folder, else its name (a staged copy)."""
    try:
        return str(Path(f).relative_to(root.resolve()))
    except ValueError:
        return Path(f).name

"""The memory planner every back end uses: liveness, free lists and output slots.

A back end describes its program as :class:`Step` s (what each step writes into planned memory and
what it reads) and gets a :class:`Plan` back: where each value lives (an output of the call, or a
buffer reused as soon as the value before it is dead), which buffers to allocate, and which
outputs are filled by a copy. The planned NumPy code plans whole arrays, the tiled and fused
back ends plan block buffers, the fused loops plan their scratch blocks: one allocator for all.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Step:
    """One step as the planner sees it: the values it stores into planned memory (each gets a
    storage of its own) and the values it reads. ``in_place``: a stored value may take the storage
    of a value read here for the last time (safe when each element is read before it is written)."""

    writes: list[str]
    reads: list[str]
    in_place: bool = True


@dataclass
class Plan:
    """Where every planned value lives: ``dest[value]`` is ``o{k}`` (output slot ``k``) or a buffer
    name; ``buffers[j]`` is the key (shape, dtype or kind) buffer ``j`` was allocated for."""

    dest: dict[str, str] = field(default_factory=dict)
    buffers: list[Hashable] = field(default_factory=list)
    slots: dict[str, int] = field(default_factory=dict)
    copies: list[tuple[int, Any]] = field(default_factory=list)
    names: list[str] = field(default_factory=list)


def output_slots(returns: Sequence[Any], produced: Iterable[str], prefilled: Iterable[Any] = ()
                 ) -> tuple[dict[str, int], list[tuple[int, Any]]]:
    """Which returned values are computed straight into their output (``slots``: value -> output
    index) and which outputs are filled by a copy (``copies``: an input or a number returned, a
    value returned twice, a value the steps do not produce). Outputs in ``prefilled`` (returned
    constants allocated filled) are neither."""
    produced = set(produced)
    skip = set(prefilled)
    slots: dict[str, int] = {}
    copies: list[tuple[int, Any]] = []
    for k, r in enumerate(returns):
        if isinstance(r, str) and r in skip:
            continue
        if isinstance(r, str) and r in produced and r not in slots:
            slots[r] = k
        else:
            copies.append((k, r))
    return slots, copies


def last_uses(steps: Sequence[Step], returns: Iterable[Any] = (), roots: dict[str, str] | None = None
              ) -> dict[str, int]:
    """The index of the last step that reads each value (a view keeps its base alive: liveness is
    per storage root); returned values live past the last step."""
    roots = roots or {}
    last: dict[str, int] = {}
    for k, s in enumerate(steps):
        for a in s.reads:
            last[roots.get(a, a)] = k
    for r in returns:
        if isinstance(r, str):
            last[roots.get(r, r)] = len(steps)
    return last


def plan_memory(steps: Sequence[Step], key: Callable[[str], Hashable], *, returns: Sequence[Any] = (),
                slots: dict[str, int] | None = None, roots: dict[str, str] | None = None,
                prefix: str = "b") -> Plan:
    """Give each value written by ``steps`` a storage: its output slot when ``slots`` names it,
    else the storage of an operand of the same key that dies at this step (``in_place`` steps),
    else a free buffer of that key, else a new buffer ``{prefix}{j}``. A buffer is free again after
    the last step that reads its value (``roots``: views, whose reads keep their base alive)."""
    roots = roots or {}
    slots = dict(slots or {})
    plan = Plan(slots=slots)
    last = last_uses(steps, returns, roots)
    free: dict[Hashable, list[str]] = {}
    owned: set[str] = set()          # values held in planner buffers (not outputs, inputs or views)
    for k, s in enumerate(steps):
        dying = [a for a in dict.fromkeys(s.reads) if a in owned and a not in roots and last.get(a, -1) <= k]
        taken: set[str] = set()
        for w in s.writes:
            if w in slots:
                plan.dest[w] = f"o{slots[w]}"
                continue
            kw = key(w)
            d = None
            if s.in_place:
                d = next((a for a in dying if key(a) == kw and plan.dest[a] not in taken), None)
                if d is not None:
                    dying.remove(d)
                    owned.discard(d)
            if d is not None:
                dest = plan.dest[d]
            elif free.get(kw):
                dest = free[kw].pop()
            else:
                dest = f"{prefix}{len(plan.buffers)}"
                plan.buffers.append(kw)
                plan.names.append(dest)
            plan.dest[w] = dest
            taken.add(dest)
            owned.add(w)
        for a in dying:
            owned.discard(a)
            free.setdefault(key(a), []).append(plan.dest[a])
        for w in s.writes:   # written and never read: its storage is free at once
            if w in owned and last.get(w, -1) <= k:
                owned.discard(w)
                free.setdefault(key(w), []).append(plan.dest[w])
    return plan

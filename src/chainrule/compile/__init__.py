"""``cr.compile``: the generated forward+backward program, lowered to fast code and compiled.

One module per stage, imported in this order and never the other way (no cycles):

* :mod:`.ir` -- the instruction form (``Ins``, ``Code``), use counts, the interpreter ``execute``;
* :mod:`.lower` -- the readable program of :mod:`chainrule.codegen` -> instructions;
* :mod:`.passes` -- the algebra passes, each ``Code -> Code`` (``PIPELINE``);
* :mod:`.planner` -- the one memory planner: liveness, free lists, output slots;
* :mod:`.blocks` -- running elementwise programs block by block, on one thread or several;
* :mod:`.backends` -- what an emitter is, and the choice among the ``emit_*`` modules:
  :mod:`.emit_numba` (fused loops, with :mod:`.vecmath`), :mod:`.emit_numexpr`,
  :mod:`.emit_tiled`, :mod:`.emit_numpy` (a back end is one more ``emit_*`` module);
* :mod:`.pipeline` -- ``lower``: program -> passes -> emitter -> a Python function;
* :mod:`.specialize` -- the public ``compile`` and ``Compiled``: signature cache, validation probes.
"""

from __future__ import annotations

from .backends import BACKENDS
from .blocks import PARALLEL_MIN_SIZE, TILE
from .emit_numba import FUSED_MIN_SIZE
from .emit_numexpr import NUMEXPR_MIN_SIZE
from .emit_numpy import PLAN_MIN_SIZE
from .ir import Code, Ins
from .pipeline import compile_source, lower
from .specialize import Compiled, compile

__all__ = ["compile", "Compiled", "lower", "compile_source", "Code", "Ins", "BACKENDS", "TILE", "PLAN_MIN_SIZE",
           "NUMEXPR_MIN_SIZE", "FUSED_MIN_SIZE", "PARALLEL_MIN_SIZE"]

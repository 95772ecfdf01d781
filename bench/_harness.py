"""Locate and import the team's peer benchmark harness (``../shared/bench`` beside the checkout).

Its ``seed_functions`` holds the worksheet's five functions written once generically, their
hand-written staged NumPy versions (the reference every ratio is taken against) and input makers;
``run_peers`` holds the timing loop and the peer engines. Set CHAINRULE_PEER_BENCH to point elsewhere.
"""

from __future__ import annotations

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HARNESS = os.environ.get("CHAINRULE_PEER_BENCH", os.path.join(os.path.dirname(ROOT), "shared", "bench"))

if not os.path.isfile(os.path.join(HARNESS, "seed_functions.py")):
    sys.exit(f"peer benchmark harness not found at {HARNESS}; set CHAINRULE_PEER_BENCH to its folder")
sys.path.insert(0, HARNESS)

import run_peers  # noqa: E402,F401
import seed_functions  # noqa: E402,F401

"""Grading a class (``chainrule grade``): every submission run in the sandbox, each problem scored
against a reference with a verdict per returned value and feedback on the first wrong step.

- :mod:`.problems`: the problems, from ``--against`` references (a key function, an expression, a
  worksheet file), their test points and points;
- :mod:`.submissions`: the submissions in a folder (one per student, Gradescope's and Canvas's
  exports) and the file holding each function;
- :mod:`.grade`: one submission graded (what a worker runs);
- :mod:`.batch`: a class graded by ``-j N`` workers or a Dask cluster, results appended as they
  finish, ``--resume``;
- :mod:`.report`: results.csv, feedback pages, the class summary, Gradescope's results.json.
"""

from __future__ import annotations

from .batch import run_batch
from .grade import Plan, grade_submission
from .problems import Problem, problems_from
from .submissions import Submission, discover

__all__ = ["Plan", "Problem", "Submission", "discover", "grade_submission", "problems_from", "run_batch"]

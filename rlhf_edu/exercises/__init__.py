"""Exercise checkers: ``check_<name>(student_fn)`` for every chapter's exercises.

Each chapter's checkers live in a module named after the chapter's idea (``bradley_terry``,
``divergences``, ...), built with :func:`rlhf_edu.exercises.checker.make_checker`; every ``check_*`` is
re-exported here, so a notebook writes ``from rlhf_edu.exercises import check_bt_prob``.
"""

import importlib as _importlib
import pkgutil as _pkgutil

from rlhf_edu.exercises.checker import ExerciseResult, compare_outputs, make_checker

__all__ = ["ExerciseResult", "compare_outputs", "make_checker", "solutions_for_tests"]

#: name of a checker -> (a right solution, a plausibly wrong one); filled by each chapter module's
#: ``WRONG_SOLUTIONS`` / ``RIGHT_SOLUTIONS`` so the test suite can prove every checker can fail.
_PAIRS = {}

for _info in _pkgutil.iter_modules(__path__):
    if _info.name == "checker":
        continue
    _mod = _importlib.import_module(f"{__name__}.{_info.name}")
    for _n in dir(_mod):
        if _n.startswith("check_"):
            globals()[_n] = getattr(_mod, _n)
            __all__.append(_n)
    for _n, _wrong in getattr(_mod, "WRONG_SOLUTIONS", {}).items():
        _PAIRS[_n] = (_mod.RIGHT_SOLUTIONS[_n], _wrong)


def solutions_for_tests() -> dict:
    """``{checker name: (right solution, wrong solution)}`` across chapters, for the test suite."""
    return dict(_PAIRS)

"""Every worked example in a docstring of rlhf_edu runs and prints what it shows (Spinning Up style docs)."""

import doctest
import importlib
import pkgutil

import numpy as np
import pytest

import rlhf_edu

MODULES = sorted(m.name for m in pkgutil.walk_packages(rlhf_edu.__path__, "rlhf_edu.")
                 if not m.name.endswith("__main__"))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    with np.printoptions(legacy="1.25"):  # reprs as the docstrings write them: 0.5, not np.float64(0.5)
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} docstring examples of {name} failed (run python -m doctest -v)"

"""NumPy references: every formula of the book as plainly as it can be written.

``from rlhf_edu import numpy as rn`` gives every public function of every module here, e.g.
``rn.kl_divergence``, ``rn.gae``, ``rn.dpo_loss``. The PyTorch twins live in ``rlhf_edu.torch`` under the
same module and function names.
"""

import importlib as _importlib

#: The modules of the numeric core, in the order of the book's chapters. Each one is mirrored by
#: ``rlhf_edu.torch.<module>`` (checked by ``tests/test_twins.py``).
MODULES = (
    "preferences",
    "divergences",
    "mdp",
    "advantages",
    "policy_gradient",
    "direct",
    "optimal",
    "sampling",
    "overoptimization",
    "anatomy",
)


def export_modules(package: str, namespace: dict) -> list:
    """Import ``package.<m>`` for every m in MODULES into ``namespace`` with its public names.

    Returns the list of exported function names (the package's ``__all__``).
    """
    exported = []
    for name in MODULES:
        module = _importlib.import_module(f"{package}.{name}")
        namespace[name] = module
        for fn in module.__all__:
            namespace[fn] = getattr(module, fn)
            exported.append(fn)
    return exported


__all__ = export_modules(__name__, globals())

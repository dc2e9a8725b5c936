"""Slide-ready figures of the book, built by ``rlhf-edu figures`` into ``figures/``.

Each chapter's figures live in a module named after the chapter's idea and register themselves with
:func:`slide_figure`; a figure function takes no argument and returns a matplotlib ``Figure``. A chapter
notebook calls the same function, so the slide and the notebook show one picture.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from typing import Callable

REGISTRY: dict[str, Callable] = {}


def slide_figure(name: str) -> Callable[[Callable], Callable]:
    """Register ``fn`` as the slide figure ``figures/<name>.png``."""

    def register(fn: Callable) -> Callable:
        if name in REGISTRY and REGISTRY[name] is not fn:
            raise ValueError(f"two slide figures are named {name!r}")
        REGISTRY[name] = fn
        return fn

    return register


def load_all() -> dict[str, Callable]:
    """Import every figure module of this package, filling :data:`REGISTRY`."""
    for info in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{info.name}")
    return REGISTRY


def build_figures(out_dir="figures", only=None, dpi=150, verbose=True) -> list[Path]:
    """Draw the registered figures (all, or those named in ``only``) as PNG files into ``out_dir``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    registry = load_all()
    names = sorted(registry) if not only else list(only)
    unknown = [n for n in names if n not in registry]
    if unknown:
        raise ValueError(f"only names unknown figures {unknown}; known: {sorted(registry)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name in names:
        fig = registry[name]()
        path = out / f"{name}.png"
        fig.savefig(path, dpi=dpi, bbox_inches="tight")
        plt.close(fig)
        written.append(path)
        if verbose:
            print(f"wrote {path}")
    return written

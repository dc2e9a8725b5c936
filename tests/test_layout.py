"""The package's layout rules: a module and a function never share a name, and every chapter's MyST
Markdown source agrees with its stored notebook, cell by cell."""

import importlib
import inspect
import pkgutil
from pathlib import Path

import jupytext
import nbformat
import pytest

import rlhf_edu

CHAPTERS = Path(__file__).resolve().parents[1] / "chapters"


def _modules():
    return [m for m in pkgutil.walk_packages(rlhf_edu.__path__, "rlhf_edu.")]


@pytest.mark.parametrize("info", _modules(), ids=lambda m: m.name)
def test_module_and_function_never_share_a_name(info):
    module = importlib.import_module(info.name)
    short = info.name.rsplit(".", 1)[-1]
    obj = getattr(module, short, None)
    assert not callable(obj), f"{info.name} defines or imports a callable named like the module: {short}"
    if info.ispkg:
        for sub in pkgutil.iter_modules(module.__path__):
            attr = getattr(module, sub.name, None)
            assert attr is None or inspect.ismodule(attr), (
                f"{info.name}.{sub.name} is a {type(attr).__name__}, hiding the module of that name"
            )


NOTEBOOKS = sorted(CHAPTERS.glob("[0-9A-Z]*_*.ipynb"))


def test_every_chapter_has_a_source_and_no_builder_is_left():
    assert NOTEBOOKS, "no chapter notebooks found"
    assert not (CHAPTERS / "build").exists(), "chapters/build/ is gone: the .md files are the sources"
    sources = sorted(CHAPTERS.glob("[0-9A-Z]*_*.md"))
    assert [p.stem for p in sources] == [p.stem for p in NOTEBOOKS]


def _cells(nb):
    return [(c.cell_type, c.source, list(c.metadata.get("tags", []))) for c in nb.cells]


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name)
def test_markdown_source_and_notebook_agree(notebook):
    """Edit the .md, then `make chapter N=..` (jupytext writes the .ipynb and nbconvert executes it)."""
    stored = nbformat.read(notebook, as_version=4)
    source = jupytext.read(notebook.with_suffix(".md"))
    assert stored.metadata.get("jupytext", {}).get("formats") == "ipynb,md:myst", "pair it: jupytext --set-formats ipynb,md:myst"
    a, b = _cells(source), _cells(stored)
    assert len(a) == len(b), f"{notebook.name}: {len(a)} cells in the .md, {len(b)} in the .ipynb; run make chapter"
    for i, (x, y) in enumerate(zip(a, b)):
        assert x == y, f"{notebook.name} cell {i} differs between .md and .ipynb; run `make chapter N={notebook.name[:2]}`"
    for i, cell in enumerate(stored.cells):
        if cell.cell_type == "code":
            assert cell.get("execution_count") is not None, f"{notebook.name} cell {i} is stored unexecuted"

"""What every chapter's build script shares: collect markdown and code cells, write the notebook.

A build script (``chapters/build/NN_topic.py``) is the chapter's source: prose in ``md(...)``, code in
``code(...)`` (tag a cell ``nbval-ignore-output`` when its output is a time or otherwise varies), then
``book.write()``. The written notebook has no outputs; execute it to store them:

    .venv/bin/python chapters/build/01_bradley_terry.py
    .venv/bin/jupyter nbconvert --to notebook --execute --inplace chapters/01_bradley_terry.ipynb
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

CHAPTERS = Path(__file__).resolve().parents[1]


class ChapterBuilder:
    """The cells of one chapter notebook, in order; ``write()`` saves them as ``chapters/<filename>``."""

    def __init__(self, filename: str):
        self.filename = filename
        self.cells = []

    def md(self, text: str) -> None:
        self.cells.append(new_markdown_cell(text.strip("\n")))

    def code(self, text: str, tags=()) -> None:
        cell = new_code_cell(text.strip("\n"))
        if tags:
            cell.metadata["tags"] = list(tags)
        self.cells.append(cell)

    def write(self, out=None) -> Path:
        """Write the notebook (default ``chapters/<filename>``; a path given as ``argv[1]`` overrides it)."""
        if out is None and len(sys.argv) > 1:
            out = sys.argv[1]
        nb = new_notebook(cells=self.cells)
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nb.metadata["language_info"] = {"name": "python"}
        out = Path(out) if out is not None else CHAPTERS / self.filename
        nbformat.write(nb, out)
        print(f"wrote {out}")
        return out

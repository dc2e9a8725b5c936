#!/usr/bin/env python
"""Write the student edition of the chapters: solutions replaced by stubs, those cells' outputs cleared.

Usage::

    .venv/bin/python tools/student.py                      # every chapters/*.ipynb -> _build/student/
    .venv/bin/python tools/student.py --out DIR chapters/02_kl_divergence.ipynb

An exercise cell carries its solution between nbgrader's markers::

    def my_kl_divergence(p, q):
        ### BEGIN SOLUTION
        ...
        ### END SOLUTION
    result = check_kl_divergence(my_kl_divergence)

nbgrader's own ``ClearSolutions`` preprocessor (run by nbconvert's ``NotebookExporter``, nothing executed)
replaces each marked region by ``# YOUR CODE HERE`` / ``raise NotImplementedError()``, indented like the
marker; the cells are found by the markers alone (``enforce_metadata = False``: no nbgrader cell metadata
needed). A cell that had a solution also loses its outputs and execution count (they show PASS and the
solution's numbers); every other cell keeps its stored outputs, figures included. Run in the student
edition, the stub makes the checker print "NOT DONE YET <name>" instead of crashing the notebook.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nbgrader.preprocessors import ClearSolutions

ROOT = Path(__file__).resolve().parent.parent
BEGIN, END = "BEGIN SOLUTION", "END SOLUTION"


class ClearSolutionsAndOutputs(ClearSolutions):
    """nbgrader's ``ClearSolutions``, which also clears the outputs of the cells it changed."""

    def preprocess_cell(self, cell, resources, cell_index):
        had_solution = self.begin_solution_delimeter in cell.source
        cell, resources = super().preprocess_cell(cell, resources, cell_index)
        if had_solution and cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
            cell.metadata.pop("execution", None)  # nbclient's timestamps of the solution's run
        return cell, resources


def exporter():
    from nbconvert import NotebookExporter
    from traitlets.config import Config

    c = Config()
    c.ClearSolutions.enforce_metadata = False
    c.ClearSolutions.begin_solution_delimeter = BEGIN
    c.ClearSolutions.end_solution_delimeter = END
    exp = NotebookExporter(config=c)
    exp.register_preprocessor(ClearSolutionsAndOutputs(config=c), enabled=True)
    return exp


def build(notebooks: list[Path], out: Path) -> list[Path]:
    """Write ``out/<name>.ipynb``, the student edition of each notebook; return their paths."""
    import nbformat

    out.mkdir(parents=True, exist_ok=True)
    exp = exporter()
    written = []
    for nb_path in notebooks:
        nb = nbformat.read(nb_path, as_version=4)
        body, _ = exp.from_notebook_node(nb)
        dest = out / nb_path.name
        dest.write_text(body, encoding="utf-8")
        written.append(dest)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="stored notebooks (default: chapters/*.ipynb)")
    parser.add_argument("--out", type=Path, default=ROOT / "_build" / "student",
                        help="output folder (default: _build/student)")
    args = parser.parse_args(argv)
    notebooks = args.notebooks or sorted((ROOT / "chapters").glob("*.ipynb"))
    for path in build(notebooks, args.out):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

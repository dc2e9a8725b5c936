#!/usr/bin/env python
"""Add reveal.js slide metadata to a chapter's MyST source, by a fixed rule.

Usage::

    .venv/bin/python tools/annotate_slides.py chapters/02_kl_divergence.md [more.md ...] [--max-lines 10]
    .venv/bin/jupytext --sync chapters/02_kl_divergence.md      # carry the metadata into the .ipynb

The metadata is the standard Jupyter ``slideshow`` cell metadata that ``jupyter nbconvert --to slides``
(and RISE) read, plus one tag that ``tools/slides.py`` reads. The rule:

1. A markdown cell is split before every heading line of level 1 to 3 (``# ``, ``## ``, ``### ``) that
   is not inside a code fence, so every such heading starts its own cell (the book renders the same page:
   jupytext writes the split as a ``+++`` line).
2. A markdown cell starting with ``# `` (the chapter title) or ``## `` gets ``slide_type: slide``;
   one starting with ``### `` gets ``slide_type: subslide`` (a vertical slide under its section).
   Other markdown cells continue the current slide (no metadata, i.e. ``-``).
3. A code cell with a solution or a checker call (``### BEGIN SOLUTION``, ``# YOUR CODE HERE`` or
   ``check_<name>(``) is an exercise: ``slide_type: skip``; the exercise's statement (markdown) stays.
4. A code cell of more than ``--max-lines`` lines (default 10) gets the tag ``slides-remove-input``:
   on the slides only its output shows (a figure, a table); the book and the notebook are unchanged.
   A long cell without output therefore shows nothing on the slides.
5. A code cell whose output in the paired, executed ``.ipynb`` (same name, same folder; matched by the
   cell's code) holds an image starts a ``subslide`` when more than 8 lines of text and shown code, or
   another figure, already stand on the current slide, so that a figure gets the height of a slide rather
   than being cut. When the cell right before it is a short markdown cell (at most 4 lines: the figure's
   caption), that cell starts the subslide instead. Without a paired ``.ipynb`` this rule is not applied.
6. Cells the author already decided on are kept as they are: a cell whose metadata has a ``slideshow``
   key is neither split nor changed (give a long code cell ``slideshow: {slide_type: '-'}`` to keep its
   code on the slides), and a tag already present is not added twice. Running the script twice changes
   nothing the second time.

Speaker notes are written by hand: a markdown cell with ``slideshow: {slide_type: notes}``.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import jupytext
import nbformat

HIDE_INPUT_TAG = "slides-remove-input"
DEFAULT_MAX_LINES = 10
FIGURE_ROOM_LINES = 8
CAPTION_LINES = 4
FIGURE_LINES = 100  # a figure fills what is left of a slide

_HEADING = re.compile(r"^(#{1,3}) \S")
_FENCE = re.compile(r"^\s*(```|~~~|:::)")
_EXERCISE = re.compile(r"### BEGIN SOLUTION|# YOUR CODE HERE|\bcheck_\w+\(")


def split_markdown(source: str) -> list[str]:
    """Split a markdown cell's text before each level 1-3 heading outside code fences."""
    pieces: list[list[str]] = [[]]
    fence: str | None = None
    for line in source.split("\n"):
        m = _FENCE.match(line)
        if m:
            fence = None if fence == m.group(1) else (fence or m.group(1))
        if fence is None and _HEADING.match(line) and any(s.strip() for s in pieces[-1]):
            pieces.append([])
        pieces[-1].append(line)
    return ["\n".join(p).strip("\n") for p in pieces if any(s.strip() for s in p)]


def slide_type_of_markdown(source: str) -> str | None:
    m = _HEADING.match(source.lstrip("\n"))
    if not m:
        return None
    return "subslide" if len(m.group(1)) == 3 else "slide"


def _n_lines(text: str) -> int:
    return len(text.strip("\n").split("\n")) if text.strip() else 0


def _has_image(cell) -> bool:
    return any(
        any(k.startswith("image/") for k in out.get("data", {}))
        for out in cell.get("outputs", [])
    )


def annotate(nb: nbformat.NotebookNode, max_lines: int = DEFAULT_MAX_LINES,
             executed: nbformat.NotebookNode | None = None) -> nbformat.NotebookNode:
    """Return ``nb`` with slide metadata added by the rule of the module docstring (in place).

    ``executed`` is the paired notebook with outputs; it tells which code cells draw a figure.
    """
    figures = {c.source.strip() for c in (executed.cells if executed else []) if c.cell_type == "code" and _has_image(c)}
    cells = []
    fresh = set()  # ids of the markdown cells this run made and left without slide metadata
    on_slide = 0  # lines of text and shown code on the current slide so far

    def place(cell, shown_lines):
        nonlocal on_slide
        kind = cell.metadata.get("slideshow", {}).get("slide_type", "-")
        if kind in ("slide", "subslide"):
            on_slide = 0
        if kind not in ("skip", "notes"):
            on_slide += shown_lines
        cells.append(cell)

    def start_subslide_at_figure(cell, shown_lines):
        nonlocal on_slide
        caption = cells[-1] if cells else None
        if (caption is not None and id(caption) in fresh and _n_lines(caption.source) <= CAPTION_LINES
                and on_slide - _n_lines(caption.source) > 0):
            caption.metadata["slideshow"] = {"slide_type": "subslide"}
            on_slide = _n_lines(caption.source) + shown_lines + FIGURE_LINES
            cells.append(cell)
        else:
            cell.metadata["slideshow"] = {"slide_type": "subslide"}
            place(cell, shown_lines + FIGURE_LINES)

    for cell in nb.cells:
        if "slideshow" in cell.metadata:
            hidden = HIDE_INPUT_TAG in cell.metadata.get("tags", [])
            figure = cell.cell_type == "code" and cell.source.strip() in figures
            place(cell, (0 if hidden else _n_lines(cell.source)) + (FIGURE_LINES if figure else 0))
            continue
        if cell.cell_type == "markdown":
            for text in split_markdown(cell.source):
                new = nbformat.v4.new_markdown_cell(text, metadata=dict(cell.metadata))
                new.pop("id", None)
                kind = slide_type_of_markdown(text)
                if kind:
                    new.metadata["slideshow"] = {"slide_type": kind}
                else:
                    fresh.add(id(new))
                place(new, _n_lines(text))
        elif cell.cell_type == "code":
            shown = _n_lines(cell.source)
            if _EXERCISE.search(cell.source):
                cell.metadata["slideshow"] = {"slide_type": "skip"}
            else:
                if shown > max_lines:
                    tags = cell.metadata.setdefault("tags", [])
                    if HIDE_INPUT_TAG not in tags:
                        tags.append(HIDE_INPUT_TAG)
                if HIDE_INPUT_TAG in cell.metadata.get("tags", []):
                    shown = 0
                if cell.source.strip() in figures:
                    if on_slide > FIGURE_ROOM_LINES:
                        start_subslide_at_figure(cell, shown)
                        continue
                    shown += FIGURE_LINES
            place(cell, shown)
        else:
            place(cell, _n_lines(cell.source))
    nb.cells = cells
    return nb


def annotate_file(path: Path, max_lines: int = DEFAULT_MAX_LINES) -> bool:
    """Annotate a MyST ``.md`` (or any jupytext text) source in place; True when it changed."""
    path = Path(path)
    before = path.read_text(encoding="utf-8")
    nb = jupytext.reads(before, fmt=path.suffix.lstrip("."))
    fmt = (nb.metadata.get("jupytext", {}).get("text_representation", {}) or {}).get("format_name")
    fmt = f"{path.suffix.lstrip('.')}:{fmt}" if fmt else path.suffix.lstrip(".")
    paired = path.with_suffix(".ipynb")
    executed = nbformat.read(paired, as_version=4) if paired.exists() else None
    after = jupytext.writes(annotate(nb, max_lines, executed), fmt=fmt)
    if after != before:
        path.write_text(after, encoding="utf-8")
    return after != before


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sources", nargs="+", type=Path, help="chapter sources, e.g. chapters/02_kl_divergence.md")
    parser.add_argument("--max-lines", type=int, default=DEFAULT_MAX_LINES,
                        help="code cells longer than this show only their output on slides (default %(default)s)")
    args = parser.parse_args(argv)
    for path in args.sources:
        if path.suffix == ".ipynb":
            parser.error(f"{path}: annotate the .md source, then `jupytext --sync` it")
        changed = annotate_file(path, args.max_lines)
        print(f"{path}: {'annotated' if changed else 'unchanged'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

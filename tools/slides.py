#!/usr/bin/env python
"""Build one reveal.js deck per chapter from the stored, executed notebooks (nothing is executed).

Usage::

    .venv/bin/python tools/slides.py                       # every chapters/*.ipynb -> _build/slides/
    .venv/bin/python tools/slides.py --out DIR chapters/02_kl_divergence.ipynb

This is ``jupyter nbconvert --to slides`` (nbconvert's ``SlidesExporter``) with these settings:

* slides come from the cells' ``slideshow`` metadata, written into the chapter sources by
  ``tools/annotate_slides.py`` (a chapter without it becomes a single long slide);
* code cells tagged ``slides-remove-input`` show only their output (nbconvert's ``TagRemovePreprocessor``);
  cells with ``slide_type: skip`` (the exercises) are left out; no ``In [n]:`` prompts;
* a 1280x800 slide (scaled to the screen); tall slides scroll, figures are at most 600 px high;
* every script and style sheet is local: reveal.js 4.0.2, require.js and jQuery come from ``book/_vendor/``
  (npm packages, see ``book/_vendor/README.txt``) and MathJax 2 from the ``jupyter-server-mathjax`` package.
  They are copied to ``OUT/_assets/`` and the decks point at them by relative URLs, so ``OUT`` works from a
  USB stick, over ``file://`` or behind any web server, without a network. The template
  ``tools/slides_template/offline_reveal`` drops the two blocks of the stock template that load from a CDN
  whatever the options (mermaid and the widgets renderer).

Present: open ``OUT/02_kl_divergence.slides.html`` in a browser; the arrow keys (or space) move through the
slides (down: the subslides of a section), ``s`` opens the speaker notes, ``?`` lists the keys.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENDOR = ROOT / "book" / "_vendor"
TEMPLATES = Path(__file__).resolve().parent / "slides_template"
TEMPLATE = "offline_reveal"
HIDE_INPUT_TAG = "slides-remove-input"
ASSETS = "_assets"

REVEAL = "reveal.js-4.0.2"
REQUIRE = "requirejs-2.3.7/require.js"
JQUERY = "jquery-3.7.1/jquery.min.js"
MATHJAX = "mathjax/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full,Safe"


def mathjax_dir() -> Path:
    import jupyter_server_mathjax

    return Path(jupyter_server_mathjax.__file__).parent / "static"


def copy_assets(out: Path) -> Path:
    """Copy reveal.js, require.js, jQuery and MathJax into ``out/_assets`` (once; kept if present)."""
    dest = out / ASSETS
    for name in ("reveal.js-4.0.2", "requirejs-2.3.7", "jquery-3.7.1"):
        shutil.copytree(VENDOR / name, dest / name, dirs_exist_ok=True)
    if not (dest / "mathjax" / "MathJax.js").exists():
        shutil.copytree(mathjax_dir(), dest / "mathjax", dirs_exist_ok=True)
    return dest


def exporter():
    from nbconvert import SlidesExporter
    from traitlets.config import Config

    c = Config()
    c.SlidesExporter.extra_template_basedirs = [str(TEMPLATES)]
    c.SlidesExporter.template_name = TEMPLATE
    c.SlidesExporter.reveal_url_prefix = f"{ASSETS}/{REVEAL}"
    c.SlidesExporter.reveal_theme = "white"  # its fonts ship with reveal.js; others import Google Fonts
    c.SlidesExporter.reveal_scroll = True
    c.SlidesExporter.reveal_width = "1280"  # 16:10, and wide enough for a 100-character line of code
    c.SlidesExporter.reveal_height = "800"
    c.SlidesExporter.require_js_url = f"{ASSETS}/{REQUIRE}"
    c.SlidesExporter.jquery_url = f"{ASSETS}/{JQUERY}"
    c.SlidesExporter.mathjax_url = f"{ASSETS}/{MATHJAX}"
    c.SlidesExporter.exclude_input_prompt = True
    c.SlidesExporter.exclude_output_prompt = True
    c.TagRemovePreprocessor.enabled = True
    c.TagRemovePreprocessor.remove_input_tags = {HIDE_INPUT_TAG}
    return SlidesExporter(config=c)


def build(notebooks: list[Path], out: Path) -> list[Path]:
    """Write ``out/<stem>.slides.html`` for each notebook and the assets beside them; return the decks."""
    import nbformat

    out.mkdir(parents=True, exist_ok=True)
    copy_assets(out)
    exp = exporter()
    decks = []
    for nb_path in notebooks:
        nb = nbformat.read(nb_path, as_version=4)
        html, _ = exp.from_notebook_node(nb, resources={"metadata": {"name": nb_path.stem}})
        deck = out / f"{nb_path.stem}.slides.html"
        deck.write_text(html, encoding="utf-8")
        decks.append(deck)
    return decks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path,
                        help="stored notebooks (default: chapters/*.ipynb)")
    parser.add_argument("--out", type=Path, default=ROOT / "_build" / "slides",
                        help="output folder (default: _build/slides)")
    args = parser.parse_args(argv)
    notebooks = args.notebooks or sorted((ROOT / "chapters").glob("*.ipynb"))
    for deck in build(notebooks, args.out):
        print(f"wrote {deck}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

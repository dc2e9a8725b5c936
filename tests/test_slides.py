"""The reveal.js decks of ``make slides`` (tools/slides.py) and the slide rule of tools/annotate_slides.py.

The deck test builds chapter 2's deck from its stored notebook. While the chapter has no slide metadata
yet, it annotates a copy of the source in tmp_path and carries the stored outputs over to it, as
``tools/annotate_slides.py`` followed by ``jupytext --sync`` would.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import jupytext
import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
CHAPTER = "02_kl_divergence"


def _load(name):
    spec = importlib.util.spec_from_file_location(f"tools_{name}", ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


annotate_slides = _load("annotate_slides")
slides = _load("slides")


def _slide_type(cell):
    return cell.metadata.get("slideshow", {}).get("slide_type", "-")


def _has_image(cell):
    return any(k.startswith("image/") for out in cell.get("outputs", []) for k in out.get("data", {}))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """``(notebook, deck path, parsed deck)`` for chapter 2, annotated in a copy if need be."""
    from bs4 import BeautifulSoup
    from jupytext.combine import combine_inputs_with_outputs

    tmp = tmp_path_factory.mktemp("slides")
    nb_path = ROOT / "chapters" / f"{CHAPTER}.ipynb"
    nb = nbformat.read(nb_path, as_version=4)
    if not any("slideshow" in c.metadata for c in nb.cells):
        md = tmp / f"{CHAPTER}.md"
        md.write_text((ROOT / "chapters" / f"{CHAPTER}.md").read_text(encoding="utf-8"), encoding="utf-8")
        nbformat.write(nb, tmp / f"{CHAPTER}.ipynb")
        assert annotate_slides.annotate_file(md)
        nb = combine_inputs_with_outputs(jupytext.read(md), nb, fmt="md:myst")
        nb_path = tmp / f"{CHAPTER}.ipynb"
        nbformat.write(nb, nb_path)
    (deck,) = slides.build([nb_path], tmp / "out")
    return nb, deck, BeautifulSoup(deck.read_text(encoding="utf-8"), "html.parser")


def test_one_section_per_slide_and_subslide(built):
    nb, _, soup = built
    kinds = [_slide_type(c) for c in nb.cells]
    assert kinds[0] == "slide"
    assert len(soup.select("div.slides > section")) == kinds.count("slide") > 5
    assert len(soup.select("div.slides > section > section")) == kinds.count("slide") + kinds.count("subslide")


def test_every_figure_of_a_shown_cell_is_on_the_slides(built):
    nb, _, soup = built
    n_figures = sum(_has_image(c) for c in nb.cells if c.cell_type == "code" and _slide_type(c) != "skip")
    images = soup.select("div.slides img[src^='data:image/png']")
    assert n_figures >= 3 and len(images) == n_figures


def test_long_code_and_exercises_are_hidden(built):
    nb, _, soup = built
    code = [c for c in nb.cells if c.cell_type == "code"]
    hidden = [c for c in code if slides.HIDE_INPUT_TAG in c.metadata.get("tags", [])]
    skipped = [c for c in code if _slide_type(c) == "skip"]
    shown = [c for c in code if c not in hidden and c not in skipped]
    assert hidden and skipped and shown
    inputs = soup.select("div.jp-CodeCell div.jp-InputArea")
    assert len(inputs) == len(shown)
    code_on_slides = "\n".join(i.get_text() for i in inputs)
    for c in hidden + skipped:
        longest = max(c.source.splitlines(), key=len).strip()
        assert longest not in code_on_slides, longest
    assert "def my_kl_divergence" not in soup.get_text()  # exercise code, and any solution, stays off


def test_nothing_loads_from_the_network(built):
    _, deck, soup = built
    html = deck.read_text(encoding="utf-8")
    for tag, attr in [("script", "src"), ("link", "href"), ("img", "src"), ("iframe", "src"), ("source", "src")]:
        for el in soup.find_all(tag):
            url = el.get(attr) or ""
            assert not re.match(r"(https?:)?//", url), f"<{tag} {attr}={url!r}>"
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)
    assert not re.search(r"""(import\s[^;]*from\s*|url\()\s*["']?(https?:)?//""", html)
    assert not re.search(r"""require\(\s*\[[^\]]*["'](https?:)?//""", html, flags=re.S)


def test_local_assets_exist(built):
    _, deck, soup = built
    urls = [el.get("src") for el in soup.find_all("script") if el.get("src")]
    urls += [el.get("href") for el in soup.find_all("link") if el.get("href")]
    required = re.search(r"require\(\s*\{.*?\},\s*\[(.*?)\]", deck.read_text(encoding="utf-8"), flags=re.S)
    urls += re.findall(r'"([^"]+)"', required.group(1))
    assert len(urls) >= 7  # jquery, require, mathjax, reveal css + theme, reveal.js, notes plugin
    for url in urls:
        assert (deck.parent / url.split("?")[0]).is_file(), url
    mathjax = deck.parent / slides.ASSETS / "mathjax"
    for part in ["config/TeX-AMS-MML_HTMLorMML-full.js", "config/Safe.js", "jax/output/HTML-CSS/fonts/STIX-Web",
                 "fonts/HTML-CSS/STIX-Web/woff"]:
        assert (mathjax / part).exists(), part
    theme = deck.parent / slides.ASSETS / slides.REVEAL / "dist" / "theme"
    for font in re.findall(r"url\(([^)#?]+\.woff)\)", (theme / "fonts/source-sans-pro/source-sans-pro.css").read_text()):
        assert (theme / "fonts/source-sans-pro" / font.strip("'\"")).is_file(), font


# ---- the annotation rule, on a small source -------------------------------------------------------------

SOURCE = """---
jupytext:
  text_representation:
    extension: .md
    format_name: myst
kernelspec:
  display_name: Python 3
  language: python
  name: python3
---

# Title

Intro text.

## 1. Section

Text.

### 1.1 Sub

```python
# not a heading: inside a fence
## nor this
```

```{code-cell} ipython3
x = 1
```

```{code-cell} ipython3
LONG
```

```{code-cell} ipython3
def my_f(x):
    ### BEGIN SOLUTION
    return x
    ### END SOLUTION

result = check_f(my_f)
```

+++ {"slideshow": {"slide_type": "notes"}}

## A heading the author put in notes

Kept as it is.
""".replace("LONG", "\n".join(f"y{i} = {i}" for i in range(annotate_slides.DEFAULT_MAX_LINES + 1)))


def test_annotation_rule_and_idempotence(tmp_path):
    md = tmp_path / "ch.md"
    md.write_text(SOURCE, encoding="utf-8")
    assert annotate_slides.annotate_file(md)
    once = md.read_text(encoding="utf-8")
    assert not annotate_slides.annotate_file(md) and md.read_text(encoding="utf-8") == once
    nb = jupytext.read(md)
    cells = [(c.cell_type, c.source.splitlines()[0], _slide_type(c), c.metadata.get("tags", [])) for c in nb.cells]
    assert cells == [
        ("markdown", "# Title", "slide", []),
        ("markdown", "## 1. Section", "slide", []),
        ("markdown", "### 1.1 Sub", "subslide", []),
        ("code", "x = 1", "-", []),
        ("code", "y0 = 0", "-", [annotate_slides.HIDE_INPUT_TAG]),
        ("code", "def my_f(x):", "skip", []),
        ("markdown", "## A heading the author put in notes", "notes", []),
    ]
    assert "## nor this" in nb.cells[2].source


def test_a_figure_after_a_full_slide_starts_a_subslide_with_its_caption(tmp_path):
    text = "\n".join(f"Line {i} of text." for i in range(annotate_slides.FIGURE_ROOM_LINES + 1))
    source = SOURCE.split("# Title")[0] + (
        f"## Section\n\n{text}\n\n```{{code-cell}} ipython3\nplot_a()\n```\n\n"
        "The caption.\n\n```{code-cell} ipython3\nplot_b()\n```\n"
    )
    md = tmp_path / "ch.md"
    md.write_text(source, encoding="utf-8")
    executed = jupytext.read(md)
    png = {"image/png": "iVBORw0KGgo=", "text/plain": "<Figure>"}
    for cell in executed.cells:
        if cell.cell_type == "code":
            cell.outputs = [nbformat.v4.new_output("display_data", data=png)]
    nbformat.write(executed, tmp_path / "ch.ipynb")
    annotate_slides.annotate_file(md)
    kinds = [(c.source.splitlines()[0], _slide_type(c)) for c in jupytext.read(md).cells]
    assert kinds == [("## Section", "slide"), ("plot_a()", "subslide"),
                     ("The caption.", "subslide"), ("plot_b()", "-")]

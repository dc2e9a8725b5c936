"""The book builds (``make book``): Sphinx + MyST-NB + sphinx-book-theme turn the stored chapter notebooks and
the library's docstrings into a static site, with warnings as errors and nothing loaded from the internet.

The build runs once per module, in a subprocess (as ``make book`` runs it), into a temporary folder.
"""

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

# found, not imported: the build itself runs in a subprocess
_NEEDED = ("sphinx", "myst_nb", "sphinx_book_theme", "jupyter_server_mathjax")
_MISSING = [m for m in _NEEDED if importlib.util.find_spec(m) is None]
if _MISSING:
    pytest.skip(f"the book needs the dev extra (pip install -e '.[dev]'): {_MISSING} missing", allow_module_level=True)

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
CHAPTERS = sorted(p.stem for p in (ROOT / "chapters").glob("*.ipynb"))

# <script src=...> and <link href=...> (stylesheets, preloads, icons): what a browser fetches on its own.
ASSET = re.compile(r"<(?:script|link|img|iframe|source|embed)\b[^>]*?\b(?:src|href)=\"([^\"]*)\"", re.I)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("book") / "html"
    cmd = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", str(BOOK), str(out)]
    run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, f"sphinx-build failed ({run.returncode}):\n{run.stdout[-5000:]}\n{run.stderr[-5000:]}"
    return out


def _pages(site):
    return sorted(site.rglob("*.html"))


def test_every_chapter_has_a_page_in_order(site):
    assert CHAPTERS, "no chapter notebooks found"
    for stem in CHAPTERS:
        assert (site / "chapters" / f"{stem}.html").is_file(), f"no page for chapter {stem}"
    index = (site / "index.html").read_text(encoding="utf-8")
    # the navigation (and the chapter map) list the chapters in file-name order
    positions = [index.find(f'href="chapters/{stem}.html"') for stem in CHAPTERS]
    assert all(p >= 0 for p in positions), dict(zip(CHAPTERS, positions))
    assert positions == sorted(positions)
    # each chapter links to the next one
    for here, there in zip(CHAPTERS, CHAPTERS[1:]):
        page = (site / "chapters" / f"{here}.html").read_text(encoding="utf-8")
        assert f'href="{there}.html"' in page


def test_front_page_has_the_chapter_map_and_the_install(site):
    index = (site / "index.html").read_text(encoding="utf-8")
    assert 'class="chapter-map' in index
    # every chapter is in the map, with its question
    chapter_map = index[index.index('class="chapter-map') :]
    for stem in CHAPTERS:
        assert f'href="chapters/{stem}.html"' in chapter_map, stem
    text = re.sub(r"<[^>]+>", "", index)  # code blocks are split into highlighted spans
    assert "make demo" in text and "make test" in text


def test_chapters_show_their_stored_figures(site):
    for stem in CHAPTERS:
        page = (site / "chapters" / f"{stem}.html").read_text(encoding="utf-8")
        images = re.findall(r'<img [^>]*src="(\.\./_images/[^"]+\.png)"', page)
        assert images, f"{stem}: no figure from the stored outputs"
        for src in images:
            assert (site / "chapters" / src).resolve().is_file(), f"{stem}: missing image {src}"


def test_math_is_typeset_by_a_local_mathjax(site):
    page = (site / "chapters" / f"{CHAPTERS[0]}.html").read_text(encoding="utf-8")
    assert 'class="math notranslate nohighlight"' in page
    scripts = [src for src in ASSET.findall(page) if "mathjax" in src.lower()]
    assert scripts, "no MathJax script on a chapter page"
    for src in scripts:
        assert "://" not in src and not src.startswith("//"), src
        assert (site / "chapters" / src.split("?")[0]).resolve().is_file(), f"MathJax not shipped: {src}"
    # the fonts MathJax asks for are there too
    assert (site / "_static" / "mathjax" / "fonts" / "HTML-CSS" / "STIX-Web" / "woff").is_dir()


def test_api_reference_documents_the_library(site):
    generated = site / "api" / "generated"
    for package in ("numpy", "torch", "lm", "train", "tasks", "exercises"):
        assert (generated / f"rlhf_edu.{package}.html").is_file(), package
    numpy_page = (generated / "rlhf_edu.numpy.html").read_text(encoding="utf-8")
    assert 'id="rlhf_edu.numpy.divergences.kl_divergence"' in numpy_page
    assert 'id="rlhf_edu.torch.divergences.kl_divergence"' in (generated / "rlhf_edu.torch.html").read_text(
        encoding="utf-8"
    )
    # docstring doctests are rendered as code
    assert "&gt;&gt;&gt;" in numpy_page


def test_search_index_exists(site):
    assert (site / "search.html").is_file()
    index = (site / "searchindex.js").read_text(encoding="utf-8")
    data = json.loads(index[index.index("(") + 1 : index.rindex(")")])
    titles = " ".join(data["titles"])
    assert "KL divergence" in titles
    assert any(f"chapters/{CHAPTERS[0]}" == name for name in data["docnames"])


def test_nothing_is_loaded_from_the_internet(site):
    remote = {}
    for page in _pages(site):
        for src in ASSET.findall(page.read_text(encoding="utf-8")):
            if re.match(r"(?i)^(https?:)?//", src):
                remote.setdefault(src, page.relative_to(site).as_posix())
    assert not remote, f"assets loaded from the internet: {remote}"
    # nor from a stylesheet or a script of the site (fonts, @import)
    for path in list((site / "_static").rglob("*.css")):
        text = path.read_text(encoding="utf-8", errors="replace")
        assert not re.search(r"(?i)(@import\s+(url\()?['\"]?|url\(['\"]?)(https?:)?//", text), path

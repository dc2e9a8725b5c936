"""The student edition of ``make student`` (tools/student.py, nbgrader's ClearSolutions) and the checkers'
report of a stub.

For every chapter: no line between ``### BEGIN SOLUTION`` and ``### END SOLUTION`` survives, those cells have
no outputs, and running the chapter's first code cell (the imports) followed by its exercise cells in a
kernel raises nothing while every checker reports "not done yet". A copy of chapter 2 with a solution put
between markers checks the same while the chapters have no markers yet.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import nbformat
import pytest

from rlhf_edu.exercises import make_checker

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "chapters").glob("*.ipynb"))


def _load(name):
    spec = importlib.util.spec_from_file_location(f"tools_{name}", ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


student = _load("student")


def _checker():
    return make_checker("double", reference=lambda x: 2 * x, random_case=lambda rng: ((rng.normal(size=3),), {}))


def test_checker_reports_the_stub_as_not_done(capsys):
    namespace = {}
    exec("def my_double(x):\n    # YOUR CODE HERE\n    raise NotImplementedError()\n", namespace)
    result = _checker()(namespace["my_double"])
    out = capsys.readouterr().out
    assert not result and result.n_checks == 0
    assert out.startswith("NOT DONE YET double") and "FAIL" not in out and "Traceback" not in out


def test_checker_still_reports_other_errors_as_failures(capsys):
    assert not _checker()(lambda x: [][0])
    assert "FAIL double" in capsys.readouterr().out


def _solution_lines(source):
    """The non-blank lines strictly between the solution markers."""
    lines, inside = [], False
    for line in source.splitlines():
        if student.BEGIN in line:
            inside = True
        elif student.END in line:
            inside = False
        elif inside and line.strip():
            lines.append(line.strip())
    return lines


def _check_student_edition(source_path: Path, out: Path):
    """Build the student edition of one notebook and check it; return the number of exercise cells."""
    original = nbformat.read(source_path, as_version=4)
    (built,) = student.build([source_path], out)
    edition = nbformat.read(built, as_version=4)
    assert len(edition.cells) == len(original.cells)
    exercises = []
    for before, after in zip(original.cells, edition.cells):
        if student.BEGIN not in before.source:
            assert after.source == before.source and after.get("outputs") == before.get("outputs")
            continue
        solution = _solution_lines(before.source)
        assert solution, "empty solution region"
        kept = {line.strip() for line in after.source.splitlines()}
        assert not kept & set(solution), f"solution text survived: {kept & set(solution)}"
        assert student.BEGIN not in after.source and student.END not in after.source
        if after.cell_type == "code":
            assert "raise NotImplementedError()" in after.source
            assert after.outputs == [] and after.execution_count is None
            exercises.append(after)
    if not exercises:
        return 0
    _run_imports_and_exercises(edition, exercises, out)
    return len(exercises)


def _run_imports_and_exercises(edition, exercises, cwd: Path):
    from nbclient import NotebookClient

    first = next(c for c in edition.cells if c.cell_type == "code")
    nb = nbformat.v4.new_notebook(metadata=edition.metadata)
    nb.cells = [nbformat.from_dict(dict(first))] + [nbformat.from_dict(dict(c)) for c in exercises]
    NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}).execute()
    for cell in nb.cells[1:]:
        assert not any(o.output_type == "error" for o in cell.outputs)
        text = "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")
        assert "NOT DONE YET" in text and "PASS" not in text, text  # the stub is reported, not a crash


def test_marked_solution_is_stubbed_cleared_and_reported(tmp_path):
    """A notebook of its own (an import cell and one solved exercise with a stored PASS), so this test does
    not depend on which exercises the chapters hold."""
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    nb.cells = [
        nbformat.v4.new_code_cell("import numpy as np\nfrom rlhf_edu.exercises import check_sequence_kl"),
        nbformat.v4.new_code_cell(
            "def my_sequence_kl(logp, logp_ref, mask):\n"
            "    ### BEGIN SOLUTION\n"
            "    secret_solution_text = (np.asarray(logp) - np.asarray(logp_ref)) * np.asarray(mask)\n"
            "    return secret_solution_text.sum(axis=-1)\n"
            "    ### END SOLUTION\n\n"
            "result = check_sequence_kl(my_sequence_kl)",
            execution_count=42,
            outputs=[nbformat.v4.new_output("stream", name="stdout", text="PASS sequence_kl: 20 checks\n")],
        ),
    ]
    copy = tmp_path / "99_toy.ipynb"
    nbformat.write(nb, copy)
    assert _check_student_edition(copy, tmp_path / "student") == 1
    edition = (tmp_path / "student" / "99_toy.ipynb").read_text()
    assert "secret_solution_text" not in edition and "PASS" not in edition


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_student_edition(chapter, tmp_path):
    n = _check_student_edition(chapter, tmp_path)
    assert n >= 3, f"{chapter.name}: {n} exercises with '### BEGIN SOLUTION' markers; the guide asks for at least three"

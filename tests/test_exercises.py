"""The exercise-checker mechanism, tested with a right and a wrong solution of every chapter checker."""

import numpy as np
import pytest

import rlhf_edu.exercises as ex
from rlhf_edu.exercises import make_checker


def _softplus_checker():
    return make_checker(
        "softplus",
        reference=lambda x: np.logaddexp(0.0, x),
        edge_cases=[((np.array([0.0]),), {}), ((np.array([800.0, -800.0]),), {})],
        random_case=lambda rng: ((rng.normal(size=4) * 5,), {}),
        hint="use np.logaddexp(0, x) so large x does not overflow",
        expected_errors=[((np.array(["a"]),), {}, TypeError)],
    )


def test_right_solution_passes(capsys):
    check = _softplus_checker()
    result = check(lambda x: np.logaddexp(0.0, x))
    assert result and result.passed and result.n_checks == 2 + 20 + 1
    assert "PASS softplus" in capsys.readouterr().out


def test_wrong_solution_fails_with_input_expected_and_got(capsys):
    check = _softplus_checker()
    with np.errstate(over="ignore"):
        result = check(lambda x: np.log(1 + np.exp(x)))  # overflows at x = 800
    out = capsys.readouterr().out
    assert not result
    assert "FAIL softplus" in out and "expected" in out and "got" in out and "hint" in out
    assert "800" in out  # the failing input is shown


def test_solution_that_raises_is_reported_not_raised(capsys):
    check = _softplus_checker()
    result = check(lambda x: 1 / 0)
    assert not result and "ZeroDivisionError" in capsys.readouterr().out


def test_wrong_shape_is_named():
    check = _softplus_checker()
    result = check(lambda x: float(np.logaddexp(0.0, x).sum()), verbose=False)
    assert not result and "shape" in result.message


def test_missing_validation_is_reported():
    check = _softplus_checker()
    result = check(lambda x: np.logaddexp(0.0, x) if np.asarray(x).dtype.kind == "f" else np.zeros(1), verbose=False)
    assert not result and "raises TypeError" in result.message


def test_checker_rejects_non_callable():
    with pytest.raises(TypeError, match="expects your function"):
        _softplus_checker()(42)


CHAPTER_CHECKERS = sorted(n for n in ex.__all__ if n.startswith("check_"))


def test_every_chapter_checker_has_a_wrong_solution_registered():
    # each chapter's exercise module lists a reference (right) and a plausible wrong solution
    from rlhf_edu.exercises import solutions_for_tests

    for name in CHAPTER_CHECKERS:
        assert name in solutions_for_tests(), f"{name} has no right/wrong pair in solutions_for_tests()"


@pytest.mark.parametrize("name", CHAPTER_CHECKERS)
def test_chapter_checker_accepts_right_and_rejects_wrong(name, capsys):
    from rlhf_edu.exercises import solutions_for_tests

    right, wrong = solutions_for_tests()[name]
    check = getattr(ex, name)
    assert check(right), f"{name} rejected the reference solution"
    assert capsys.readouterr().out.startswith("PASS")
    assert not check(wrong), f"{name} accepted a wrong solution"
    out = capsys.readouterr().out
    # FAIL, then at least the failing input and what was wrong with it (each checker words it its own way)
    assert out.startswith("FAIL") and len(out.strip().splitlines()) >= 2, out


@pytest.mark.parametrize("name", CHAPTER_CHECKERS)
def test_chapter_checker_reports_the_student_stub_as_not_done(name, capsys):
    # the student edition replaces each solution by a stub that raises NotImplementedError
    def stub(*args, **kwargs):
        raise NotImplementedError()

    result = getattr(ex, name)(stub)
    assert not result and capsys.readouterr().out.startswith("NOT DONE YET")

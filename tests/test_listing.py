"""rlhf_edu.source_listing: a function's source without its docstring, as the chapters print it."""

import ast
import functools
import inspect

import pytest

import rlhf_edu
from rlhf_edu import numpy as rn
from rlhf_edu import source_listing


def decorate(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return fn(*args, **kwargs)

    return wrapper


@decorate
def several_lines(x, y=1):  # a comment on the signature
    """Several lines.

    The closing quotes are on their own line; "quotes" and 'quotes' inside, and a \""" escaped triple quote.
    """
    # a comment before the code
    return x + y  # and after it


def no_docstring(x):
    # only a comment, which is not a docstring
    return x


def one_line(x):
    """One line."""
    return x


def raw_docstring(x):
    r"""A raw string with a backslash: \sigma(x)."""
    return x


def first_string_is_not_first_statement(x):
    x = x + 1
    """Not a docstring: a string after code."""
    return x


def unicode_docstring(x):
    """π and ö in the docstring move ast's byte columns away from character columns."""
    return x


def outer():
    def nested(x):
        """Nested."""
        return 2 * x

    return nested


class Model:
    def method(self, x):
        """A method's docstring."""
        return x

    @staticmethod
    def static(x):
        """A static method's docstring."""
        return x


def test_docstring_removed_and_everything_else_kept():
    listing = source_listing(several_lines)
    assert listing == (
        "@decorate\n"
        "def several_lines(x, y=1):  # a comment on the signature\n"
        "    # a comment before the code\n"
        "    return x + y  # and after it\n"
    )


def test_function_without_docstring_is_unchanged():
    assert source_listing(no_docstring) == inspect.getsource(no_docstring)
    assert source_listing(first_string_is_not_first_statement) == inspect.getsource(
        first_string_is_not_first_statement
    )


def test_one_line_raw_and_unicode_docstrings():
    assert source_listing(one_line) == "def one_line(x):\n    return x\n"
    assert source_listing(raw_docstring) == "def raw_docstring(x):\n    return x\n"
    assert source_listing(unicode_docstring) == "def unicode_docstring(x):\n    return x\n"


def test_methods_and_nested_functions_are_dedented():
    expected = "def method(self, x):\n    return x\n"
    assert source_listing(Model.method) == expected
    assert source_listing(Model().method) == expected  # a bound method
    assert source_listing(Model.static) == "@staticmethod\ndef static(x):\n    return x\n"
    assert source_listing(outer()) == "def nested(x):\n    return 2 * x\n"


def test_docstring_true_keeps_the_source():
    assert source_listing(several_lines, docstring=True) == inspect.getsource(several_lines)
    assert '"""A method\'s docstring."""' in source_listing(Model.method, docstring=True)


def test_several_functions_joined_by_a_blank_line():
    # one print of several listings prints what one print of each inspect.getsource printed
    assert source_listing(one_line, no_docstring, docstring=True) == "\n".join(
        inspect.getsource(fn) for fn in (one_line, no_docstring))
    assert source_listing(one_line, no_docstring) == source_listing(one_line) + "\n" + source_listing(no_docstring)


def test_the_library_listings_parse_and_lose_exactly_the_docstring():
    for fn in (rn.bradley_terry_loss, rn.dpo_loss, rn.grpo_loss, rn.rms_norm, rn.gae):
        listing = source_listing(fn)
        tree = ast.parse(listing).body[0]
        assert ast.get_docstring(tree) is None and fn.__doc__
        full = ast.parse(inspect.getsource(fn)).body[0]
        assert ast.dump(tree.body[0]) == ast.dump(full.body[1])  # the first statement after the docstring


def test_non_functions_raise_type_error_naming_the_argument():
    with pytest.raises(TypeError, match=r"functions\[1\].*builtin"):
        source_listing(one_line, len)
    with pytest.raises(TypeError, match=r"functions\[0\].*type"):
        source_listing(Model)
    with pytest.raises(TypeError, match=r"functions\[0\].*int"):
        source_listing(3)
    with pytest.raises(TypeError, match="functions"):
        source_listing()


def test_exported_by_the_package():
    assert rlhf_edu.source_listing is source_listing

"""Print a library function's code in a chapter: its source, without the docstring the API reference shows.

The chapters print the NumPy references so that the reader sees the formula as code; the docstrings (formula,
shapes, errors, sources) are long and are read with ``help(fn)`` or in the API reference, so a listing leaves
them out. One function does it for every chapter: :func:`source_listing`.
"""

import ast
import inspect
import textwrap

__all__ = ["source_listing"]


def source_listing(*functions, docstring=False) -> str:
    """The source code of one or more functions, by default without their docstrings.

    Each function's source is ``inspect.getsource(fn)``. Unless ``docstring`` is true, the lines of its docstring
    statement (the first statement of the body when it is a string literal, found with ``ast``, so r-strings,
    one-line docstrings and quotes inside the docstring are all handled) are dropped; the decorators, the
    signature, the comments and every other line are kept exactly. A docstring that shares a line with other
    code (``def f(): "doc"; return 1``) is left in, since dropping its line would drop that code too. A function
    without a docstring is listed unchanged. The source of a method or a nested function (indented in its file)
    is dedented. Each listing ends with a newline, as ``inspect.getsource``'s does, and the listings are joined
    by one blank line: ``print(source_listing(f, g))`` prints what ``print(inspect.getsource(f))`` and
    ``print(inspect.getsource(g))`` print, less the docstrings. ``source_listing(f, docstring=True)`` is
    ``inspect.getsource(f)`` for a function that is not indented in its file.

    Args:
        *functions: the functions (or bound methods) to list, in the order they are printed.
        docstring: keep the docstrings (default False: leave them out).

    Returns:
        The listings as one string.

    Raises:
        TypeError: if ``functions`` is empty, or one of them is not a Python function or method (a class, a
            builtin such as ``len``, a number): the message names its position in ``functions``.

    Shapes: not applicable.

    Example:
        >>> def halve(x):
        ...     '''Half of x.
        ...
        ...     A docstring of several lines.
        ...     '''
        ...     # a comment stays
        ...     return x / 2
        >>> def double(x):
        ...     return 2 * x
        >>> print(source_listing(halve, double))
        def halve(x):
            # a comment stays
            return x / 2
        <BLANKLINE>
        def double(x):
            return 2 * x
        <BLANKLINE>
        >>> source_listing(halve, docstring=True).count("docstring of several lines")
        1
        >>> source_listing(len)
        Traceback (most recent call last):
        ...
        TypeError: functions[0] must be a Python function or method, got builtin_function_or_method: <built-in function len>
    """
    if not functions:
        raise TypeError("functions: give at least one function to list")
    for i, fn in enumerate(functions):
        if not (inspect.isfunction(fn) or inspect.ismethod(fn)):
            raise TypeError(f"functions[{i}] must be a Python function or method, got {type(fn).__name__}: {fn!r}")
    return "\n".join(_listing(fn, docstring) for fn in functions)


def _listing(fn, docstring):
    source = inspect.getsource(fn)
    if not docstring:
        source = _without_docstring(source)
    if source[:1].isspace():  # a method or a nested function: written indented in its file
        source = textwrap.dedent(source)
    return source


def _without_docstring(source):
    """``source`` (one function's, maybe indented) with the lines of its docstring statement dropped."""
    indented = source[:1].isspace()
    try:  # an indented block does not parse on its own; under "if True:" it does, one line further down
        tree = ast.parse("if True:\n" + source if indented else source)
    except SyntaxError:  # a lambda cut out of a longer expression: it has no docstring anyway
        return source
    node, offset = (tree.body[0].body[0], 1) if indented else (tree.body[0], 0)
    if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) or ast.get_docstring(node) is None:
        return source
    doc = node.body[0]
    lines = source.splitlines(keepends=True)
    first, last = doc.lineno - 1 - offset, doc.end_lineno - offset  # the docstring statement is lines[first:last]
    before = lines[first].encode()[: doc.col_offset].decode()  # ast's columns count UTF-8 bytes
    after = lines[last - 1].encode()[doc.end_col_offset :].decode().strip()
    if before.strip() or (after and not after.startswith("#")):  # code shares a line with the docstring
        return source
    return "".join(lines[:first] + lines[last:])

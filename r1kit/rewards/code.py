"""Code-accuracy reward: run a row's tests against the code in a completion, in the sandbox.

    score, parts = score_code_row({"tests": ["assert add(1, 2) == 3"], "completion": text})

The code is the last fenced block tagged Python (```python, ```py; Markdown's ~~~ fences
too), or where there is none the last plain ``` block, of the answer part of the response:
the text after the last </think> (nothing, if a <think> is never closed), and within it
the last <answer>...</answer> when there is one. The same answer rule as the math reward
(r1kit/rewards/rule.py): code written only while reasoning is not an answer.

Tests come from the row, in one of these schemas (`tests_from_row`):
- r1kit: `tests` (a list of assert statements) and optional `setup` (run before them); a
  `tests` that holds input/output or call cases instead (DeepCoder's) is read as below;
- MBPP: `test_list` and `test_setup_code` (run in the order code, setup, asserts);
- HumanEval: `test` (defines check(candidate)) and `entry_point`; `prompt`, when present,
  runs before the code so that its imports and helper functions exist, as in the original
  harness; the one test is `check(<entry_point>)`;
- pytest-style test_* functions in `test` (KodCode's), importing the code `from solution`;
- input/output cases (APPS, open-r1, Codeforces, CodeContests, LiveCodeBench:
  r1kit/rewards/code_io.py): the program runs once per case on its stdin, in a process of its
  own, and its stdout is compared in the parent with the expected output, which the program
  never sees; function-call cases (`fn_name`) call the function on the case's arguments
  there, and the value it returns is compared.

A column that is None, "" or an empty list counts as absent (a file of several layouts gives
each row every layout's columns). Tests that every program passes are refused with a message:
a test that is empty or idle (`pass`, `assert True`), a comparison or a predicate's call
(`math.isclose(...)`) whose result is dropped, an assert of a tuple, a test function that
returns a comparison, and a row where no test holds a check (an assert that reads a value, a
raise, pytest.raises, an assert* call, or a call of a helper of the tests that holds one; not
under a try whose except clause lets a failed assert go, in a branch that never runs, or
under contextlib.suppress, in a loop over nothing or a generator). In a test that expects
a raise (pytest.raises, assertRaises, or a try that catches Exception or ImportError), in
its own code or in a helper it runs, the functions the raising part calls (or imports from
the module `solution`) and the tests do not define are read first, so a program without the
function fails there instead of passing by its NameError. A pytest-style file's `__main__`
block does not run, as under pytest.

Reward: 1.0 when every test passes, else 0.0; with pass_fraction, passed / total. A pass is
decided by r1kit/sandbox/harness.py, which a program cannot fake by exiting early or by
printing; every program runs in r1kit/sandbox (bubblewrap when available).
"""

from __future__ import annotations

import ast
import builtins
import copy
import json
import re
import textwrap
from collections.abc import Sequence
from typing import Any

from r1kit.errors import R1kitError
from r1kit.rewards.code_io import (
    IO_KEYS,
    IOCases,
    IOOutcome,
    holds_cases,
    io_cases_from_row,
    names_of,
    present,
    run_io_many,
)
from r1kit.rewards.rule import answer_region
from r1kit.sandbox.harness import TestOutcome, TestSpec, run_tests_many
from r1kit.sandbox.limits import Limits
from r1kit.sandbox.pool import SandboxPool

# A test run of a short solution takes milliseconds; these bound the hostile ones.
DEFAULT_LIMITS = Limits(wall_seconds=10.0, cpu_seconds=5.0, memory_bytes=1 << 30,
                        file_bytes=16 << 20, max_processes=32, max_output_bytes=256 << 10)

_FENCE = re.compile(r"^[ \t]*(```|~~~)[ \t]*([A-Za-z0-9_+.#-]*)[^\n]*$", re.MULTILINE)
_PYTHON_TAGS = {"", "python", "py", "python3", "py3"}
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def answer_part(response: str) -> str | None:
    """The part of a response that can hold the answer (rule.answer_region), or the whole
    response when it has no tags at all; None when it is all reasoning."""
    region = answer_region(response)
    if region is None and "<think>" not in response:
        return response
    return region


def extract_code(response: str) -> str | None:
    """The last fenced Python code block of the answer part, or None."""
    tail = answer_part(response)
    if tail is None:
        return None
    tagged = plain = None
    # Fence lines pair up in order (open, close: the next fence line of the same kind, ```
    # or ~~~, as Markdown pairs them), so a ```bash block's closing fence is never mistaken
    # for the opening of a Python one; an unclosed last fence is not a block. The last block
    # tagged python wins; an untagged one only where none is tagged (an untagged block after
    # the code is most often its output: "Running it prints: ```3```").
    blocks, opening = [], None
    for fence in _FENCE.finditer(tail):
        if opening is None:
            opening = fence
        elif fence.group(1) == opening.group(1):
            blocks.append((opening, fence))
            opening = None
    for opening, closing in blocks:
        tag = opening.group(2).lower()
        if tag in _PYTHON_TAGS:
            body = tail[opening.end() + 1:closing.start()]
            if body.strip():
                code = textwrap.dedent(body).strip("\n") + "\n"
                tagged, plain = (code, plain) if tag else (tagged, code)
    return tagged if tagged is not None else plain


def _string_list(row: dict, key: str) -> tuple[str, ...]:
    value = row[key]
    if isinstance(value, str) and value.lstrip()[:1] == "[":  # a list as JSON text (parquet
        try:  # exports of list columns)
            value = json.loads(value)
        except (ValueError, RecursionError):
            pass
    if isinstance(value, str) or not isinstance(value, Sequence) \
            or not all(isinstance(t, str) for t in value):
        got = type(value).__name__ if not isinstance(value, str) else \
            "text that is not JSON" if value.lstrip()[:1] == "[" else "text"
        if isinstance(value, list) and any(isinstance(t, dict) for t in value):
            got = "a list that mixes case objects and other items"
        raise R1kitError(f"field {key!r} must be a list of strings (test statements), or its "
                         f"JSON text, got {got}", "give the tests as a list such as "
                         "[\"assert add(1, 2) == 3\"]; input/output cases go under "
                         "'test_cases' or APPS' 'input_output'")
    return tuple(value)


def _optional_str(row: dict, key: str) -> str:
    value = row.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise R1kitError(f"field {key!r} must be a string, got {type(value).__name__}")
    return value


_TEST_FUNCTION = re.compile(r"^def\s+(test\w*)\s*\(\s*\)", re.MULTILINE)
_SOLUTION_IMPORT = re.compile(r"^\s*(from\s+solution\s+import|import\s+solution\b)",
                              re.MULTILINE)
# tests written against a module "solution" (KodCode's, pytest's layout) import the code
# under test from it: that module is the candidate's namespace
SOLUTION_MODULE = ("import sys as _sys, types as _types\n_solution = _types.ModuleType('solution')"
                   "\n_solution.__dict__.update(globals())\n_sys.modules['solution'] = _solution\n")


# any test function or class pytest would collect, at any indentation, with or without
# parameters (those r1kit cannot call: fixtures, parametrize, methods)
_ANY_TEST = re.compile(r"^[ \t]*(?:async[ \t]+)?(?:def[ \t]+test\w*|class[ \t]+Test\w*)",
                       re.MULTILINE)


def _uncallable(test: str) -> None:
    """An R1kitError where a test defines test functions r1kit would not call (with
    parameters, async, in a class): defined and never run, they would pass every program."""
    if len(_ANY_TEST.findall(test)) > len(_TEST_FUNCTION.findall(test)):
        raise R1kitError("a test defines a test function r1kit cannot call (one with "
                         "parameters, async, or in a class: pytest's fixtures, parametrize, "
                         "test classes)", "write such tests as plain asserts, or as test_* "
                         "functions without parameters at the top level")


def _called(test: str) -> str:
    """A test statement block with a call after it of each pytest-style test function it
    defines at top level and never calls (`def test_add(): assert ...`): defined alone, such
    a function would check nothing and every program would pass."""
    _uncallable(test)
    calls = [name for name in _TEST_FUNCTION.findall(test)
             if not re.search(rf"^{name}\s*\(", test, re.MULTILINE)]
    return test + "".join(f"\n{name}()" for name in calls)


# functions that answer a question and raise nothing when the answer is no: a call of one
# whose result is dropped is a comparison left unasserted (`math.isclose(f(1), 2.0)`)
_PREDICATES = frozenset({
    "isclose", "allclose", "array_equal", "array_equiv", "equal", "equals", "all", "any",
    "bool", "isinstance", "issubclass", "callable", "hasattr", "startswith", "endswith",
    "issubset", "issuperset", "isdisjoint", "eq", "ne", "lt", "le", "gt", "ge", "contains"})


def _name_of(func: ast.AST) -> str:
    """The name a call calls: `f` of `f(...)`, `isclose` of `math.isclose(...)`."""
    if isinstance(func, ast.Attribute):
        return func.attr
    return func.id if isinstance(func, ast.Name) else ""


def _comparison(node: ast.AST, own: frozenset[str] = frozenset()) -> bool:
    """Whether an expression is a comparison whose result is dropped where it stands as a
    statement: `f(1) == 2`, joined by and/or, negated, in a list, tuple, comprehension or
    conditional expression, or a call of a predicate (`math.isclose(...)`, `all(...)`) that
    is not a function of the tests' own (`own`: a helper named `equal` may assert). A
    printed one is not: a debugging print beside the asserts."""
    if isinstance(node, ast.Compare):
        return True
    if isinstance(node, ast.BoolOp):  # (`ok(x) or pytest.fail(...)` checks)
        return any(_comparison(v, own) for v in node.values) and not any(
            isinstance(v, ast.Call) and _failing(_name_of(v.func)) for v in node.values)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        return _comparison(node.operand, own)
    if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
        return any(_comparison(v, own) for v in node.elts)
    if isinstance(node, (ast.ListComp, ast.SetComp, ast.GeneratorExp)):
        return _comparison(node.elt, own)
    if isinstance(node, ast.DictComp):
        return _comparison(node.value, own)
    if isinstance(node, ast.IfExp):
        return _comparison(node.body, own) or _comparison(node.orelse, own)
    if isinstance(node, ast.Await):
        return _comparison(node.value, own)
    return isinstance(node, ast.Call) and _name_of(node.func) in _PREDICATES - own


_LONGEST_TEST = 2_000_000  # characters: a test beyond it is refused, not parsed


def _parsed(test: str) -> list[ast.stmt] | None:
    """A test's statements; None where it does not parse (it fails every program when it
    runs: no pass to forge) or is too long to parse (_too_long refuses it)."""
    if len(test) > _LONGEST_TEST:
        return None
    try:
        return ast.parse(test).body
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None


def _too_long(test: str) -> str:
    return f"it is too long to check (over {_LONGEST_TEST:,} characters)" \
        if len(test) > _LONGEST_TEST else ""


def _list_literal(test: ast.expr) -> bool:
    """A non-empty tuple, list or set written out: true whatever it holds."""
    return isinstance(test, (ast.Tuple, ast.List, ast.Set)) and bool(test.elts)


def _unasserted(test: str, body: list[ast.stmt] | None = None,
                own: frozenset[str] = frozenset()) -> str:
    """Why test code passes whatever the program returns ("" where not): a comparison that
    is not asserted (`add(1, 2) == 3` as a statement, anywhere in it), an assert that
    always holds (`assert (add(1, 2) == 3, "msg")`: a tuple is true), or a test function
    that returns a comparison. `own`: the names of the tests' own functions."""
    if _too_long(test):
        return _too_long(test)
    todo = list((_parsed(test) if body is None else body) or ())
    try:
        while todo:
            node = todo.pop()
            if isinstance(node, (ast.With, ast.AsyncWith)) and any(
                    _expects_raise(item.context_expr) for item in node.items):
                continue  # (pytest.raises: there the statement is expected to raise)
            todo.extend(ast.iter_child_nodes(node))
            if isinstance(node, ast.Expr) and _comparison(node.value, own):
                return "it holds a comparison that is not asserted"
            if isinstance(node, ast.Assert) and _list_literal(node.test):
                return (f"it holds an assert of a {type(node.test).__name__.lower()}, which "
                        "always holds")
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) \
                    and node.name.startswith("test") and any(
                        isinstance(n, ast.Return) and n.value is not None
                        and _comparison(n.value, own) for n in _running(node.body)):
                return (f"its test function {node.name} returns a comparison, which pytest "
                        "ignores")
    except RecursionError:
        return "it is nested too deeply to check"
    return ""


def _constant_false(test: ast.expr) -> bool:
    """False, 0, None or "" written out, or `not` of a true constant."""
    if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
        return isinstance(test.operand, ast.Constant) and bool(test.operand.value)
    return isinstance(test, ast.Constant) and not test.value


_BROAD = frozenset({"Exception", "BaseException", "AssertionError"})


def _catches(handler: ast.ExceptHandler, names: frozenset[str]) -> bool:
    """Whether an except clause catches one of the exception classes named (a bare one
    catches all)."""
    if handler.type is None:
        return True
    kinds = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return any(_name_of(k) in names for k in kinds)


def _swallows(handler: ast.ExceptHandler) -> bool:
    """Whether an except clause catches a failed assert and lets it go: it catches
    AssertionError (bare, Exception, BaseException, AssertionError) and raises nothing."""
    return _catches(handler, _BROAD) and not any(isinstance(n, ast.Raise) or (
        isinstance(n, ast.Call) and _failing(_name_of(n.func)))
        for n in ast.walk(ast.Module(body=handler.body, type_ignores=[])))


def _empty_literal(node: ast.expr) -> bool:
    return (isinstance(node, (ast.List, ast.Tuple, ast.Set)) and not node.elts) or (
        isinstance(node, ast.Dict) and not node.keys) or (
        isinstance(node, ast.Constant) and node.value in ("", b""))


def _running(body: list[ast.stmt]):
    """The nodes of a block that run, and can fail it, when it runs: not those of the
    functions it defines (they run when called; a class body runs; a lambda is taken to run),
    of a branch that never runs (`if False:`, `while 0:`, a loop over `[]`), of
    `contextlib.suppress`, or of a try whose except clause lets a failed assert go
    (_swallows)."""
    todo = list(body)
    while todo:
        node = todo.pop()
        yield node
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        skip: list = []
        if isinstance(node, (ast.If, ast.While)) and _constant_false(node.test):
            skip = node.body
        elif isinstance(node, (ast.For, ast.AsyncFor)) and _empty_literal(node.iter):
            skip = node.body
        elif isinstance(node, (ast.With, ast.AsyncWith)) and any(
                _name_of(getattr(item.context_expr, "func", item.context_expr)) == "suppress"
                for item in node.items):
            skip = node.body
        elif isinstance(node, ast.Try) and any(map(_swallows, node.handlers)):
            skip = node.body
        todo.extend(child for child in ast.iter_child_nodes(node)
                    if not any(child is s for s in skip))


# calls that fail a test: unittest's and numpy's assert* (assertEqual, assert_allclose),
# pytest's fail and raises, and the exits
_FAILING_CALLS = frozenset({"fail", "raises", "assertRaises", "assertRaisesRegex", "exit",
                            "_exit", "quit", "abort"})


def _failing(name: str) -> bool:
    return name.startswith("assert") or name in _FAILING_CALLS


def _fixed(test: ast.expr) -> bool:
    """Whether an assert's test reads nothing (`assert True`, `assert 1 == 1`): it always
    holds or always fails, whatever the program does."""
    return not any(isinstance(n, (ast.Name, ast.Call, ast.Attribute, ast.Subscript,
                                  ast.Await, ast.Starred)) for n in ast.walk(test))


def _holds_check(body: list[ast.stmt], functions: dict[str, ast.AST]) -> bool:
    """Whether running a block can fail a test for what the program does (_running's
    nodes): it asserts something that reads a value, or `assert False` (in a branch: the
    try that expects a raise), raises an exception, expects a raise, calls an assert*
    function or one that fails a test, or calls a function of the test code (`functions`)
    that does. A bare `raise` (a caught exception raised again) is none."""
    seen: set[str] = set()
    todo = list(_running(body))
    while todo:
        node = todo.pop()
        if isinstance(node, ast.Assert) and not _list_literal(node.test) \
                and (not _fixed(node.test) or _constant_false(node.test)):
            return True
        if isinstance(node, ast.Raise) and node.exc is not None:
            return True
        if isinstance(node, (ast.With, ast.AsyncWith)) and any(
                _expects_raise(item.context_expr) for item in node.items):
            return True
        # a function of the tests, called or named (map(check, cases), a thread's target):
        # its body, unless it is a generator (calling one runs nothing); a name of another
        # that fails a test (assert*, pytest.fail)
        name = node.id if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) \
            else _name_of(node.func) if isinstance(node, ast.Call) else ""
        if name in functions:
            if name not in seen and not _generator(functions[name]):
                seen.add(name)
                todo.extend(_running(functions[name].body))
        elif isinstance(node, ast.Call) and _failing(name):
            return True
    return False


def _generator(function: ast.AST) -> bool:
    """Whether a function yields (a call of it runs none of its body)."""
    return any(isinstance(n, (ast.Yield, ast.YieldFrom)) for n in _running(function.body))


def _functions(*texts: str) -> dict[str, ast.AST]:
    """The functions the test code defines at any depth, by name (a helper the tests call;
    of a name defined twice, the later definition, the one that runs)."""
    found: dict[str, ast.AST] = {}
    for text in texts:
        for node in ast.walk(ast.Module(body=_parsed(text) or [], type_ignores=[])):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                found[node.name] = node
    return found


def _no_check(tests: tuple[str, ...], setup: str, key: str, shown: str = "") -> None:
    """An R1kitError where no test of a row holds a check (_holds_check): each would pass
    every program that runs without raising. A test that does not parse fails every program,
    so it is no pass to forge, and a row with one is left alone. `shown`: the row's text to
    quote (default: its first test)."""
    functions = _functions(setup, *tests)
    bodies = [_parsed(t) for t in tests]
    if any(b is None for b in bodies) or any(_holds_check(b, functions) for b in bodies):
        return
    shown = shown or tests[0]
    shown = shown if len(shown) <= 80 else shown[:77] + "..."
    raise R1kitError(f"field {key!r}: no test of the row can fail ({shown!r}): none holds an "
                     "assert that reads a value, a raise, pytest.raises or an assert* call, "
                     "so every program that runs would pass", "write each test as an assert "
                     "statement (assert add(1, 2) == 3), or use pytest.raises or an assert* "
                     "function")


def _expects_raise(node: ast.AST) -> bool:
    """Whether a with statement's context is pytest.raises or unittest's assertRaises."""
    return _name_of(node.func if isinstance(node, ast.Call) else node) in _RAISES


def _idle(statement: ast.stmt) -> bool:
    """Whether a statement checks nothing: `pass`, a bare value without a call (a dict
    literal, a string), `assert True` (HumanEval's filler between its checks)."""
    if isinstance(statement, ast.Pass):
        return True
    if isinstance(statement, ast.Assert):
        return isinstance(statement.test, ast.Constant) and bool(statement.test.value)
    return isinstance(statement, ast.Expr) and not any(
        isinstance(n, (ast.Call, ast.Await, ast.Yield)) for n in ast.walk(statement))


def _checks_nothing(test: str, own: frozenset[str] = frozenset()) -> str:
    """Why a test statement block can pass whatever the program does ("" where it can
    fail): _unasserted's, or nothing but comments and statements that check nothing
    (_idle). `own`: the names of the tests' own functions."""
    body = _parsed(test)
    why = _unasserted(test, body, own)
    if why:
        return why
    if body is not None and all(map(_idle, body)):
        return "it asserts nothing" if body else "it is empty"
    return ""


def _refuse(why: str, test: str, key: str) -> None:
    if why:
        shown = test if len(test) <= 80 else test[:77] + "..."
        if why.startswith(("it is too long", "it is nested too deeply")):
            raise R1kitError(f"field {key!r}: the test {shown!r} cannot be checked for "
                             f"whether it can fail ({why})", "shorten it, or drop the row")
        raise R1kitError(f"field {key!r}: the test {shown!r} checks nothing ({why}), so every "
                         "program would pass it", "write each test as an assert statement "
                         "(assert add(1, 2) == 3)")


def _checked(tests: tuple[str, ...], key: str, setup: str) -> tuple[str, ...]:
    if not tests:
        raise R1kitError(f"field {key!r} is an empty list: the row has no tests",
                         "give each row at least one test, or drop the row")
    own = frozenset(_functions(setup, *tests))
    for test in tests:
        _refuse(_checks_nothing(test, own), test, key)
    called = tuple(_called(t) for t in tests)
    _no_check(called, setup, key)
    return tuple(_guarded(t, setup) for t in called)


_RAISES = ("raises", "assertRaises", "assertRaisesRegex")
# what an except clause catches that also catches a missing function's NameError, or the
# ImportError of `from solution import f` (one that names NameError or AttributeError alone
# is about a name that may be missing: `try: text = unicode except NameError: text = str`)
_CATCHES_MISSING = frozenset({"Exception", "BaseException", "ImportError",
                              "ModuleNotFoundError"})


def _raising(node: ast.AST) -> list[ast.AST]:
    """What a statement or expression expects may raise: the body of a `with
    pytest.raises(...)` (or assertRaises), the callable and arguments of
    `pytest.raises(E, f, x)`, the body of a try whose except clause would catch a missing
    function's NameError or ImportError (`except Exception`, bare)."""
    if isinstance(node, (ast.With, ast.AsyncWith)) and any(
            _expects_raise(item.context_expr) for item in node.items):
        return list(node.body)
    if isinstance(node, ast.Call) and _name_of(node.func) in _RAISES:
        return list(node.args[1:]) + [k.value for k in node.keywords]
    if isinstance(node, ast.Try) and any(_catches(h, _CATCHES_MISSING) for h in node.handlers):
        return list(node.body)
    return []


def _reached(body: list[ast.stmt], functions: dict[str, ast.AST]) -> list[ast.AST]:
    """The nodes a block runs: its own, and those of the functions of the tests it calls or
    names (at any depth), not those of the functions it defines and never calls."""
    out, seen, todo = [], set(), list(body)
    while todo:
        node = todo.pop()
        out.append(node)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        todo.extend(ast.iter_child_nodes(node))
        name = node.id if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) \
            else ""
        if name in functions and name not in seen:
            seen.add(name)
            todo.extend(functions[name].body)
    return out


def _solution_names(tree: ast.AST) -> set[str]:
    """The names a test binds to the module `solution` (import solution [as s])."""
    return {a.asname or a.name for n in ast.walk(tree) if isinstance(n, ast.Import)
            for a in n.names if a.name == "solution"}


class _WithoutSolutionImports(ast.NodeTransformer):
    def visit_ImportFrom(self, node: ast.ImportFrom):
        return None if node.module == "solution" else node


def _guarded(test: str, setup: str) -> str:
    """A test that expects a raise, with a first line that reads the functions the raising
    parts it runs call (_raising; in the test and in the helpers it calls) and neither the
    test nor its setup binds (the program's functions), and the attributes of the module
    `solution` they call or import (pytest-style tests' view of the program) that the test
    does not set: under `pytest.raises(Exception)` a program that does not define the
    function would pass by its NameError (AttributeError, ImportError). The line raises that
    error outside the raising part instead. Only what is called or imported is read first:
    a value the program makes later (a global its init() sets) is not."""
    body = _parsed(test)
    if not body or "__future__" in test:
        return test
    tree = ast.Module(body=body + (_parsed(setup) or []), type_ignores=[])
    if any(isinstance(n, ast.ImportFrom) and any(a.name == "*" for a in n.names)
           and n.module != "solution" for n in ast.walk(tree)):
        return test  # (a star import binds names the syntax does not show)
    reached = _reached(body, _functions(setup, test))
    regions = [r for node in reached for r in _raising(node)]
    if not regions:
        return test
    modules = _solution_names(tree)
    # the callables: of each call in a raising part, and pytest.raises(E, f, x)'s f
    called = [n.func for r in regions for n in ast.walk(r) if isinstance(n, ast.Call)]
    called += [n.args[1] for n in reached if isinstance(n, ast.Call)
               and _name_of(n.func) in _RAISES and len(n.args) > 1]
    # the names bound other than by `from solution import` (which, in a raising part, a
    # missing function would pass by its ImportError)
    _, bound = names_of(_WithoutSolutionImports().visit(copy.deepcopy(tree)))
    names = sorted(n for n in {f.id for f in called if isinstance(f, ast.Name)}
                   - bound - set(vars(builtins)) if not (n.startswith("__") and n.endswith("__")))
    set_here = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)
                and not isinstance(n.ctx, ast.Load) and isinstance(n.value, ast.Name)
                and n.value.id in modules} | {
        n.args[1].value for n in ast.walk(tree) if isinstance(n, ast.Call)
        and _name_of(n.func) == "setattr" and len(n.args) > 1
        and isinstance(n.args[1], ast.Constant) and isinstance(n.args[1].value, str)}
    attrs = {f.attr for f in called if isinstance(f, ast.Attribute)
             and isinstance(f.value, ast.Name) and f.value.id in modules}
    attrs |= {a.name for r in regions for n in ast.walk(r) if isinstance(n, ast.ImportFrom)
              and n.module == "solution" for a in n.names if a.name != "*"}
    names += [f"__import__('solution').{a}" for a in sorted(attrs - set_here)]
    return f"({', '.join(names)},)\n{test}" if names else test


def _without_main_block(test: str) -> str:
    """A pytest-style test file without its `if __name__ == "__main__":` block (pytest imports
    the file, so the block never runs there; `pytest.main([__file__])` would fail here)."""
    body = _parsed(test)
    cut = [(n.lineno, n.end_lineno) for n in body or () if isinstance(n, ast.If)
           and isinstance(n.test, ast.Compare) and len(n.test.comparators) == 1
           and {getattr(n.test.left, "id", None), getattr(n.test.comparators[0], "value", None)}
           == {"__name__", "__main__"}]
    if not cut:
        return test
    # (the lines as the parser counts them: \f, \x85 or \u2028 in a string end none)
    lines = re.findall(r".*?(?:\r\n|\r|\n)|.+$", test, re.DOTALL)
    for first, last in reversed(cut):
        del lines[first - 1:last]
    return "".join(lines)


def _module_setup(setup: str, tests: tuple[str, ...]) -> str:
    if any(_imports_solution(t) for t in (setup, *tests)):
        return SOLUTION_MODULE + setup
    return setup


def _imports_solution(text: str) -> bool:
    """Whether test code imports the module `solution`: `from solution import f`, `import
    solution`, also among other modules (`import os, solution`) or by name
    (`importlib.import_module("solution")`)."""
    if _SOLUTION_IMPORT.search(text):
        return True
    if "solution" not in text:
        return False
    tree = ast.Module(body=_parsed(text) or [], type_ignores=[])
    return bool(_solution_names(tree)) or any(
        isinstance(n, ast.ImportFrom) and n.module == "solution"
        or isinstance(n, ast.Call) and _name_of(n.func) in ("import_module", "__import__")
        and n.args and isinstance(n.args[0], ast.Constant) and n.args[0].value == "solution"
        for n in ast.walk(tree))


def tests_from_row(row: dict) -> TestSpec | IOCases:
    """The tests of a row in the r1kit, MBPP or HumanEval schema (see the module docstring),
    or a pytest-style `test` without `entry_point` (KodCode's: test_* functions, the code
    imported `from solution`): each test function is a test; or its input/output or
    function-call cases (r1kit.rewards.code_io): those of a `tests` field that holds cases
    (DeepCoder's), or of a row with none of the fields above. A test that checks nothing (a
    bare comparison or value: every program would pass) is refused with a message."""
    if present(row, "tests") and not holds_cases(row["tests"]):
        setup = _optional_str(row, "setup")
        tests = _checked(_string_list(row, "tests"), "tests", setup)
        return TestSpec(tests=tests, setup=_module_setup(setup, tests))
    if present(row, "test_list"):
        setup = _optional_str(row, "test_setup_code")
        tests = _checked(_string_list(row, "test_list"), "test_list", setup)
        return TestSpec(tests=tests, setup=_module_setup(setup, tests))
    if present(row, "test") and not present(row, "entry_point") \
            and isinstance(row["test"], str) and _ANY_TEST.search(row["test"]):
        _uncallable(row["test"])
        _refuse(_unasserted(row["test"], own=frozenset(_functions(row["test"]))),
                row["test"], "test")
        names = tuple(dict.fromkeys(_TEST_FUNCTION.findall(row["test"])))
        # each test defines every test function again before its call: the candidate's code
        # (run by an earlier test) cannot have rebound the one it calls
        text = _without_main_block(row["test"])
        tests = tuple(f"{text}\n{name}()" for name in names)
        _no_check(tests, "", "test", row["test"])
        return TestSpec(tests=tuple(_guarded(t, "") for t in tests),
                        setup=_module_setup("", (row["test"],)))
    if present(row, "test"):
        test = _optional_str(row, "test")
        _refuse(_unasserted(test, own=frozenset(_functions(test))), test, "test")
        entry = row.get("entry_point")
        if not isinstance(entry, str) or not _IDENTIFIER.fullmatch(entry):
            raise R1kitError("a HumanEval row needs 'entry_point', the name of the function "
                             f"to check, got {entry!r}")
        if "check" in _functions(row["test"]):  # (without it every program fails)
            _no_check((f"check({entry})",), row["test"], "test", row["test"])
        return TestSpec(tests=(f"check({entry})",), setup=_optional_str(row, "test"),
                        prelude=_optional_str(row, "prompt"))
    io = io_cases_from_row(row)
    if io is not None:
        return io
    empty = [k for k in ("tests", "test_list", "test", *IO_KEYS) if k in row]
    said = "" if not empty else f"field {empty[0]!r} is empty: " if len(empty) == 1 else \
        f"fields {', '.join(map(repr, empty))} are empty: "
    raise R1kitError(said + "the row has no tests",
                     "give 'tests' (and 'setup'), MBPP 'test_list' "
                     "(and 'test_setup_code'), HumanEval 'test' and 'entry_point', pytest-style "
                     "test_* functions in 'test', or input/output cases ('test_cases', APPS' "
                     "'input_output', open-r1's 'verification_info')")


def _parts(outcome: TestOutcome | IOOutcome | None, total: int, pass_fraction: bool
           ) -> tuple[float, dict[str, Any]]:
    if outcome is None:
        return 0.0, {"accuracy": 0.0, "passed": 0, "total": total, "has_code": 0.0,
                     "complete": 0.0, "status": "no_code"}
    if isinstance(outcome, IOOutcome):
        # each case is its own run: the fraction counts the cases that passed; a case not
        # run (stopped after a failure or a timeout) did not pass
        complete, status = outcome.ran == outcome.total, outcome.status
    else:
        complete, status = outcome.complete, outcome.result.status
        if status == "ok" and not complete:
            status = "no_report"  # exited 0 without the harness's report: it never finished
    if pass_fraction:
        accuracy = outcome.passed / outcome.total \
            if outcome.total and (complete or isinstance(outcome, IOOutcome)) else 0.0
    else:
        accuracy = 1.0 if outcome.all_passed else 0.0
    return accuracy, {"accuracy": accuracy, "passed": outcome.passed, "total": outcome.total,
                      "has_code": 1.0, "complete": 1.0 if complete else 0.0,
                      "status": status}


def _total(spec: TestSpec | IOCases) -> int:
    return len(spec.cases) if isinstance(spec, IOCases) else len(spec.tests)


def _completion(row: dict, completion: str | None) -> str:
    if completion is None:
        completion = row.get("completion")
    if not isinstance(completion, str):
        raise R1kitError("no completion to score: pass one, or give the row a 'completion' "
                         "string")
    return completion


_BLOCKS = ("body", "orelse", "finalbody", "handlers", "cases")  # a statement's nested blocks


def _binds(code: str, name: str) -> bool:
    """Whether a program binds `name` at module level (also inside a module-level if, try,
    with, for or while): defines it (def, class), assigns it (`has_close = solve`) or imports
    it; a function's body alone binds nothing of the kind."""
    if len(code) > 200_000:  # (not parsed: found by its def line alone)
        return re.search(rf"^\s*def\s+{re.escape(name)}\s*\(", code, re.MULTILINE) is not None
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False
    todo = list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            if node.name == name:
                return True
            continue  # (its body binds its own names)
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            if any((a.asname or a.name.split(".")[0]) == name for a in node.names):
                return True
            continue
        # what the statement stores outside its blocks: assignment and loop targets, `with
        # ... as`, `:=` (a function's body alone reads the name; it stores none of it)
        heads = [v for f, v in ast.iter_fields(node) if f not in _BLOCKS]
        if any(isinstance(n, ast.Name) and n.id == name and isinstance(n.ctx, ast.Store)
               for head in heads for item in (head if isinstance(head, list) else [head])
               if isinstance(item, ast.AST) for n in ast.walk(item)):
            return True
        # the blocks of module-level statements (if, try, with, for, while, match) run at
        # module level: a def in them binds the name too
        for field in _BLOCKS:
            value = getattr(node, field, None)
            if isinstance(value, list):
                todo.extend(value)
    return False


def _program(row: dict, code: str | None) -> str | None:
    """The program to test: the completion's code, or for a HumanEval row (`test`,
    `entry_point`, `prompt`) whose code does not define the entry point, the function's body
    alone (as HumanEval's completions are), put under the prompt's signature and docstring."""
    if code is None or not (present(row, "test") and isinstance(row.get("entry_point"), str)
                            and isinstance(row.get("prompt"), str)):
        return code
    if _binds(code, row["entry_point"]):
        return code
    body = textwrap.indent(textwrap.dedent(code), "    ")
    return f"{row['prompt'].rstrip()}\n{body}"


def _code_of(row: dict, completion: str) -> str | None:
    """The code a completion gives for a row: its fenced block (extract_code), or for a
    HumanEval row an answer without a fence that is Python under the prompt's signature (as
    HumanEval's own completions are: the function's body continuing the prompt)."""
    code = extract_code(completion)
    if code is not None or not (present(row, "test") and isinstance(row.get("entry_point"), str)
                                and isinstance(row.get("prompt"), str)):
        return code
    part = answer_part(completion)
    if part is None or not part.strip() or len(part) > 50_000:
        return None
    body = textwrap.dedent(part.strip("\n")) + "\n"
    try:
        compile(_program(row, body), "<completion>", "exec")
    except Exception:  # noqa: BLE001 - prose (SyntaxError), or text that exhausts the
        return None  # compiler (RecursionError, MemoryError): not a body to run
    return body


def score_code_row(row: dict, completion: str | None = None, *, pass_fraction: bool = False,
                   limits: Limits | None = None, isolation: str | None = None
                   ) -> tuple[float, dict[str, Any]]:
    """(reward, parts) for one completion against the row's tests; completion defaults to
    row["completion"]. parts: accuracy, passed, total, has_code, complete (numbers) and
    status (a RunResult status, "no_code" or "no_report")."""
    return score_code_rows([row], [completion], pass_fraction=pass_fraction, limits=limits,
                           isolation=isolation)[0]


def score_code_rows(rows: Sequence[dict], completions: Sequence[str | None] | None = None, *,
                    pass_fraction: bool = False, limits: Limits | None = None,
                    workers: int | None = None, pool=None, isolation: str | None = None,
                    max_cases: int | Sequence[int] = 0) -> list[tuple[float, dict[str, Any]]]:
    """score_code_row for many rows at once, the programs running in parallel in a
    SandboxPool (`pool`, or one made for the call with `workers`, default one per CPU).
    Results are in input order. `max_cases` (one for all rows, or one per row; 0: all) runs
    only the first that many input/output or call cases of a row (a training reward's cost
    on rows with hundreds of generated cases); assert-style tests all run."""
    rows = list(rows)  # (read once, and alive until the end: their ids stay theirs)
    if completions is None:
        completions = [None] * len(rows)
    if len(completions) != len(rows):
        raise ValueError(f"{len(rows)} rows but {len(completions)} completions")
    read: dict[int, TestSpec | IOCases] = {}  # (a group's samples share their row: read once)
    for row in rows:
        if id(row) not in read:
            read[id(row)] = tests_from_row(row)
    specs = [read[id(row)] for row in rows]
    caps = [max_cases] * len(rows) if isinstance(max_cases, int) else list(max_cases)
    if len(caps) != len(rows):
        raise ValueError(f"{len(rows)} rows but {len(caps)} max_cases")
    specs = [spec.first(cap) if isinstance(spec, IOCases) else spec
             for spec, cap in zip(specs, caps)]
    codes = [_program(row, _code_of(row, _completion(row, c))) for row, c in zip(rows, completions)]
    todo = [i for i, code in enumerate(codes) if code is not None]
    harness = [i for i in todo if isinstance(specs[i], TestSpec)]
    io = [i for i in todo if isinstance(specs[i], IOCases)]
    limits = limits or DEFAULT_LIMITS
    outcomes: dict[int, TestOutcome | IOOutcome] = {}
    own = pool is None and bool(todo)
    if own:
        pool = SandboxPool(workers, isolation=isolation)
    try:
        if harness:
            ran = run_tests_many([codes[i] for i in harness], [specs[i] for i in harness],
                                 limits=limits, pool=pool)
            outcomes.update(zip(harness, ran))
        if io:
            ran = run_io_many([codes[i] for i in io], [specs[i] for i in io], pool=pool,
                              limits=limits, pass_fraction=pass_fraction)
            outcomes.update(zip(io, ran))
    finally:
        if own:
            pool.close()
    return [_parts(outcomes.get(i), _total(spec), pass_fraction)
            for i, spec in enumerate(specs)]

"""Input/output code cases: a program reads a case's input on stdin and its stdout is compared
with the expected output, as competitive programming judges it (APPS, TACO, Codeforces,
CodeContests, LiveCodeBench, open-r1's verification_info); or a function is called on a
case's arguments and the value it returns compared.

Each case is its own sandboxed process (r1kit/sandbox), with its own limits, that sees only
the case's input: the expected output never leaves the parent, which compares. A program
therefore cannot read the answer it is checked against, as it could if the cases ran inside
one harness process with it.

Comparison (`outputs_match`): the outputs' whitespace-separated tokens, in order. A token
equals the expected one as text, or, where the expected token is a decimal number with a
point (`0.333333`, `1.5e-9`), as a number within `FLOAT_TOLERANCE` (absolute, or relative to
the expected value where that is above 1), as the usual checkers of Codeforces accept
floating-point answers. Integers and words compare exactly (`YES` is not `Yes`), and so does
everything in open-r1's Codeforces rows (`official_tests`): there, a problem with several
right outputs has a checker, and those rows are refused. Tokens are separated by ASCII
whitespace, as the judges' checkers read them; line breaks and trailing spaces do not
matter. Numbers are ASCII. LiveCodeBench's rows (`public_test_cases`, `private_test_cases`)
are compared as its own judge compares them (`lines_match`): line by line, each line's words
equal as text or as exact decimals (`3.0` is `3` there; no tolerance), and the count of
lines too.

A stdin program runs as it is, unless it reads, without importing or defining it, a name
that LiveCodeBench's judge gives the programs it runs (its star imports: `deque`, `gcd`,
`sys`, `List`, ...; CALL_NAMES); then it runs as `__main__` with those names among the
builtins, as there (stdin_source).

Function-call cases (APPS' and TACO's `fn_name`, open-r1's `function_call` cases,
LiveCodeBench's `functional` ones) call a function on each case's arguments instead: the
program is loaded as module `solution` (call_source; its `__main__` block does not run), with
the names the judges import for it already there (CALL_NAMES), then `fn_name(*args)` or,
where it defines class Solution as LeetCode's starter code does, `Solution().fn_name(*args)`,
in a process of its own that reads the arguments as JSON on stdin. What it prints is
discarded. The value returned comes back as JSON and the parent compares it with `==`, as
the judges of APPS and LiveCodeBench do (1 == 1.0 == True; numbers of other types, such as
Fraction or numpy's, as the numbers they are). The expected value never reaches the process
here either. Where this differs from those judges: a tuple is a list at any depth (they
convert the outer one); a returned dict's keys compare as JSON's text keys (APPS makes the
expected dict's keys numbers); APPS' wrapped outputs ([v] for v) accept v only where the
list holds one value (APPS accepts the first of any list); a module-level function of that
name is called where class Solution lacks the method; APPS' `np` (numpy) is there only for a
program that names `np.` (its import costs a tenth of a second).

Schemas (`io_cases_from_row`), the first present wins:
- `input_output` (APPS, TACO): a JSON object (or its text) with `inputs` and `outputs`, and
  `fn_name` for function-call problems;
- `verification_info` (open-r1, PrimeIntellect): an object (or its text) whose `test_cases`
  hold `input` and `output` (type `stdin_stdout`, or `function_call` with `fn_name`);
- `official_tests` (open-r1's Codeforces): a list of `input`/`output` objects;
- `test_cases`: a list of `input`/`output` objects, or an object of two lists;
- `public_tests`, `private_tests`, `generated_tests` (DeepMind's CodeContests): objects of
  two lists, all of them together;
- `public_test_cases` and `private_test_cases` (LiveCodeBench): lists of `input`, `output`,
  `testtype` ("stdin" or "functional", calling `metadata`'s func_name; each input line is an
  argument's JSON). Private tests packed as LiveCodeBench ships them (a pickle of the JSON
  text, zlib-compressed, base64) are read by an unpickler that builds plain data only;
- `tests` holding such cases instead of assert statements (DeepCoder's rows: a list of case
  objects of any of the kinds above, an object of two lists with `fn_name`, or their JSON
  text; functional cases call `metadata`'s func_name).
A row's cases are in `IOCases.cases`, and all of them run, in order; a grpo stage's
`code_max_cases` runs a training row's first N only (`IOCases.first`, which adds the first
case that expects another output where those N all expect the same, so that a program
printing a constant, or nothing, does not pass).

Refused with a message, because comparing their output as text would score right answers
wrong: cases in another language, problems with a checker (`generated_checker`: several
answers are right), an interactor (`interaction_format`) or file input and output
(`input_mode` other than `stdio`, CodeContests' `input_file`), rows whose every expected
output is empty (a program printing nothing would pass), or whose every call expects None,
and rows that mix stdin and call cases.

A program's cases run in order of submission to the pool, which starts them in that order.
Its outcome is read up to the first case that decides it, so that it does not depend on how
many cases the pool happened to start at once: without pass_fraction the first failure (the
reward is 0 and the cases after it are not started), with it the first timeout (a program
that hangs would cost the wall limit again on each later case: those count as failed).
"""

from __future__ import annotations

import ast
import base64
import builtins
import functools
import io
import json
import keyword
import math
import pickle
import re
import threading
import zlib
from collections.abc import Callable
from concurrent.futures import CancelledError, Future
from dataclasses import dataclass, replace
from decimal import Decimal, InvalidOperation
from typing import Any

from r1kit.errors import R1kitError
from r1kit.sandbox.harness import draining

FLOAT_TOLERANCE = 1e-6
IO_KEYS = ("input_output", "verification_info", "official_tests", "test_cases",
           "public_tests", "private_tests", "generated_tests", "public_test_cases",
           "private_test_cases")
_LIVECODEBENCH = ("public_test_cases", "private_test_cases")
_CODE_CONTESTS = ("public_tests", "private_tests", "generated_tests")
# ASCII only, as the judges' checkers read numbers (float() also takes other scripts' digits)
_DECIMAL = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+)(?:[eE][-+]?\d+)?", re.ASCII)
_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?", re.ASCII)
# the separators of the judges' token checkers: space, tab, CR, LF (str.split() would also
# split on Unicode spaces, so that "1\u00a02" would read as "1 2")
_SPACES = re.compile(r"[ \t\r\n\f\v]+")
# (input, output, the function called ("" for stdin cases), whether APPS' [v] unwraps)
_Case = tuple[str, str, str, bool]
_HINT = ("give each case as {'input': ..., 'output': ...} under 'test_cases', or APPS' "
         "'input_output' {'inputs': [...], 'outputs': [...]}")


@dataclass(frozen=True)
class IOCases:
    """Cases of stdin text and expected stdout text, run one process each."""

    cases: tuple[tuple[str, str], ...]
    tolerance: float = FLOAT_TOLERANCE
    # function-call cases: the name of the function each case calls, the case's input the
    # JSON text of its arguments and its output the JSON text of the value expected back
    call: str = ""
    # APPS' rule for call cases: an expected value [v] also accepts v as the return value
    unwrap: bool = False
    # stdout compared as LiveCodeBench's judge compares it (lines_match) instead of by tokens
    by_lines: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "cases", tuple(tuple(c) for c in self.cases))

    def first(self, n: int) -> IOCases:
        """These cases cut to the first `n` (a training reward's cost: `code_max_cases`),
        and, where those `n` all expect the same output, the first case after them that
        expects another (where the row has one): a program that prints or returns a
        constant, or nothing, must not pass the cut."""
        if n <= 0 or len(self.cases) <= n:
            return self
        first = self.cases[0][1]
        if any(not self._alike(first, out) for _, out in self.cases[1:n]):
            return replace(self, cases=self.cases[:n])
        other = next((c for c in self.cases[n:] if not self._alike(first, c[1])), None)
        return replace(self, cases=self.cases[:n] + ((other,) if other else ()))

    def _alike(self, a: str, b: str) -> bool:
        """Whether one constant output could meet both expected outputs: stdout within twice
        the tolerance, call values equal with ==, either unwrapped from APPS' [v]."""
        if not self.call:
            if self.by_lines:
                return lines_match(a, b)
            return outputs_match(a, b, 2 * self.tolerance) \
                or outputs_match(b, a, 2 * self.tolerance)  # ("1" meets both "1" and "1.0")
        x, y = json.loads(a), json.loads(b)
        xs, ys = [x], [y]
        if self.unwrap:
            xs += [x[0]] if isinstance(x, list) and len(x) == 1 else []
            ys += [y[0]] if isinstance(y, list) and len(y) == 1 else []
        try:
            return any(u == v for u in xs for v in ys)
        except RecursionError:
            return False


def _trivial(expected: str, call: str) -> bool:
    """Whether a case's expected output is one a program that does nothing gives: empty
    stdout, or a call's None (APPS' [None])."""
    return json.loads(expected) in (None, [None]) if call else not expected.strip()


@dataclass(frozen=True)
class IOOutcome:
    """What the cases of one program gave: `passed` of `total`; `ran` of them were judged,
    in order, up to the case that decided the outcome (module docstring); `status` the first
    non-ok run status among them ("ok" when each exited cleanly, whatever it printed)."""

    passed: int
    total: int
    ran: int
    status: str

    @property
    def all_passed(self) -> bool:
        return self.total > 0 and self.passed == self.total


def outputs_match(got: str, expected: str, tolerance: float = FLOAT_TOLERANCE) -> bool:
    """Whether a program's stdout answers a case (module docstring: tokens, decimals within
    tolerance)."""
    a, b = _SPACES.split(got.strip(" \t\r\n\f\v")), _SPACES.split(expected.strip(" \t\r\n\f\v"))
    if len(a) != len(b):
        return False
    for x, y in zip(a, b):
        if x == y:
            continue
        if not (tolerance and _DECIMAL.fullmatch(y) and _NUMBER.fullmatch(x)):
            return False
        fx, fy = float(x), float(y)
        if not (math.isfinite(fx) and math.isfinite(fy)) \
                or abs(fx - fy) > tolerance * max(1.0, abs(fy)):
            return False
    return True


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.strip().split("\n")]


def lines_match(got: str, expected: str) -> bool:
    """Whether a program's stdout answers a case as LiveCodeBench's judge decides it: the
    same number of lines once the whole text and each line are stripped, and each line the
    same text, or the same numbers (its whitespace-separated words read as Decimal: `3.0`
    is `3`, `0.50` is `0.5`, but `0.3333334` is not `0.333333`)."""
    a, b = _lines(got), _lines(expected)
    if len(a) != len(b):
        return False
    for x, y in zip(a, b):
        if x == y:
            continue
        try:
            if [Decimal(w) for w in x.split()] != [Decimal(w) for w in y.split()]:
                return False
        except (InvalidOperation, ValueError):
            return False
    return True


def _object(value: Any, key: str) -> Any:
    if isinstance(value, (str, bytes)):
        try:
            return json.loads(value)
        except (ValueError, RecursionError) as exc:
            raise R1kitError(f"field {key!r} is text that is not JSON: "
                             f"{exc if isinstance(exc, ValueError) else 'nested too deeply'}",
                             _HINT) from None
    return value


def _text(value: Any, key: str) -> str:
    """A case's input or output: text, or a list of lines (as some TACO rows give them)."""
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        value = "\n".join(value) + "\n"
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise R1kitError(f"field {key!r}: a case holds text that is not valid Unicode (a "
                             "lone surrogate)", "fix or drop the row") from None
        return value
    raise R1kitError(f"field {key!r}: a case's input and output must be text, got "
                     f"{type(value).__name__}", _HINT)


def _pairs(inputs: Any, outputs: Any, key: str, call: str = "") -> list[_Case]:
    if not isinstance(inputs, (list, tuple)) or not isinstance(outputs, (list, tuple)):
        raise R1kitError(f"field {key!r} must hold a list of inputs and a list of outputs",
                         _HINT)
    if len(inputs) != len(outputs):
        raise R1kitError(f"field {key!r} has {len(inputs)} inputs but {len(outputs)} outputs",
                         _HINT)
    if call:
        return [_call_case(i, o, key, call) for i, o in zip(inputs, outputs)]
    return [(_text(i, key), _text(o, key), "", False) for i, o in zip(inputs, outputs)]


def _function(name: Any, key: str) -> str:
    if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name):
        raise R1kitError(f"field {key!r}: the name of the function the cases call (fn_name, "
                         f"metadata's func_name) must be a Python identifier, got {name!r}",
                         "fix or drop the row")
    return name


def _json(value: Any, key: str, expected: bool = False) -> str:
    """JSON text of a case's arguments, or of its expected value (which may not be NaN or
    infinite: no returned value equals NaN)."""
    try:
        return json.dumps(value, ensure_ascii=True, allow_nan=not expected)
    except (TypeError, ValueError, RecursionError) as exc:
        why = "nested too deeply" if isinstance(exc, RecursionError) else \
            "NaN or infinity, which no value equals" if "Out of range" in str(exc) else str(exc)
        raise R1kitError(f"field {key!r}: a case's {'expected value' if expected else 'input'}"
                         f" is not JSON data ({why})", "fix or drop the row") from None


def _call_case(args: Any, expected: Any, key: str, call: str) -> _Case:
    """A function-call case as APPS gives it (TACO's, open-r1's `fn_name`): `args` the list
    of the call's arguments (or its JSON text), `expected` the value returned, [v] for v."""
    what = type(args).__name__
    if isinstance(args, str):
        try:
            args = json.loads(args)
            what = f"JSON text of {type(args).__name__}"
        except (ValueError, RecursionError):
            what = "text that is not JSON"
    if not isinstance(args, (list, tuple)):
        raise R1kitError(f"field {key!r}: a function-call case's input must be the list of "
                         f"the call's arguments, got {what}",
                         "give each input as a list of arguments, as APPS does")
    return _json(list(args), key), _json(expected, key, expected=True), call, True


def _functional_case(case: dict, key: str, call: Callable[[], str]) -> _Case:
    """LiveCodeBench's `functional` case: each line of its input text an argument's JSON,
    its output the returned value's JSON, compared as it is (not unwrapped)."""
    if not isinstance(case["input"], str) or not isinstance(case["output"], str):
        raise R1kitError(f"field {key!r}: a functional case's input and output must be JSON "
                         "text", "give each argument's JSON on a line of its own, as "
                         "LiveCodeBench does")
    try:
        args = [json.loads(line) for line in case["input"].split("\n")]
        expected = json.loads(case["output"])
    except (ValueError, RecursionError) as exc:
        why = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise R1kitError(f"field {key!r}: a functional case is not JSON ({why})",
                         "fix or drop the row") from None
    name = call()
    if not name:
        raise R1kitError(f"field {key!r} holds a functional case, which calls the function "
                         "named by the row's metadata func_name, and the row has none",
                         "give the row 'metadata': {'func_name': ...}, as LiveCodeBench does")
    return _json(args, key), _json(expected, key, expected=True), _function(name, "metadata"), \
        False


def _case_list(value: Any, key: str, call: str = "",
               functional: Callable[[], str] = lambda: "") -> list[_Case]:
    """Cases from a list of {input, output} objects, or an object of two lists (with
    `fn_name` where they are calls); `call` the function the cases call where the row names
    it for all of them (cases without a type are then calls), `functional` what gives the
    one LiveCodeBench's functional cases call (read only where there is such a case)."""
    value = _object(value, key)
    if isinstance(value, dict):
        if "inputs" in value or "input" in value:
            if value.get("fn_name"):
                call = _function(value["fn_name"], key)
            return _pairs(value.get("inputs", value.get("input")),
                          value.get("outputs", value.get("output")), key, call)
        raise R1kitError(f"field {key!r} holds no 'input' and 'output'", _HINT)
    if not isinstance(value, (list, tuple)):
        raise R1kitError(f"field {key!r} must be a list of cases, got {type(value).__name__}",
                         _HINT)
    out = []
    for case in value:
        case = _object(case, key)
        if not isinstance(case, dict) or "input" not in case or "output" not in case:
            raise R1kitError(f"field {key!r}: each case must be an object with 'input' and "
                             "'output'", _HINT)
        kind = case.get("type") or case.get("testtype")
        name = case.get("fn_name") or (call if kind in (None, "", "function_call") else "")
        if kind == "functional":
            out.append(_functional_case(case, key, functional))
        elif kind == "function_call" or name:
            out.append(_call_case(case["input"], case["output"], key,
                                  _function(name or None, key)))
        elif kind not in (None, "", "stdin_stdout", "stdin"):
            raise R1kitError(f"field {key!r} holds a case of type {kind!r}: r1kit runs "
                             "stdin_stdout and function-call cases",
                             "drop the rows of other types, or write their cases as 'tests' "
                             "(assert statements)")
        else:
            out.append((_text(case["input"], key), _text(case["output"], key), "", False))
    return out


class _NoGlobals(pickle.Unpickler):
    """An unpickler that loads plain data only (str, bytes, numbers, lists, dicts): it finds
    no class and no function, so a pickle can build nothing else and call nothing."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"a pickle that names {module}.{name} is not read")


_MAX_PACKED = 256 << 20  # bytes of LiveCodeBench's decompressed private tests, per row


def _unpacked(value: Any, key: str) -> Any:
    """A field of cases: as it is, or, for text, its JSON, or LiveCodeBench's private tests
    (the JSON text pickled, compressed and base64-encoded), read without running any
    pickled code."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except RecursionError:
        raise R1kitError(f"field {key!r} is JSON nested too deeply", "fix or drop the row"
                         ) from None
    except ValueError:
        pass
    try:
        packed = base64.b64decode(value, validate=True)
        inflate = zlib.decompressobj()
        raw = inflate.decompress(packed, _MAX_PACKED)
        if inflate.unconsumed_tail:
            raise ValueError(f"more than {_MAX_PACKED >> 20} MiB")
        text = _NoGlobals(io.BytesIO(raw)).load()
        return json.loads(text)
    except Exception as exc:  # noqa: BLE001 - binascii, zlib and pickle errors, bad JSON,
        # nesting too deep
        raise R1kitError(f"field {key!r} is neither JSON nor LiveCodeBench's packed JSON "
                         f"({type(exc).__name__}: {exc})", "fix or drop the row") from None


def _func_name(row: dict) -> Any:
    """The function LiveCodeBench's (and DeepCoder's) functional cases call: `metadata`'s
    func_name, where the row has one ("" where not; checked by _function)."""
    meta = _object(row.get("metadata") or {}, "metadata")
    name = meta.get("func_name") if isinstance(meta, dict) else None
    return "" if name is None else name


def _json_object_text(value: Any) -> bool:
    return isinstance(value, str) and value.lstrip()[:1] == "{"


def present(row: dict, key: str) -> bool:
    """Whether a row has a field: a value that is not None, "" or an empty list (one file
    of several layouts, a parquet export, gives each row every layout's columns, empty)."""
    value = row.get(key)
    return value is not None and not (isinstance(value, (str, list, tuple)) and not value)


def holds_cases(value: Any) -> bool:
    """Whether a row's `tests` holds input/output or call cases (DeepCoder's rows: a list of
    case objects, or of their JSON texts, an object of inputs and outputs, or the JSON text
    of either) rather than r1kit's assert statements. (A statement never starts with `{`: as
    a test, a dict literal would check nothing.)"""
    if isinstance(value, str):
        if value.lstrip()[:1] not in ("[", "{"):
            return False
        try:
            value = json.loads(value)
        except RecursionError:  # (no list of statements: io_cases_from_row says why)
            return True
        except ValueError:  # (statements never start with `{`: not JSON, as it says)
            return value.lstrip()[:1] == "{"
    if isinstance(value, dict):
        return True
    return isinstance(value, (list, tuple)) and bool(value) \
        and all(isinstance(v, dict) or _json_object_text(v) for v in value)


def io_cases_from_row(row: dict) -> IOCases | None:
    """The input/output cases of a row (module docstring), or None when it has none. Raises
    R1kitError, with a hint, for cases r1kit cannot judge fairly."""
    key = "tests" if holds_cases(row.get("tests")) else \
        next((k for k in IO_KEYS if present(row, k)), None)
    if key is None:
        return None
    for field, what in (("generated_checker", "a checker ('generated_checker'): several "
                         "outputs are right, and r1kit compares a program's output with the "
                         "one expected"),
                        ("interaction_format", "an interactor ('interaction_format'): the "
                         "program talks with a judge program, which r1kit does not run"),
                        ("input_file", "file input ('input_file'): r1kit runs programs on "
                         "stdin and stdout"),
                        ("output_file", "file output ('output_file'): r1kit runs programs on "
                         "stdin and stdout")):
        if row.get(field):
            raise R1kitError(f"the row's problem has {what}", "drop such rows")
    tolerance = FLOAT_TOLERANCE
    if key in _CODE_CONTESTS:
        cases = [c for k in _CODE_CONTESTS if isinstance(row.get(k), (dict, list, str))
                 for c in _case_list(row[k], k)]
    elif key in _LIVECODEBENCH:  # public and private tests together
        cases = [c for k in _LIVECODEBENCH
                 for c in _case_list(_unpacked(row.get(k) or [], k), k,
                                     functional=lambda: _func_name(row))]
    elif key == "input_output":
        value = _object(row[key], key)
        if not isinstance(value, dict):
            raise R1kitError(f"field {key!r} must be an object with 'inputs' and 'outputs'",
                             _HINT)
        cases = _case_list(value, key) if "inputs" in value or "input" in value \
            else _pairs(value.get("inputs"), value.get("outputs"), key)
    elif key == "verification_info":
        value = _object(row[key], key)
        if not isinstance(value, dict) or "test_cases" not in value:
            raise R1kitError(f"field {key!r} must be an object with 'test_cases'", _HINT)
        language = value.get("language")
        if language and str(language).lower() not in ("python", "python3", "py"):
            raise R1kitError(f"field {key!r} is for language {language!r}: r1kit runs Python",
                             "drop the rows of other languages")
        call = _function(value["fn_name"], key) if value.get("fn_name") else ""
        cases = _case_list(value["test_cases"], key, call)
    else:  # (DeepCoder's `tests` too: its functional cases call metadata's func_name)
        cases = _case_list(row[key], key, functional=lambda: _func_name(row))
    if key == "official_tests":
        # open-r1's Codeforces: the generated tests, where a row carries them (not only their
        # number), are judged too; outputs compare exactly (module docstring)
        if isinstance(row.get("generated_tests"), (list, tuple, str)):
            cases += _case_list(row["generated_tests"], "generated_tests")
        tolerance = 0.0
    if row.get("input_mode") not in (None, "", "stdio"):
        raise R1kitError(f"the row's program reads and writes files (input_mode "
                         f"{row['input_mode']!r}): r1kit runs programs on stdin and stdout",
                         "drop the rows whose input_mode is not 'stdio'")
    if not cases:
        raise R1kitError(f"field {key!r} holds no cases: the row has no tests",
                         "give each row at least one case, or drop the row")
    calls = {name for _, _, name, _ in cases}
    if len(calls) > 1:
        shown = ", ".join(repr(n) if n else "stdin" for n in sorted(calls))
        raise R1kitError(f"field {key!r} mixes cases of several kinds ({shown}): a row's "
                         "cases all read stdin, or all call one function", "split the row")
    call = calls.pop()
    if all(_trivial(out, call) for _, out, _, _ in cases):
        raise R1kitError(f"field {key!r}: " + ("every case expects None back, so a function "
                                                "that does nothing passes" if call else
                                                "every case's output is empty, so a program "
                                                "that prints nothing passes"),
                         "drop the row, or give its outputs")
    return IOCases(cases=tuple((i, o) for i, o, _, _ in cases), tolerance=tolerance,
                   call=call, unwrap=bool(call) and all(u for *_, u in cases),
                   by_lines=key in _LIVECODEBENCH and not call)


# What a call case's program sees before its own code: the names LiveCodeBench's judge
# star-imports, in its order (string, re, datetime, collections, heapq, bisect, copy, math,
# random, statistics, itertools, functools, operator, io, sys, json; the builtins again after
# them, so that math's pow does not replace the builtin; typing) and the modules themselves,
# with fractions and time as APPS' judge adds them, and its recursion limit. They are the
# module's builtins (call_source): found by name as the judges give them, but not the
# program's own bindings, so that a program that defines no `add` is not given operator's
# while one that imports `gcd` from math has its own (the builtins module itself, so that a
# program that adds a builtin sees it). APPS' `np` (numpy) only for a program
# that names `np.` (_NUMPY): its import would cost every case a tenth of a second.
_STAR = ("string", "re", "datetime", "collections", "heapq", "bisect", "copy", "math", "random",
         "statistics", "itertools", "functools", "operator", "io", "sys", "json", "builtins",
         "typing")
CALL_NAMES = ("".join(f"from {m} import *\n" for m in _STAR)
              + "import " + ", ".join([m for m in _STAR if m != "builtins"]
                                      + ["fractions", "time"]) + "\n"
              + "sys.setrecursionlimit(50000)\n")
_NUMPY = "try:\n    import numpy as np\nexcept ImportError:\n    pass\n"
_USES_NP = re.compile(r"(?<![\w.])np\.")
_RETURNED = "\x1er1kit-returned\x1e"  # starts the line that carries the call's return value
_CALL_DRIVER = """\
def _r1kit_call(source, name, names, mark, int_keys):
    import builtins, json, numbers, os, sys, traceback, types
    sys.set_int_max_str_digits(0)
    args = json.loads(sys.stdin.read())
    if int_keys and args and isinstance(args[0], dict):  # APPS' judge: a dict argument's
        try:  # keys are numbers where they all read as numbers (JSON's keys are text)
            args[0] = {int(k): v for k, v in args[0].items()}
        except ValueError:
            pass
    out = os.fdopen(os.dup(1), "w", encoding="utf-8")
    err = os.fdopen(os.dup(2), "w", encoding="utf-8", errors="replace")
    quiet = os.open(os.devnull, os.O_WRONLY)
    os.dup2(quiet, 1)  # what the program prints, on stdout or stderr, is not looked at, as
    os.dup2(quiet, 2)  # the judges do not; a failure's last line goes to stderr

    def fail(why):
        err.write(why[:2000] + "\\n")
        err.flush()
        raise SystemExit(1)

    given = {}
    exec(names, given)
    del given["__builtins__"]
    builtins.__dict__.update(given)  # (the program's module holds its own bindings alone)
    module = types.ModuleType("solution")
    sys.modules["solution"] = module

    def plain(value):  # numbers of other types compare with == as the numbers they are
        if hasattr(value, "tolist"):  # numpy's scalars and arrays
            return value.tolist()
        if isinstance(value, numbers.Integral):
            return int(value)
        if isinstance(value, numbers.Number):  # Fraction, Decimal: as the judges' ==
            return int(value) if value == int(value) else float(value)
        raise TypeError(f"the function returned {type(value).__name__}, not JSON data")

    try:
        exec(compile(source, "solution.py", "exec"), module.__dict__)
        space = module.__dict__  # (the program's own bindings only)
        owner = space.get("Solution")
        if isinstance(owner, type) and callable(getattr(owner, name, None)):
            function = getattr(owner(), name)
        elif callable(space.get(name)):
            function = space[name]
        else:
            fail(f"the program defines no function {name!r} (nor a method of class Solution)")
        value = json.dumps(function(*args), default=plain)
    except Exception as exc:  # (MemoryError too: its name ends stderr, as the sandbox reads)
        fail(traceback.format_exception_only(exc)[-1].rstrip())
    out.write("\\n" + mark + value + "\\n")
    out.flush()


_r1kit_call(%r, %r, %r, %r, %r)
"""


def call_source(code: str, name: str, int_keys: bool = False) -> str:
    """The program that runs one call case: `code` as module `solution` (its `if __name__
    == "__main__"` block does not run, as in APPS' and LiveCodeBench's judges), then
    `name(*args)`, or `Solution().name(*args)` where the code defines class Solution as
    LeetCode's starter code does, on the arguments read from stdin as JSON (with `int_keys`,
    APPS' layout, a first argument that is a dict of number-like keys gets number keys, as
    APPS' judge gives it). What the program prints is discarded; the returned value goes to
    stdout as JSON after a mark. The expected value is never in the process: the parent
    compares."""
    names = CALL_NAMES + (_NUMPY if _USES_NP.search(code) else "")
    return _CALL_DRIVER % (code, name, names, _RETURNED, int_keys)


_STDIN_DRIVER = """\
import builtins as _builtins
_given = {}
exec(%r, _given)
del _given["__builtins__"]
_builtins.__dict__.update(_given)
import sys as _sys
_main = type(_sys)("__main__")  # (a module of its own, in sys.modules: pickle finds its
_main.__builtins__ = _builtins  # classes there)
_sys.modules["__main__"] = _main
exec(compile(%r, "solution.py", "exec"), _main.__dict__)
"""


@functools.lru_cache(maxsize=1)
def _judge_names() -> frozenset[str]:
    """The names CALL_NAMES gives a program that the builtins do not."""
    given: dict = {}
    # (the standard library's imports only: not the judges' recursion limit, which would
    # be this process's)
    exec(CALL_NAMES.replace("sys.setrecursionlimit(50000)\n", ""), given)
    return frozenset(given) - set(vars(builtins))


def _free_names(code: str) -> set[str]:
    """The names a program reads and binds nowhere (in no scope: a name bound anywhere in it
    counts as its own), from its syntax; none where it does not parse."""
    if len(code) > 200_000:
        return set()
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return set()
    read, bound = names_of(tree)
    return read - bound


def names_of(tree: ast.AST) -> tuple[set[str], set[str]]:
    """(the names code reads, the names it binds in any scope), from its syntax."""
    read, bound = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            (read if isinstance(node.ctx, ast.Load) else bound).add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            bound.update((a.asname or a.name.split(".")[0]) for a in node.names)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            bound.add(node.name)
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            bound.update(node.names)
        elif isinstance(node, (ast.MatchAs, ast.MatchStar)) and node.name:
            bound.add(node.name)
    return read, bound


def stdin_source(code: str) -> str:
    """The program that runs one stdin case: `code` itself, or, where it reads a name that
    LiveCodeBench's judge gives stdin programs too (its star imports: `deque`, `sys`,
    `gcd`, ...) without importing or defining it, `code` run as `__main__` with those names
    among the builtins, as that judge runs it. (Only then: the imports cost each case about
    9 ms of a core.)"""
    if not _free_names(code) & _judge_names():
        return code
    return _STDIN_DRIVER % (CALL_NAMES, code)


_MISSING = object()


def returned_value(stdout: str) -> Any:
    """The value a call case's program returned (call_source), or a sentinel where it
    returned none (it raised, printed nothing after the mark, or something no JSON reader
    reads: nested too deeply)."""
    head, mark, tail = stdout.rpartition(_RETURNED)
    if not mark:
        return _MISSING
    try:
        return json.loads(tail.split("\n", 1)[0])
    except (ValueError, RecursionError):
        return _MISSING


def returns_match(stdout: str, expected: str, unwrap: bool = False) -> bool:
    """Whether a call case's program returned the expected value (its JSON text): equal as
    Python compares the values the JSON reads as (a tuple returned is a list, at any depth;
    1 == 1.0 == True; dict keys compare as JSON's text keys), or with `unwrap` (APPS' rule,
    for an expected list of one value) equal to v where [v] is expected."""
    got = returned_value(stdout)
    if got is _MISSING:
        return False
    want = json.loads(expected)
    try:
        return bool(got == want or (unwrap and isinstance(want, list) and len(want) == 1
                                    and got == want[0]))
    except RecursionError:  # (nested deeper than a comparison goes: not the value)
        return False


def case_limits(limits, expected: str):
    """The limits for one case: `limits`, with room on stdout for at least twice the
    expected output (a correct program that prints a large answer is not cut)."""
    need = 2 * len(expected.encode("utf-8")) + (64 << 10)
    # stdout is what is judged (one past the cap has failed); stderr is not, and is drained
    # as under the harness
    limits = replace(draining(limits), stdout_judged=True)
    if need <= limits.max_output_bytes:
        return limits
    return replace(limits, max_output_bytes=need)


class _Row:
    """The cases of one program in flight: their futures, and whether a failure has stopped
    the ones not yet started."""

    def __init__(self, spec: IOCases, stop_on_failure: bool):
        self.spec = spec
        self.stop_on_failure = stop_on_failure
        self.futures: list[Future] = []
        self.lock = threading.Lock()
        self.stopped = False

    def passes(self, index: int, result) -> bool:
        if result.status != "ok":  # (stdout past its cap: killed, "output_limit")
            return False
        expected = self.spec.cases[index][1]
        if self.spec.call:
            return returns_match(result.stdout, expected, self.spec.unwrap)
        if self.spec.by_lines:
            return lines_match(result.stdout, expected)
        return outputs_match(result.stdout, expected, self.spec.tolerance)

    def done(self, index: int, future: Future) -> None:
        """A case finished (a pool thread's callback): a failure decides an all-or-nothing
        reward, and a timeout would cost the wall limit again on every case after it, so the
        cases not yet started are dropped."""
        if future.cancelled():
            return
        result = future.result()
        if self.passes(index, result) or not (self.stop_on_failure
                                              or result.status == "timeout"):
            return
        with self.lock:
            self.stopped = True
            pending = list(self.futures)
        for other in pending:
            other.cancel()

    def outcome(self) -> IOOutcome:
        # read here, not in the callbacks: a future's result is there before its callbacks
        # have run. The pool starts cases in order, and only cases after a decisive one are
        # ever dropped: every case before the first decisive one has run.
        passed = judged = 0
        status = "ok"
        for index, future in enumerate(self.futures):
            try:
                result = future.result()
            except CancelledError:
                break
            judged += 1
            ok = self.passes(index, result)
            passed += ok
            if status == "ok":
                status = result.status
            if not ok and (self.stop_on_failure or result.status == "timeout"):
                break
        return IOOutcome(passed=passed, total=len(self.spec.cases), ran=judged, status=status)


def run_io_many(codes, specs, *, pool, limits, pass_fraction: bool = False
                ) -> list[IOOutcome]:
    """Run each program of `codes` on each case of its IOCases in `pool` (a SandboxPool),
    one process per case. Without pass_fraction, a program's remaining cases are dropped at
    its first failure (its reward is 0 either way); with it, only after a timeout."""
    rows = [_Row(spec, stop_on_failure=not pass_fraction) for spec in specs]
    try:
        for code, row in zip(codes, rows):
            code = call_source(code, row.spec.call, int_keys=row.spec.unwrap) \
                if row.spec.call else stdin_source(code)
            for i, (stdin, expected) in enumerate(row.spec.cases):
                if row.stopped:  # an earlier case already decided it
                    break
                future = pool.submit(code, stdin=stdin, limits=case_limits(limits, expected))
                with row.lock:
                    row.futures.append(future)
                    stopped = row.stopped
                if stopped:
                    future.cancel()
                future.add_done_callback(lambda f, row=row, i=i: row.done(i, f))
        return [row.outcome() for row in rows]
    except BaseException:  # (an interrupt): the queued programs are not run for nothing
        for row in rows:
            for future in list(row.futures):
                future.cancel()
        raise

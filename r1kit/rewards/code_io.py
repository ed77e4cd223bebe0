"""Input/output code cases: a program reads a case's input on stdin and its stdout is compared
with the expected output, as competitive programming judges it (APPS, TACO, Codeforces,
CodeContests, open-r1's verification_info).

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
matter. Numbers are ASCII.

Schemas (`io_cases_from_row`), the first present wins:
- `input_output` (APPS, TACO): a JSON object (or its text) with `inputs` and `outputs`;
- `verification_info` (open-r1, PrimeIntellect): an object (or its text) whose `test_cases`
  hold `input` and `output` (type `stdin_stdout`);
- `official_tests` (open-r1's Codeforces): a list of `input`/`output` objects;
- `test_cases`: a list of `input`/`output` objects, or an object of two lists;
- `public_tests`, `private_tests`, `generated_tests` (DeepMind's CodeContests): objects of
  two lists, all of them together.
A row's cases are in `IOCases.cases`, all of them run (no sample is taken).

Refused with a message, because comparing their output as text would score right answers
wrong: function-call cases (`fn_name`), cases in another language, problems with a checker
(`generated_checker`: several answers are right), an interactor (`interaction_format`) or
file input and output (`input_mode` other than `stdio`, CodeContests' `input_file`), and
rows whose every expected output is empty (a program printing nothing would pass).

A program's cases run in order of submission to the pool, which starts them in that order.
Its outcome is read up to the first case that decides it, so that it does not depend on how
many cases the pool happened to start at once: without pass_fraction the first failure (the
reward is 0 and the cases after it are not started), with it the first timeout (a program
that hangs would cost the wall limit again on each later case: those count as failed).
"""

from __future__ import annotations

import json
import math
import re
import threading
from concurrent.futures import CancelledError, Future
from dataclasses import dataclass, replace
from typing import Any

from r1kit.errors import R1kitError

FLOAT_TOLERANCE = 1e-6
IO_KEYS = ("input_output", "verification_info", "official_tests", "test_cases",
           "public_tests", "private_tests", "generated_tests")
_CODE_CONTESTS = ("public_tests", "private_tests", "generated_tests")
# ASCII only, as the judges' checkers read numbers (float() also takes other scripts' digits)
_DECIMAL = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+)(?:[eE][-+]?\d+)?", re.ASCII)
_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?", re.ASCII)
# the separators of the judges' token checkers: space, tab, CR, LF (str.split() would also
# split on Unicode spaces, so that "1\u00a02" would read as "1 2")
_SPACES = re.compile(r"[ \t\r\n\f\v]+")
_HINT = ("give each case as {'input': ..., 'output': ...} under 'test_cases', or APPS' "
         "'input_output' {'inputs': [...], 'outputs': [...]}")


@dataclass(frozen=True)
class IOCases:
    """Cases of stdin text and expected stdout text, run one process each."""

    cases: tuple[tuple[str, str], ...]
    tolerance: float = FLOAT_TOLERANCE

    def __post_init__(self) -> None:
        object.__setattr__(self, "cases", tuple(tuple(c) for c in self.cases))


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


def _object(value: Any, key: str) -> Any:
    if isinstance(value, (str, bytes)):
        try:
            return json.loads(value)
        except ValueError as exc:
            raise R1kitError(f"field {key!r} is text that is not JSON: {exc}", _HINT) from None
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


def _pairs(inputs: Any, outputs: Any, key: str) -> list[tuple[str, str]]:
    if not isinstance(inputs, (list, tuple)) or not isinstance(outputs, (list, tuple)):
        raise R1kitError(f"field {key!r} must hold a list of inputs and a list of outputs",
                         _HINT)
    if len(inputs) != len(outputs):
        raise R1kitError(f"field {key!r} has {len(inputs)} inputs but {len(outputs)} outputs",
                         _HINT)
    return [(_text(i, key), _text(o, key)) for i, o in zip(inputs, outputs)]


def _case_list(value: Any, key: str) -> list[tuple[str, str]]:
    """Cases from a list of {input, output} objects, or an object of two lists."""
    value = _object(value, key)
    if isinstance(value, dict):
        if "inputs" in value or "input" in value:
            return _pairs(value.get("inputs", value.get("input")),
                          value.get("outputs", value.get("output")), key)
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
        kind = case.get("type")
        if kind not in (None, "", "stdin_stdout", "stdin"):
            raise R1kitError(f"field {key!r} holds a case of type {kind!r}: r1kit runs "
                             "stdin_stdout cases only (a program reading its input)",
                             "drop the rows of other types, or write their cases as 'tests' "
                             "(assert statements)")
        if case.get("fn_name"):
            _refuse_calls(key)
        out.append((_text(case["input"], key), _text(case["output"], key)))
    return out


def _refuse_calls(key: str) -> None:
    raise R1kitError(f"field {key!r} holds function-call cases (fn_name): r1kit runs programs "
                     "on stdin, not calls of a function on arguments",
                     "write such cases as 'tests' (assert statements calling the function), "
                     "or drop those rows")


def io_cases_from_row(row: dict) -> IOCases | None:
    """The input/output cases of a row (module docstring), or None when it has none. Raises
    R1kitError, with a hint, for cases r1kit cannot judge fairly."""
    key = next((k for k in IO_KEYS if k in row and row[k] is not None), None)
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
    elif key == "input_output":
        value = _object(row[key], key)
        if not isinstance(value, dict):
            raise R1kitError(f"field {key!r} must be an object with 'inputs' and 'outputs'",
                             _HINT)
        if value.get("fn_name"):
            _refuse_calls(key)
        cases = _pairs(value.get("inputs"), value.get("outputs"), key)
    elif key == "verification_info":
        value = _object(row[key], key)
        if not isinstance(value, dict) or "test_cases" not in value:
            raise R1kitError(f"field {key!r} must be an object with 'test_cases'", _HINT)
        language = value.get("language")
        if language and str(language).lower() not in ("python", "python3", "py"):
            raise R1kitError(f"field {key!r} is for language {language!r}: r1kit runs Python",
                             "drop the rows of other languages")
        if value.get("fn_name"):
            _refuse_calls(key)
        cases = _case_list(value["test_cases"], key)
    else:
        cases = _case_list(row[key], key)
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
    if not any(out.strip() for _, out in cases):
        raise R1kitError(f"field {key!r}: every case's output is empty, so a program that "
                         "prints nothing passes", "drop the row, or give its outputs")
    return IOCases(cases=tuple(cases), tolerance=tolerance)


def case_limits(limits, expected: str):
    """The limits for one case: `limits`, with room on stdout for at least twice the
    expected output (a correct program that prints a large answer is not cut)."""
    need = 2 * len(expected.encode("utf-8")) + (64 << 10)
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
        return result.status == "ok" and not result.output_truncated \
            and outputs_match(result.stdout, self.spec.cases[index][1], self.spec.tolerance)

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

"""The code reward: answer extraction, test schemas, scores, and candidates that try to cheat.

Hostile candidates go through score_code_rows in one batch (the pool runs them two at a
time), with small limits, and each must score 0; a correct row scored after them must still
score 1. The forgery tests attack the harness itself (r1kit/sandbox/harness.py): every one of
them has a wrong solution, so any score above 0 means the attack worked.
"""

from __future__ import annotations

import os
import secrets
import socket
import textwrap
import time

import pytest

from r1kit.errors import R1kitError
from r1kit.rewards import code as code_reward
from r1kit.rewards.code import extract_code, score_code_row, score_code_rows
from r1kit.sandbox import Limits, SandboxPool, get_config
from r1kit.sandbox.harness import TestSpec, build_script, judge, run_tests
from r1kit.sandbox.runner import execute

# Not under its own name: pytest would collect anything called test*.
spec_of = code_reward.tests_from_row

LIMITS = Limits(wall_seconds=2.0, cpu_seconds=1.0, memory_bytes=256 << 20,
                file_bytes=8 << 20, disk_bytes=16 << 20, max_processes=16,
                max_output_bytes=64 << 10)
ISOLATIONS = ["bubblewrap", "limits"]

# One real row of each benchmark, fields as in the files (MBPP task 11, CC BY 4.0;
# HumanEval/0, MIT), with hand-written solutions.
MBPP_ROW = {
    "task_id": 11,
    "text": "Write a python function to remove first and last occurrence of a given character "
            "from the string.",
    "test_setup_code": "",
    "test_list": ["assert remove_Occ(\"hello\",\"l\") == \"heo\"",
                  "assert remove_Occ(\"abcda\",\"a\") == \"bcd\"",
                  "assert remove_Occ(\"PHP\",\"P\") == \"H\""],
    "challenge_test_list": [],
}
MBPP_SOLUTION = """
def remove_Occ(s, ch):
    first = s.find(ch)
    if first < 0:
        return s
    s = s[:first] + s[first + 1:]
    last = s.rfind(ch)
    return s if last < 0 else s[:last] + s[last + 1:]
"""
HUMANEVAL_ROW = {
    "task_id": "HumanEval/0",
    "prompt": "from typing import List\n\n\ndef has_close_elements(numbers: List[float], "
              "threshold: float) -> bool:\n    \"\"\" Check if in given list of numbers, are any "
              "two numbers closer to each other than\n    given threshold.\n    >>> "
              "has_close_elements([1.0, 2.0, 3.0], 0.5)\n    False\n    >>> has_close_elements("
              "[1.0, 2.8, 3.0, 4.0, 5.0, 2.0], 0.3)\n    True\n    \"\"\"\n",
    "entry_point": "has_close_elements",
    "test": "\n\nMETADATA = {\n    'author': 'jt',\n    'dataset': 'test'\n}\n\n\ndef check("
            "candidate):\n    assert candidate([1.0, 2.0, 3.9, 4.0, 5.0, 2.2], 0.3) == True\n"
            "    assert candidate([1.0, 2.0, 3.9, 4.0, 5.0, 2.2], 0.05) == False\n    assert "
            "candidate([1.0, 2.0, 5.9, 4.0, 5.0], 0.95) == True\n    assert candidate([1.0, 2.0"
            ", 5.9, 4.0, 5.0], 0.8) == False\n    assert candidate([1.0, 2.0, 3.0, 4.0, 5.0, 2."
            "0], 0.1) == True\n    assert candidate([1.1, 2.2, 3.1, 4.1, 5.1], 1.0) == True\n  "
            "  assert candidate([1.1, 2.2, 3.1, 4.1, 5.1], 0.5) == False\n\n",
}
# Uses List from the prompt's import without importing it itself, as chat answers often do.
HUMANEVAL_SOLUTION = """
def has_close_elements(numbers: List[float], threshold: float) -> bool:
    ordered = sorted(numbers)
    return any(b - a < threshold for a, b in zip(ordered, ordered[1:]))
"""
ADD_ROW = {"tests": ["assert add(1, 2) == 3", "assert add(-1, 1) == 0",
                     "assert add(2, 2) == 4", "assert add(10, 5) == 15"]}


def answer(code: str) -> str:
    return f"<think>Let me write it.</think>\n<answer>\n```python\n{code.strip()}\n```\n</answer>"


@pytest.fixture(params=ISOLATIONS)
def isolation(request) -> str:
    if request.param == "bubblewrap":
        try:
            get_config("bubblewrap")
        except R1kitError as exc:
            pytest.skip(f"bubblewrap does not work here: {exc}")
    return request.param


# ----- extract_code ---------------------------------------------------------------------------


@pytest.mark.parametrize("response, expected", [
    ("<think>x</think>```python\nprint(1)\n```", "print(1)\n"),
    ("<think>x</think>```py\nprint(1)\n```", "print(1)\n"),
    ("<think>x</think>```\nprint(1)\n```", "print(1)\n"),
    ("```Python3\nprint(1)\n```", "print(1)\n"),  # no think tags at all: the whole text
    # the last Python block of the answer wins
    ("<think>a</think>```python\nfirst()\n```\ntext\n```python\nsecond()\n```", "second()\n"),
    # code only inside the reasoning is not an answer
    ("<think>```python\nx = 1\n```</think>no code here", None),
    ("<think>```python\nx = 1\n```</think>```python\ny = 2\n```", "y = 2\n"),
    # reasoning never closed: nothing is an answer
    ("<think>```python\nx = 1\n```", None),
    # inside <answer> when there is one: a block after it is not the answer
    ("<think>a</think><answer>\n```python\nx = 1\n```\n</answer>\n```python\ny = 2\n```",
     "x = 1\n"),
    # other languages are skipped, and their closing fence opens nothing
    ("<think>a</think>```bash\nls\n```\n```python\nz = 3\n```\n```\n", "z = 3\n"),
    ("<think>a</think>```bash\nls\n```", None),
    # an unclosed block is not a block; an empty one neither
    ("<think>a</think>```python\nx = 1\n", None),
    ("<think>a</think>```python\n```", None),
    # indented fences (inside a list item) are dedented
    ("<think>a</think>\n  ```python\n  def f():\n      return 1\n  ```",
     "def f():\n    return 1\n"),
    ("", None),
    # a tagged block wins over a later untagged one (most often the program's output)
    ("<think>a</think>```python\nprint(add(1, 2))\n```\nIt prints:\n```\n3\n```",
     "print(add(1, 2))\n"),
    # Markdown's other fence: ~~~, closed by ~~~ only (a ``` line inside is code)
    ("<think>a</think>~~~python\nx = 1\n~~~", "x = 1\n"),
    ("<think>a</think>~~~python\ns = \"\"\"\n```\n\"\"\"\n~~~", "s = \"\"\"\n```\n\"\"\"\n"),
    ("<think>a</think>```python\nx = 1\n~~~\n```", "x = 1\n~~~\n"),
])
def test_extract_code(response, expected) -> None:
    assert extract_code(response) == expected


# ----- tests_from_row -------------------------------------------------------------------------


def test_tests_from_row_schemas() -> None:
    spec = spec_of({"tests": ["assert f()"], "setup": "import math"})
    assert spec == TestSpec(tests=("assert f()",), setup="import math")
    spec = spec_of(MBPP_ROW)
    assert spec.tests == tuple(MBPP_ROW["test_list"]) and spec.setup == ""
    spec = spec_of(HUMANEVAL_ROW)
    assert spec.tests == ("check(has_close_elements)",)
    assert spec.setup == HUMANEVAL_ROW["test"] and spec.prelude == HUMANEVAL_ROW["prompt"]
    with pytest.raises(R1kitError, match="no tests"):
        spec_of({"completion": "x"})
    with pytest.raises(R1kitError, match="list of strings"):
        spec_of({"tests": "assert f()"})
    with pytest.raises(R1kitError, match="entry_point"):
        spec_of({"test": "def check(c): pass", "entry_point": "f(); import os"})


def test_pytest_style_tests_are_called_and_empty_tests_refused() -> None:
    """A test that only defines `def test_add(): ...` checks nothing unless called: it is
    called (a wrong program used to pass it); KodCode's layout (`test` of test_* functions
    importing the code `from solution`) runs each function as a test; an empty test list
    is an error that says so."""
    right, wrong = answer("def add(a, b):\n    return a + b"), answer("def add(a, b):\n    return a - b")
    rows = [{"tests": ["def test_add():\n    assert add(1, 2) == 3"]},
            {"test": "from solution import add\n\ndef test_one():\n    assert add(1, 2) == 3\n"
                     "\ndef test_zero():\n    assert add(0, 0) == 0\n"},
            {"tests": ["import solution\nassert solution.add(2, 2) == 4"]}]
    assert [(s, p["passed"], p["total"]) for s, p in score_code_rows(rows, [right] * 3)] == \
        [(1.0, 1, 1), (1.0, 2, 2), (1.0, 1, 1)]
    assert [(s, p["passed"]) for s, p in score_code_rows(rows, [wrong] * 3)] == \
        [(0.0, 0), (0.0, 1), (0.0, 0)]
    with pytest.raises(R1kitError, match="field 'tests' is empty"):
        spec_of({"tests": []})
    # a program that rebinds the test functions it can reach passes no test it did not pass
    forger = answer("def add(a, b):\n    g = globals()\n    for n in list(g):\n"
                    "        if n.startswith('test_'):\n            g[n] = lambda: None\n"
                    "    return 3")
    assert score_code_rows(rows[1:2], [forger])[0][1]["passed"] == 1
    # test functions r1kit would not call (parameters, async, in a class) are refused:
    # defined and never run, they would pass every program
    for test in ("import pytest\n@pytest.mark.parametrize('a', [1])\ndef test_b(a):\n"
                 "    assert add(a, 1) == 2\n",
                 "class TestAdd:\n    def test_x(self):\n        assert add(1, 2) == 3\n",
                 "async def test_x():\n    assert add(1, 2) == 3\n"):
        for row in ({"test": test}, {"tests": [test]}):
            with pytest.raises(R1kitError, match="test function r1kit cannot call"):
                spec_of(row)


def test_a_humaneval_body_without_a_fence_is_code() -> None:
    """HumanEval's own completions are the function's body, unfenced: read as code where it
    is Python under the prompt's signature; prose is not."""
    body = "    ordered = sorted(numbers)\n    return any(b - a < threshold for a, b in " \
           "zip(ordered, ordered[1:]))\n"
    scored = score_code_rows([HUMANEVAL_ROW] * 3, [body, "<think>x</think>\n" + body,
                                                  "Sort them and compare neighbours."])
    assert [(s, p["status"]) for s, p in scored] == [(1.0, "ok"), (1.0, "ok"), (0.0, "no_code")]
    assert score_code_rows([ADD_ROW], ["def add(a, b):\n    return a + b"])[0][0] == 0.0
    # text that exhausts the compiler is no code, not a crash of the reward
    assert score_code_rows([HUMANEVAL_ROW], ["return " + "+".join(["1"] * 200000)])[0][0] == 0
    # a program that binds the entry point otherwise than by its def line is a program, not
    # a body to put under the signature
    solve = "def solve(numbers, threshold):\n" + body
    aliased = [solve + "has_close_elements = solve\n",
               "from math import inf\n" + solve.replace("solve", "has_close_elements") + "\n",
               "class has_close_elements:\n    def __new__(cls, numbers, threshold):\n"
               + textwrap.indent(body, "    "),
               "import sys\nif sys.version_info >= (3,):\n"
               + textwrap.indent(solve.replace("solve", "has_close_elements"), "    "),
               "try:\n    from nowhere import has_close_elements\nexcept ImportError:\n"
               + textwrap.indent(solve.replace("solve", "has_close_elements"), "    ")]
    scored = score_code_rows([HUMANEVAL_ROW] * 5, [answer(a) for a in aliased])
    assert [s for s, _ in scored] == [1.0] * 5, scored
    # a body that only reads the name (table[has_close_elements] = 1) is still a body
    read = "table = {}\ntable[has_close_elements] = 1\n" + textwrap.dedent(body)
    assert score_code_rows([HUMANEVAL_ROW], [answer(read)])[0][0] == 1.0


# ----- correct and wrong programs -------------------------------------------------------------


def test_correct_programs_score_one(isolation) -> None:
    good = answer("def add(a, b):\n    return a + b")
    assert score_code_row({**ADD_ROW, "completion": good}, isolation=isolation)[0] == 1.0
    score, parts = score_code_row(MBPP_ROW, answer(MBPP_SOLUTION), isolation=isolation)
    assert score == 1.0 and parts["passed"] == parts["total"] == 3
    score, parts = score_code_row(HUMANEVAL_ROW, answer(HUMANEVAL_SOLUTION), isolation=isolation)
    assert score == 1.0 and parts == {"accuracy": 1.0, "passed": 1, "total": 1,
                                      "has_code": 1.0, "complete": 1.0, "status": "ok"}


def test_setup_runs_after_the_code_and_before_the_asserts() -> None:
    row = {"tests": ["assert helper() == 42", "assert TABLE['order'] == ['code', 'setup']"],
           "setup": "TABLE['order'].append('setup')\ndef helper():\n    return 42"}
    code = "TABLE = {'order': ['code']}"
    assert score_code_row(row, answer(code), limits=LIMITS)[0] == 1.0
    mbpp = {"test_list": ["assert f() == 2"], "test_setup_code": "BASE = 1"}
    assert score_code_row(mbpp, answer("def f():\n    return BASE + 1"), limits=LIMITS)[0] == 1.0


def test_wrong_and_partial_programs() -> None:
    half = answer("def add(a, b):\n    return a + b if a < 2 else a - b")  # 2 of 4
    score, parts = score_code_row(ADD_ROW, half, limits=LIMITS)
    assert score == 0.0 and parts["passed"] == 2 and parts["total"] == 4
    score, parts = score_code_row(ADD_ROW, half, pass_fraction=True, limits=LIMITS)
    assert score == 0.5 and parts["accuracy"] == 0.5 and parts["complete"] == 1.0
    score, parts = score_code_row(ADD_ROW, answer("def add(a, b) return"), limits=LIMITS)
    assert score == 0.0 and parts["passed"] == 0 and parts["complete"] == 1.0


def test_no_code_block_scores_zero() -> None:
    score, parts = score_code_row(ADD_ROW, "<think>hmm</think>def add(a, b): return a + b")
    assert score == 0.0 and parts["has_code"] == 0.0 and parts["status"] == "no_code"
    assert parts["total"] == 4
    with pytest.raises(R1kitError, match="no completion"):
        score_code_row(ADD_ROW)


def test_parts_are_numbers_except_status() -> None:
    _, parts = score_code_row({**ADD_ROW, "completion": answer("def add(a, b): return a+b")},
                              limits=LIMITS)
    assert {k for k, v in parts.items() if not isinstance(v, (int, float))} == {"status"}


def test_batch_scoring_keeps_order_and_uses_the_pool() -> None:
    good, bad = answer("def add(a, b):\n    return a + b"), answer("def add(a, b):\n    return 0")
    rows = [{**ADD_ROW, "completion": c} for c in (good, bad, "no code", good)]
    rows.append({**MBPP_ROW, "completion": answer(MBPP_SOLUTION)})
    with SandboxPool(2, limits=LIMITS) as pool:
        scored = score_code_rows(rows, pool=pool)
    assert [s for s, _ in scored] == [1.0, 0.0, 0.0, 1.0, 1.0]
    fractions = score_code_rows(rows[:2], [good, bad], pass_fraction=True, limits=LIMITS)
    assert [s for s, _ in fractions] == [1.0, 0.25]  # add(a, b) = 0 passes add(-1, 1) == 0
    with pytest.raises(ValueError):
        score_code_rows(rows, ["x"])


# ----- hostile programs -----------------------------------------------------------------------

FORK_BOMB = ("import os\nwhile True:\n    try:\n        os.fork()\n"
             "    except OSError:\n        pass")

HOSTILE = {
    "infinite loop": "while True:\n    pass",
    "sleep": "import time\ntime.sleep(60)",
    "memory bomb": "blocks = []\nwhile True:\n    blocks.append(bytearray(32 << 20))",
    "huge output": "import sys\nwhile True:\n    sys.stdout.write('all tests passed\\n' * 4096)",
    "huge file": "with open('big', 'wb') as f:\n    for _ in range(1024):\n"
                 "        f.write(b'x' * (1 << 20))",
    "read parent env": "import os\nassert 'R1KIT_TEST_SECRET' in os.environ\n"
                       "def add(a, b):\n    return a + b",
    # Whether the kill fails (bwrap's init ignores it) or hits the launcher, the scorer
    # must survive it and the wrong answer must not pass.
    "kill parent": "import os, signal\ntry:\n    os.kill(os.getppid(), signal.SIGKILL)\n"
                   "except OSError:\n    pass\ndef add(a, b):\n    return a - b",
    "sys.exit(0)": "import sys\nsys.exit(0)\ndef add(a, b):\n    return a + b",
    "os._exit(0)": "import os\nos._exit(0)",
    "fake success": "print('All 4 tests passed!')\nprint('OK')\nimport os\nos._exit(0)",
    "exit after fake success": "def add(a, b):\n    return 0\nimport atexit, os\n"
                               "atexit.register(lambda: print('PASSED'))",
}


def test_hostile_programs_score_zero_and_the_scorer_keeps_working(isolation, monkeypatch
                                                                  ) -> None:
    monkeypatch.setenv("R1KIT_TEST_SECRET", "s3cr3t")
    hostile = dict(HOSTILE)
    if get_config(isolation).nproc_bounded:
        hostile["fork bomb"] = FORK_BOMB
    names = list(hostile)
    rows = [{**ADD_ROW, "completion": answer(hostile[n])} for n in names]
    start = time.monotonic()
    with SandboxPool(2, limits=LIMITS, isolation=isolation) as pool:
        scored = score_code_rows(rows, pool=pool, limits=LIMITS)
        after = score_code_rows([{**ADD_ROW, "completion": answer("def add(a, b): return a+b")}],
                                pool=pool, limits=LIMITS)
    assert {n: s for n, (s, _) in zip(names, scored)} == {n: 0.0 for n in names}
    statuses = {n: p["status"] for n, (_, p) in zip(names, scored)}
    assert statuses["infinite loop"] == "timeout" and statuses["sleep"] == "timeout"
    # MemoryError is an exception like any other: the harness catches it and runs the tests.
    assert statuses["memory bomb"] in ("memory", "error", "ok")
    assert statuses["huge output"] == "output_limit"
    assert statuses["fake success"] == "no_report"
    assert after[0][0] == 1.0
    assert time.monotonic() - start < 20


def test_network_attempts_do_not_pass(isolation) -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    # Passes only if it could reach the listener: under bubblewrap it must not.
    code = (f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=1)\n"
            "def add(a, b):\n    return a + b")
    try:
        score, _ = score_code_row(ADD_ROW, answer(code), limits=LIMITS, isolation=isolation)
    finally:
        server.close()
    if isolation == "limits":
        pytest.skip("limits-only does not isolate the network (documented); scored "
                    f"{score}")
    assert score == 0.0


def test_background_process_from_a_candidate_is_gone(isolation) -> None:
    marker = f"63.{os.getpid()}{secrets.randbelow(10**6)}"
    code = (f"import os\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
            f"        os.execv('/bin/sleep', ['sleep', '{marker}'])\n    os._exit(0)\n"
            "def add(a, b):\n    return a + b")
    score, _ = score_code_row(ADD_ROW, answer(code), limits=LIMITS, isolation=isolation)
    assert score == 1.0  # a correct solution with a daemon still passes its tests ...
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        alive = [p for p in os.listdir("/proc") if p.isdigit() and _cmdline_has(p, marker)]
        if not alive:
            break
        time.sleep(0.05)
    assert not alive  # ... but the daemon does not outlive the run


def _cmdline_has(pid: str, marker: str) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            cmd = fh.read()
        with open(f"/proc/{pid}/stat", "rb") as fh:
            state = fh.read().rsplit(b")", 1)[1].split()[0]
    except OSError:
        return False
    return marker.encode() in cmd and state != b"Z"


# ----- attacks on the harness -----------------------------------------------------------------

# Each defines a wrong `add` and tries to make the harness report a pass anyway.
FORGERIES = {
    "write a fake report to fd 4": """
import os
def add(a, b):
    return 0
for fd in range(3, 20):
    try:
        os.write(fd, b"\\n" + b"0" * 32 + b" 4 4\\n")
    except OSError:
        pass
""",
    "read the token from fd 3, the script, stdin and argv": """
import os, re, sys
def add(a, b):
    return 0
seen = b""
for fd in (0, 3):
    try:
        seen += os.read(fd, 1 << 16)
    except OSError:
        pass
for name in os.listdir("."):
    try:
        seen += open(name, "rb").read()
    except OSError:
        pass
seen += " ".join(sys.argv).encode()
for token in set(re.findall(rb"\\b[0-9a-f]{32}\\b", seen)):
    os.write(4, b"\\n" + token + b" 4 4\\n")
os._exit(0)
""",
    "raise the harness's audit events": """
import sys
def add(a, b):
    return 0
for _ in range(4):
    sys.audit("r1kit.pass")
sys.audit("r1kit.done")
""",
    "call the harness's own sys.audit and driver from its frame": """
import sys
def add(a, b):
    return 0
driver = sys._getframe(1)
try:
    for _ in range(4):
        driver.f_locals["_audit"]("r1kit.pass")
except Exception:
    pass
try:
    driver.f_globals["__r1kit_driver"]()
except BaseException:
    pass
""",
    "search the heap": """
import gc, sys
def add(a, b):
    return 0
found = []
for probe in (gc.get_objects, lambda: gc.get_referents(*sys.modules.values())):
    try:
        found += [o for o in probe() if type(o).__name__ == "generator"]
    except RuntimeError:
        pass
for gen in found:
    try:
        gen.send((4, 4))
    except BaseException:
        pass
""",
    "raw memory via ctypes and /proc/self/mem": """
def add(a, b):
    return 0
try:
    import ctypes
    ctypes.string_at(id(add), 64)
    import os
    os._exit(0)
except ImportError:
    pass
try:
    open("/proc/self/mem", "rb")
    import os
    os._exit(0)
except OSError:
    pass
""",
    "trace the harness and jump past the asserts": """
import sys
def add(a, b):
    return 0
def tracer(frame, event, arg):
    return tracer
try:
    sys.settrace(tracer)
except RuntimeError:
    pass
""",
    "signal handler reading harness frames": """
import os, re, signal
def add(a, b):
    return 0
tokens = set()
def grab(signum, frame):
    f = frame
    while f is not None:
        try:
            for value in list(f.f_locals.values()):
                if isinstance(value, (bytes, str)) and len(value) == 32:
                    tokens.add(value if isinstance(value, bytes) else value.encode())
                if type(value).__name__ == "generator":
                    for msg in ((4, 4), "pass", "done"):
                        try:
                            value.send(msg)
                        except BaseException:
                            pass
        except Exception:
            pass
        f = f.f_back
    for token in tokens:
        os.write(4, b"\\n" + token + b" 4 4\\n")
signal.signal(signal.SIGALRM, grab)
signal.setitimer(signal.ITIMER_REAL, 0.0002, 0.0002)
""",
    "replace builtins the tests use": """
import builtins
def add(a, b):
    return 0
class Yes:
    def __eq__(self, other):
        return True
builtins.int = lambda *a: Yes()
builtins.AssertionError = type("AssertionError", (Exception,), {})
""",
    "rebind the harness globals": """
import sys
def add(a, b):
    return 0
g = sys._getframe(1).f_globals
g["__r1kit_note"] = lambda *a: None
import builtins
builtins.exec = lambda *a, **k: None
builtins.compile = lambda *a, **k: None
builtins.BaseException = type("X", (Exception,), {})
""",
}


@pytest.mark.parametrize("name", list(FORGERIES))
def test_forgery_attempts_score_zero(name) -> None:
    outcome = run_tests(FORGERIES[name], spec_of(ADD_ROW), limits=LIMITS)
    assert not outcome.all_passed
    # add(a, b) = 0 honestly passes one of the four tests (add(-1, 1) == 0), no more.
    assert outcome.passed <= 1, outcome.result


def test_harness_blocks_the_introspection_a_forger_needs() -> None:
    # A correct candidate that probes each door the audit hook keeps shut, and says which
    # opened. (The forgery tests above show that nothing passes; this shows why.)
    code = """
import gc, sys
opened = []
def probe(name, action):
    try:
        action()
        opened.append(name)
    except (RuntimeError, ImportError, OSError):
        pass
probe("ctypes", lambda: __import__("ctypes"))
probe("gc.get_objects", gc.get_objects)
probe("gc.get_referrers", lambda: gc.get_referrers(sys))
probe("sys.settrace", lambda: sys.settrace(None))
probe("sys.setprofile", lambda: sys.setprofile(None))
probe("sys._current_frames", sys._current_frames)
probe("/proc/self/mem", lambda: open("/proc/self/mem", "rb"))
seen = []
sys.addaudithook(lambda event, args: seen.append(event))
compile("1", "<x>", "exec")
if seen:
    opened.append("sys.addaudithook")
print("opened:", opened)
def add(a, b):
    return a + b
"""
    outcome = run_tests(code, spec_of(ADD_ROW), limits=LIMITS)
    assert outcome.all_passed  # blocking these does not break an honest candidate
    assert "opened: []" in outcome.result.stdout, outcome.result.stdout


def test_a_correct_program_that_prints_a_lot_passes() -> None:
    """Under the harness what a program prints is never judged: debugging output past the
    output cap is dropped, not a failure (as HumanEval's harness swallows it); a flood far
    past it is still stopped."""
    chatty = ("import sys\ndef add(a, b):\n    for i in range(5000):\n"
              "        print('step', i, a, b)\n        print('err', i, file=sys.stderr)\n"
              "    return a + b\n")
    scored = score_code_row(ADD_ROW, answer(chatty), limits=LIMITS)
    assert scored[0] == 1.0 and scored[1]["status"] == "ok", scored
    flood = "def add(a, b):\n    return a + b\nwhile True:\n    print('x' * 65536)\n"
    assert score_code_row(ADD_ROW, answer(flood), limits=LIMITS)[1]["status"] == "output_limit"
    # just past the allowance and then done: a failure however the race with the scorer's
    # reads ends (killed, or found past it once the program has exited)
    over = ("import sys\nsys.stdout.write('x' * ({} + 100))\ndef add(a, b):\n"
            "    return a + b\n").format(16 * LIMITS.max_output_bytes)
    scored = score_code_rows([ADD_ROW] * 8, [answer(over)] * 8, limits=LIMITS)
    assert [(s, p["status"]) for s, p in scored] == [(0.0, "output_limit")] * 8
    # a loop printing a line at a time is stopped too (past the cap its stream is read a
    # pipe's worth at a time)
    runaway = "import sys\ndef add(a, b):\n    while True:\n        print(a, file=sys.stderr)\n"
    assert score_code_row(ADD_ROW, answer(runaway), limits=LIMITS)[1]["status"] \
        == "output_limit"
    # an input/output case: stderr is not judged, so it is drained; stdout is the answer
    case = {"test_cases": [{"input": "1 2\n", "output": "3\n"}]}
    noisy = "import sys\nfor i in range(30000):\n    print('dbg', i, file={})\n" \
            "a, b = map(int, input().split())\nprint(a + b)\n"
    assert [s for s, _ in score_code_rows([case, case], [
        answer(noisy.format("sys.stderr")), answer(noisy.format("sys.stdout"))],
        limits=LIMITS)] == [1.0, 0.0]


def test_tests_using_int_still_pass_for_a_correct_candidate() -> None:
    # The builtins snapshot restores what the candidate replaced, for honest code too.
    code = "import builtins\nbuiltins.print = None\ndef add(a, b):\n    return int(a) + b"
    assert score_code_row(ADD_ROW, answer(code), limits=LIMITS)[0] == 1.0


def test_report_must_carry_this_runs_token() -> None:
    spec = spec_of(ADD_ROW)
    job = build_script("def add(a, b):\n    return a + b", spec)
    assert job.token not in job.script
    result = execute(get_config(None), job.script, limits=LIMITS, side_input=job.side_input)
    assert judge(job, result).all_passed
    # The same output judged against another run's token is not a pass.
    other = build_script("def add(a, b):\n    return a + b", spec)
    assert not judge(other, result).complete
    # Without the side channel the harness cannot even start.
    bare = execute(get_config(None), job.script, limits=LIMITS)
    assert not judge(job, bare).complete

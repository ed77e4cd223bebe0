"""Input/output code cases (r1kit/rewards/code_io.py): the schemas of APPS, open-r1,
Codeforces and CodeContests, the output comparison, scores, and programs that try to learn
the expected output instead of computing it."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence

import pytest

from r1kit.errors import R1kitError
from r1kit.rewards import code as code_reward
from r1kit.rewards import code_io
from r1kit.rewards.code import score_code_rows
from r1kit.rewards.code_io import IOCases, outputs_match, returns_match
from r1kit.sandbox import Limits, SandboxPool
from r1kit.tasks.code import CODE_INSTRUCTION, IO_INSTRUCTION, CodeTask, call_instruction

spec_of = code_reward.tests_from_row  # not under its own name: pytest collects test*

LIMITS = Limits(wall_seconds=2.0, cpu_seconds=1.0, memory_bytes=256 << 20,
                max_output_bytes=64 << 10)
SUM = "a, b = map(int, input().split())\nprint(a + b)\n"
DIFF = "a, b = map(int, input().split())\nprint(a - b)\n"
CASES = (("1 2\n", "3\n"), ("3 4\n", "7\n"), ("-5 5\n", "0\n"))


def answer(code: str) -> str:
    return f"<think>sum them</think>\n```python\n{code}```"


def test_each_dataset_schema_gives_the_same_cases() -> None:
    """APPS/TACO (JSON text, or lists of lines), open-r1's verification_info, Codeforces'
    official_tests, test_cases in both shapes, and CodeContests' three groups together."""
    ins, outs = [c[0] for c in CASES], [c[1] for c in CASES]
    pairs = [{"input": i, "output": o} for i, o in CASES]
    rows = [{"input_output": json.dumps({"inputs": ins, "outputs": outs})},
            {"input_output": {"inputs": ins, "outputs": outs}},
            {"verification_info": json.dumps({"language": "python", "test_cases": [
                {**p, "type": "stdin_stdout"} for p in pairs]})},
            {"official_tests": pairs, "generated_checker": None, "input_mode": "stdio"},
            {"test_cases": pairs},
            {"test_cases": {"input": ins, "output": outs}},
            {"public_tests": {"input": ins[:1], "output": outs[:1]},
             "private_tests": {"input": ins[1:], "output": outs[1:]},
             "generated_tests": {"input": [], "output": []}}]
    for row in rows:
        assert spec_of(row).cases == CASES, row
    lines = spec_of({"input_output": {"inputs": [["1 2", "3"]], "outputs": [["3", "x"]]}})
    assert lines.cases == (("1 2\n3\n", "3\nx\n"),)
    # open-r1's Codeforces: generated tests carried in the row are judged too (their number
    # alone is not), and outputs compare exactly there
    cf = spec_of({"official_tests": pairs[:1], "generated_tests": pairs[1:]})
    assert (cf.cases, cf.tolerance) == (CASES, 0.0)
    assert spec_of({"official_tests": pairs, "generated_tests": 17}).cases == CASES
    # assert-style tests win where a row has both
    assert not isinstance(spec_of({"tests": ["assert f(1) == 2"], "test_cases": pairs}), IOCases)


@pytest.mark.parametrize("row, message", [
    ({"input_output": {"inputs": [[1, 2]], "outputs": [3], "fn_name": "a b"}}, "identifier"),
    ({"input_output": {"inputs": [1], "outputs": [3], "fn_name": "add"}}, "list of the call"),
    ({"input_output": {"inputs": [[1]], "outputs": [[None]], "fn_name": "f"}}, "expects None"),
    ({"test_cases": [{"input": "1", "output": "1"},
                     {"input": [1], "output": 1, "fn_name": "f"}]}, "mixes cases"),
    ({"public_test_cases": json.dumps([{"input": "1", "output": "1",
                                        "testtype": "functional"}])}, "func_name"),
    ({"public_test_cases": "[]", "private_test_cases": "not base64 nor json"}, "packed JSON"),
    ({"input_output": {"inputs": [[1]], "outputs": [[1]], "fn_name": "class"}}, "identifier"),
    ({"input_output": {"inputs": [[1]], "outputs": [[float("nan")]], "fn_name": "f"}}, "NaN"),
    ({"input_output": {"inputs": ["abc"], "outputs": [[1]], "fn_name": "f"}}, "not JSON"),
    ({"public_test_cases": [{"input": "1", "output": "1", "testtype": "weird"}]}, "'weird'"),
    ({"public_test_cases": "[" * 5000 + "]" * 5000}, "nested too deeply"),
    ({"input_output": '{"inputs": ' + "[" * 5000 + "]" * 5000 + "}"}, "nested too deeply"),
    ({"public_test_cases": [{"input": "[" * 5000 + "]" * 5000, "output": "1",
                             "testtype": "functional"}], "metadata": {"func_name": "f"}},
     "nested too deeply"),
    ({"verification_info": {"language": "cpp", "test_cases": [{"input": "", "output": ""}]}},
     "language 'cpp'"),
    ({"verification_info": {"test_cases": [{"type": "function_call", "input": "[1]",
                                            "output": "1"}]}}, "fn_name"),
    ({"test_cases": [{"type": "checker", "input": "1", "output": "1"}]}, "type 'checker'"),
    ({"official_tests": [{"input": "1", "output": "1"}], "generated_checker": "def check():"},
     "checker"),
    ({"test_cases": [{"input": "1", "output": "1"}], "generated_checker": "def check():"},
     "checker"),
    ({"official_tests": [{"input": "1", "output": "1"}], "interaction_format": "Read ..."},
     "interactor"),
    ({"public_tests": {"input": ["1"], "output": ["1"]}, "input_file": "in.txt"}, "file input"),
    ({"test_cases": [{"input": "1", "output": " \n"}, {"input": "2", "output": ""}]},
     "every case's output is empty"),
    ({"test_cases": [{"input": "\ud800", "output": "1"}]}, "not valid Unicode"),
    ({"test_cases": [{"input": "1", "output": "\ud800"}]}, "not valid Unicode"),
    ({"official_tests": [{"input": "1", "output": "1"}], "input_mode": "file"}, "input_mode"),
    ({"input_output": {"inputs": ["1", "2"], "outputs": ["1"]}}, "2 inputs but 1 outputs"),
    ({"test_cases": []}, "field 'test_cases' is empty: the row has no tests"),
    ({"input_output": "{not json"}, "not JSON"),
    ({"test_cases": [{"input": "1"}]}, "'input' and 'output'"),
    ({"test_cases": [{"input": 1, "output": "1"}]}, "must be text"),
])
def test_cases_that_cannot_be_judged_as_text_are_refused(row, message) -> None:
    with pytest.raises(R1kitError, match=message):
        spec_of(row)


@pytest.mark.parametrize("got, expected, same", [
    ("3\n", "3", True),
    ("1 2\n3\n", "1\n2   3 \n", True),  # line breaks and spaces do not matter
    ("0.3333334", "0.333333", True),  # a decimal within 1e-6
    ("1000000.5", "1000000.0", True),  # relative above 1
    ("0.33", "0.333333", False),
    ("3", "3.0", True), ("3.0", "3", False),  # integers compare exactly
    ("1e-9", "0.0", True), ("nan", "0.5", False), ("inf", "1e308", False),
    ("YES", "Yes", False), ("1 2", "1 2 3", False), ("", "0", False), ("", "\n", True),
    # as the judges' checkers: ASCII digits and ASCII whitespace only; an exponent without a
    # point is not read as a decimal
    ("\u0660.\u0665", "0.5", False), ("\uff10.\uff15", "0.5", False),
    ("1\u00a02", "1 2", False), ("1\u20282", "1 2", False), ("1000", "1e3", False),
])
def test_outputs_compare_by_tokens_with_a_tolerance_for_decimals(got, expected, same) -> None:
    assert outputs_match(got, expected) is same
    assert outputs_match("0.142857", "0.14285714285714285714")  # 1e-6 ...
    assert not outputs_match("0.142857", "0.14285714285714285714", tolerance=0.0)  # exact


@pytest.mark.parametrize("got, expected, same", [
    ("3.0", "3", True), ("0.50\n", "0.5", True), ("1e3", "1000", True),  # exact decimals
    ("0.3333334", "0.333333", False),  # no tolerance
    ("1 2", "1\n2", False), ("1\n\n2", "1\n2", False),  # the lines count
    ("  a  \r\nb\n\n", "a\nb", True), ("YES", "Yes", False), ("", "\n", True),
])
def test_livecodebench_outputs_compare_by_lines_as_its_judge(got, expected, same) -> None:
    """LiveCodeBench's rows are judged as its own grader judges stdout, so that its figures
    are its figures: stripped lines, each the same text or the same Decimal numbers."""
    assert code_io.lines_match(got, expected) is same
    if expected.strip():  # (a row whose outputs are all empty is refused)
        row = {"public_test_cases": [{"input": "3\n", "output": expected,
                                      "testtype": "stdin"}]}
        assert spec_of(row).by_lines and not spec_of({"test_cases": [
            {"input": "3\n", "output": expected}]}).by_lines
        scored = score_code_rows([row], [answer(f"print({got!r}, end='')\n")], limits=LIMITS)
        assert scored[0][0] == (1.0 if same else 0.0)


def test_programs_are_scored_on_each_case_and_cannot_see_the_expected_output() -> None:
    rows = [{"test_cases": [{"input": i, "output": o} for i, o in CASES]}]
    right, wrong = answer(SUM), answer(DIFF)
    # right on the first two cases only (-5 5 gives 0 only for a + b)
    half = answer("a, b = map(int, input().split())\nprint(abs(a) + b)\n")
    with SandboxPool(2) as pool:
        scored = score_code_rows(rows * 3, [right, wrong, half], limits=LIMITS, pool=pool)
        assert [(s, p["passed"], p["total"], p["status"]) for s, p in scored] == \
            [(1.0, 3, 3, "ok"), (0.0, 0, 3, "ok"), (0.0, 2, 3, "ok")]
        scored = score_code_rows(rows, [half], limits=LIMITS, pool=pool, pass_fraction=True)
        assert scored[0][0] == pytest.approx(2 / 3) and scored[0][1]["complete"] == 1.0
        # attempts to learn the answer: the caller's frame, a file the parent wrote, the
        # environment; an early clean exit; the right output with a failing exit status
        forgers = [
            "import sys\nf = sys._getframe()\nwhile f.f_back: f = f.f_back\n"
            "print(*[v for v in f.f_locals.values() if isinstance(v, str)])\n",
            "import os\nfor n in os.listdir('.'):\n    print(open(n).read())\n",
            "import os\nprint(*os.environ.values())\n",
            "raise SystemExit(0)\n",
            SUM + "raise SystemExit(3)\n",
        ]
        scored = score_code_rows(rows * len(forgers), [answer(f) for f in forgers],
                                 limits=LIMITS, pool=pool, pass_fraction=True)
        assert [s for s, _ in scored] == [0.0] * len(forgers), scored
        assert scored[-1][1]["status"] == "error"
        # names LiveCodeBench's judge gives stdin programs (deque, gcd, stdin: its star
        # imports), read without an import; its __main__ block runs
        judged = ["q = deque(map(int, stdin.readline().split()))\nprint(sum(q) + gcd(0, 0))\n",
                  "def main():\n    a, b = map(int, input().split())\n    print(a + b)\n"
                  "if __name__ == '__main__':\n    main()\n",
                  "print(deque)\n",  # (runs, and prints the wrong output)
                  # its own class pickled: pickle finds it in sys.modules["__main__"]
                  "import pickle\nclass P:\n    def __init__(s, v):\n        s.v = v\n"
                  "q = deque(map(int, input().split()))\n"
                  "print(pickle.loads(pickle.dumps(P(sum(q)))).v)\n"]
        scored = score_code_rows(rows * 4, [answer(p) for p in judged], limits=LIMITS, pool=pool)
        assert [s for s, _ in scored] == [1.0, 1.0, 0.0, 1.0], scored
        assert code_io.stdin_source(SUM) == SUM  # (imports nothing: run as it is)
        code_io._judge_names.cache_clear()
        before = sys.getrecursionlimit()
        sys.setrecursionlimit(1234)
        try:
            code_io.stdin_source(judged[0])
            assert sys.getrecursionlimit() == 1234  # (the scorer's own is left as it is)
        finally:
            sys.setrecursionlimit(before)
        assert code_io.stdin_source(judged[0]) != judged[0]
        # no code: no run
        assert score_code_rows(rows, ["no code here"], pool=pool)[0][1]["status"] == "no_code"
        # rows from a sequence that builds each row anew (as a datasets.Dataset does)

        class Rows(Sequence):
            def __len__(self):
                return 4

            def __getitem__(self, i):
                if i >= 4:
                    raise IndexError(i)
                return {"tests": [f"assert f() == {i}"]}

        scored = score_code_rows(Rows(), [answer(f"def f():\n    return {i}\n")
                                          for i in (0, 1, 2, 0)], limits=LIMITS, pool=pool)
        assert [s for s, _ in scored] == [1.0, 1.0, 1.0, 0.0]


def test_an_outcome_does_not_depend_on_how_many_cases_ran_at_once() -> None:
    """The cases after a decisive one (a timeout; without pass_fraction, any failure) count
    as failed whether or not the pool had started them."""
    cases = [{"input": f"{i}\n", "output": f"{i}\n"} for i in range(4)]
    slow = answer("import time\nn = input()\nif n == '0':\n    time.sleep(5)\nprint(n)\n")
    wrong_first = answer("n = input()\nprint(n if n != '0' else 'x')\n")
    limits = Limits(wall_seconds=1.0, cpu_seconds=1.0)
    seen = set()
    for workers in (1, 2, 4):
        with SandboxPool(workers) as pool:
            for code, fraction in ((slow, True), (wrong_first, False), (wrong_first, True)):
                (score, parts), = score_code_rows([{"test_cases": cases}], [code], pool=pool,
                                                  limits=limits, pass_fraction=fraction)
                seen.add((code == slow, fraction, score, parts["passed"],
                          parts["status"], parts["complete"]))
    # one outcome per program and setting, whatever the number of workers
    assert sorted(seen) == sorted([(True, True, 0.0, 0, "timeout", 0.0),
                                   (False, False, 0.0, 0, "ok", 0.0),
                                   (False, True, 0.75, 3, "ok", 1.0)])


def test_a_hang_stops_the_cases_after_it_and_large_outputs_are_not_cut() -> None:
    cases = [{"input": "1\n", "output": "1\n"}] * 4
    hang = answer("import sys\nif sys.stdin.read().strip() == '1':\n    while True: pass\n")
    with SandboxPool(1) as pool:  # one at a time: the cases after the hang never start
        (score, parts), = score_code_rows([{"test_cases": cases}], [hang], pool=pool,
                                          limits=Limits(wall_seconds=1.0, cpu_seconds=1.0),
                                          pass_fraction=True)
    assert (score, parts["status"], parts["complete"]) == (0.0, "timeout", 0.0)
    big = " ".join(["7"] * 200_000)  # 400 KB, above the 64 KB cap of LIMITS
    row = {"test_cases": [{"input": "200000\n", "output": big}]}
    (score, parts), = score_code_rows([row], [answer("print(*[7] * int(input()))\n")],
                                      limits=LIMITS, workers=1)
    assert (score, parts["status"]) == (1.0, "ok")


def test_a_code_task_asks_io_problems_for_a_program_and_judges_them(tmp_path) -> None:
    rows = [{"question": "Print the sum of two integers.",
             "input_output": {"inputs": [c[0] for c in CASES], "outputs": [c[1] for c in CASES]}},
            {"question": "Define add.", "tests": ["assert add(1, 2) == 3"]}]
    data = tmp_path / "apps.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    task = CodeTask(None, data)
    io, plain = task.test_examples()
    assert io.question.endswith(IO_INSTRUCTION.strip()) and IO_INSTRUCTION != CODE_INSTRUCTION
    assert plain.question.endswith(CODE_INSTRUCTION.strip())
    add = "```python\ndef add(a, b):\n    return a + b\n```"
    assert task.verify_batch([f"```python\n{SUM}```", add, f"```python\n{DIFF}```", add],
                             [io, plain, io, io]) == [1.0, 1.0, 0.0, 0.0]
    own = CodeTask(None, data, instruction="Answer in Python.")
    assert own.test_examples()[0].question.endswith("Answer in Python.")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": "q", "test_cases": [{"input": "1"}]}) + "\n")
    with pytest.raises(R1kitError, match=r"bad.jsonl:1.*'input' and 'output'"):
        CodeTask(bad)


def _rows_file(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _lcb_packed(cases) -> str:
    """Private tests as LiveCodeBench ships them: the JSON text pickled, compressed, base64."""
    import base64
    import pickle
    import zlib

    return base64.b64encode(zlib.compress(pickle.dumps(json.dumps(cases)))).decode()


def test_function_call_cases_of_each_layout() -> None:
    """APPS/TACO's fn_name, open-r1's function_call cases and LiveCodeBench's functional ones
    become calls: the arguments' JSON in, the expected value's JSON out."""
    apps = spec_of({"input_output": json.dumps({"fn_name": "add", "inputs": [[1, 2], [3, 4]],
                                                "outputs": [[3], [7]]})})
    assert (apps.call, apps.unwrap, apps.cases) == ("add", True,
                                                    (("[1, 2]", "[3]"), ("[3, 4]", "[7]")))
    r1 = spec_of({"verification_info": {"language": "python", "test_cases": [
        {"fn_name": "add", "input": [1, 2], "output": [3], "type": "function_call"},
        {"fn_name": "add", "input": "[3, 4]", "output": [7], "type": "function_call"}]}})
    assert (r1.call, r1.cases) == ("add", apps.cases)
    lcb_cases = [{"input": "[1, 2]\n5", "output": "8", "testtype": "functional"}]
    lcb = spec_of({"public_test_cases": json.dumps(lcb_cases),
                   "private_test_cases": _lcb_packed([{**lcb_cases[0], "input": "[]\n0",
                                                       "output": "0"}]),
                   "metadata": json.dumps({"func_name": "total"})})
    assert (lcb.call, lcb.unwrap, lcb.cases) == ("total", False,
                                                 (("[[1, 2], 5]", "8"), ("[[], 0]", "0")))
    stdin = spec_of({"public_test_cases": json.dumps([{"input": "1 2\n", "output": "3\n",
                                                       "testtype": "stdin"}]),
                     "private_test_cases": json.dumps([{"input": "3 4\n", "output": "7\n",
                                                        "testtype": "stdin"}]),
                     "metadata": "{}"})
    assert (stdin.call, stdin.cases) == ("", CASES[:2])
    # DeepCoder's rows: the same cases under `tests` (r1kit's assert statements stay asserts)
    deep = [{"tests": json.dumps(lcb_cases), "metadata": {"func_name": "total"}},
            {"tests": [{"type": "stdin_stdout", "input": "1 2\n", "output": "3\n"}]},
            {"tests": {"inputs": [[1, 2], [3, 4]], "outputs": [[3], [7]], "fn_name": "add"}}]
    assert [(d.call, d.unwrap, d.cases) for d in map(spec_of, deep)] == [
        ("total", False, lcb.cases[:1]), ("", False, CASES[:1]), ("add", True, apps.cases)]
    assert not isinstance(spec_of({"tests": ["assert add(1, 2) == 3"]}), IOCases)
    # a row-level fn_name makes untyped cases calls; private tests alone are read; a stdin
    # row's metadata is not needed
    top = spec_of({"verification_info": {"fn_name": "add", "test_cases": [
        {"input": [1, 2], "output": [3]}]}})
    assert (top.call, top.cases) == ("add", apps.cases[:1])
    alone = spec_of({"public_test_cases": None, "private_test_cases": _lcb_packed(
        [{"input": "1 2\n", "output": "3\n", "testtype": "stdin"}]), "metadata": "{bad"})
    assert (alone.call, alone.cases) == ("", CASES[:1])
    assert not isinstance(spec_of({"tests": ["assert [x for x in range(2)] == [0, 1]"]}),
                          IOCases)
    # DeepCoder's cases each as JSON text, and r1kit's asserts as the JSON text of a list
    texts = spec_of({"tests": [json.dumps(c) for c in lcb_cases],
                     "metadata": {"func_name": "total"}})
    assert (texts.call, texts.cases) == ("total", lcb.cases[:1])
    listed = spec_of({"tests": json.dumps(["assert add(1, 2) == 3"])})
    assert not isinstance(listed, IOCases) and listed.tests == ("assert add(1, 2) == 3",)
    # an empty column of another layout is not that layout (HumanEval's filler assert True
    # among real checks is no reason to refuse)
    assert spec_of({"tests": None, "test_list": None, "test": None,
                    "input_output": {"fn_name": "add", "inputs": [[1, 2]], "outputs": [[3]]}}
                   ).call == "add"
    assert spec_of({"test": "def check(candidate):\n    assert True\n"
                            "    assert candidate(1) == 2\n", "entry_point": "f"}).tests
    # a debugging print beside the asserts is no reason to refuse
    assert spec_of({"tests": ["print(f(1) == 2)\nassert f(1) == 2"]}).tests
    # a comparison expected to raise (pytest.raises) is a check
    assert spec_of({"test": "import pytest\nfrom solution import f\ndef test_f():\n"
                            "    with pytest.raises(TypeError):\n        f('a') < 3\n"}).tests
    # checks of other kinds: numpy's assert_*, a helper of the setup or of the test that
    # asserts, a raise; a call beside a real check (a test that the program runs)
    for row in ({"tests": ["import numpy as np\nnp.testing.assert_allclose(f(1), 2)"]},
                {"tests": ["check(f)"], "setup": "def check(g):\n    assert g(1) == 2\n"},
                {"tests": ["if f(1) != 2:\n    raise AssertionError('f(1)')"]},
                {"tests": ["f(0)", "assert f(1) == 2"]},
                {"test": "from solution import f\ndef same(x):\n    assert f(x) == x\n"
                         "def test_f():\n    same(1)\n"},
                # `assert False` where the program's call should have raised (KodCode's)
                {"test": "from solution import f\ndef test_neg():\n    try:\n        f(-1)\n"
                         "        assert False\n    except ValueError:\n        pass\n"},
                {"tests": ["if f(1) != 2:\n    assert False, 'f(1)'"]},
                # a helper of the tests' own named like a predicate, which asserts
                {"test_list": ["equal(f(1), 2)"],
                 "test_setup_code": "def equal(a, b):\n    assert a == b\n"},
                # an assert in a class body (it runs), one raised again after a print
                {"tests": ["class C:\n    assert f(1) == 2"]},
                {"tests": ["try:\n    assert f(1) == 2\nexcept AssertionError:\n"
                           "    print('f')\n    raise"]},
                # a helper passed by name (map, a thread's target), or called by a lambda;
                # `ok or pytest.fail(...)`
                {"setup": "def check(c):\n    assert f(c[0]) == c[1]\n",
                 "tests": ["list(map(check, [(1, 2)]))"]},
                {"setup": "def check(x, y):\n    assert f(x) == y\n",
                 "tests": ["run = lambda: check(1, 2)\nrun()"]},
                {"tests": ["import pytest\nisinstance(f(1), int) or pytest.fail('f(1)')"]},
                # a long setup of data is read
                {"test_list": ["check(f, 1, 2)"], "test_setup_code": "DATA = [" + "1, " * 80_000
                 + "]\ndef check(g, x, y):\n    assert g(x) == y\n"}):
        assert spec_of(row).tests, row
    # an empty column of a file of several layouts is no layout (parquet gives each row
    # every column)
    assert spec_of({"tests": "", "test_list": [], "test": "", "entry_point": "",
                    "test_cases": [{"input": "1", "output": "1"}]}).cases
    assert spec_of({"test_cases": [], "test_list": ["assert f(1) == 2"]}).tests \
        == ("assert f(1) == 2",)
    # case objects and their JSON texts in one list
    mixed = spec_of({"tests": [{"input": "1", "output": "2"}, json.dumps({"input": "3",
                                                                         "output": "4"})]})
    assert mixed.cases == IOCases(cases=(("1", "2"), ("3", "4"))).cases


@pytest.mark.parametrize("row, message", [
    # tests that every program passes: a comparison without assert, a value, a case object
    # among assert statements
    ({"tests": ["[x for x in range(2)] == [0, 1]"]}, "not asserted"),
    ({"test_list": ["assert f(1) == 2", "f(2) == 3"]}, "not asserted"),
    ({"tests": ["assert f(1) == 2", '{"input": "1", "output": "2"}']}, "asserts nothing"),
    ({"tests": ["'f(1) == 2'"]}, "asserts nothing"),
    ({"tests": ["assert True"]}, "asserts nothing"),
    ({"tests": ["# f(1) == 2"]}, "it is empty"),
    ({"tests": [""]}, "it is empty"),
    ({"tests": ["assert (f(1) == 2, 'f')"]}, "a tuple"),
    ({"tests": ["f(1) == 2 and f(2) == 4"]}, "not asserted"),
    ({"tests": ["[print(1), f(1) == 2]"]}, "not asserted"),
    ({"tests": ["if True:\n    [f(1) == 2]"]}, "not asserted"),
    ({"test": "from solution import f\ndef test_f():\n    f(1) == 2\n"}, "not asserted"),
    ({"test": "def check(candidate):\n    candidate(1) == 2\n", "entry_point": "f"},
     "not asserted"),
    # a check whose result is dropped: a predicate's call, a comprehension, a conditional
    # expression, `:=`, a test function's return value (pytest ignores it)
    ({"tests": ["import math\nmath.isclose(f(1), 2.0)"]}, "not asserted"),
    ({"tests": ["all(f(x) == x for x in range(3))"]}, "not asserted"),
    ({"tests": ["[f(x) == x for x in range(3)]"]}, "not asserted"),
    ({"tests": ["f(1) == 2 if True else None"]}, "not asserted"),
    ({"tests": ["(y := f(1) == 2)"]}, "no test of the row can fail"),
    ({"test": "from solution import f\ndef test_f():\n    return f(1) == 2\n"},
     "returns a comparison"),
    # no test of the row can fail a program that runs: calls alone, a print, a check
    # that reads nothing, a function that asserts and is never called, a test function
    # without an assert
    ({"tests": ["f(1)", "print(f(1) == 2)"]}, "no test of the row can fail"),
    ({"tests": ["def g():\n    assert 1 == 1\ng()"]}, "no test of the row can fail"),
    ({"tests": ["def g():\n    pass\ng()"]}, "no test of the row can fail"),
    ({"tests": ["def g():\n    assert f(1) == 2"]}, "no test of the row can fail"),
    ({"test_list": ["assert True", "f(1)"]}, "asserts nothing"),
    ({"test": "from solution import f\ndef test_f():\n    f(1)\n"},
     "no test of the row can fail"),
    ({"test": "def check(candidate):\n    candidate(1)\n", "entry_point": "f"},
     "no test of the row can fail"),
    # checks that cannot fail: an assert swallowed by its try, in a branch that never runs,
    # under contextlib.suppress; an assert of a list; a raise only raised again
    ({"tests": ["try:\n    assert f(1) == 2\nexcept Exception:\n    pass"]}, "can fail"),
    ({"tests": ["try:\n    assert f(1) == 2\nexcept:\n    print('no')"]}, "can fail"),
    ({"test": "def check(candidate):\n    try:\n        assert candidate(1) == 2\n"
              "    except AssertionError:\n        pass\n", "entry_point": "f"}, "can fail"),
    ({"tests": ["if False:\n    assert f(1) == 2", "while 0:\n    assert f(1) == 2"]},
     "can fail"),
    ({"tests": ["import contextlib\nwith contextlib.suppress(Exception):\n"
                "    assert f(1) == 2"]}, "can fail"),
    ({"tests": ["assert [f(1) == 2, 'f']"]}, "assert of a list"),
    ({"tests": ["try:\n    f(1)\nexcept Exception:\n    raise"]}, "can fail"),
    # a loop over nothing; a helper defined twice whose later (running) definition checks
    # nothing; a helper named assert_* that only compares; a generator test function
    ({"tests": ["for x, y in []:\n    assert f(x) == y"]}, "can fail"),
    ({"setup": "def same(a, b):\n    assert a == b\ndef same(a, b):\n    pass\n",
      "tests": ["same(f(1), 2)"]}, "can fail"),
    ({"setup": "def assert_equal(a, b):\n    return a == b\n",
      "tests": ["assert_equal(f(1), 2)"]}, "can fail"),
    ({"test": "from solution import f\ndef test_f():\n    assert f(1) == 2\n    yield\n"},
     "can fail"),
    # too long or too deep to check
    ({"tests": ["pass\n" * 500_000]}, "too long to check"),
    ({"tests": ["x if y else " * 2000 + "f(1) == 2"]}, "nested too deeply|not asserted"),
    ({"tests": ["not " * 2000 + "f(1) == 2"]}, "nested too deeply|not asserted"),
    ({"tests": [{"input": "1", "output": "2"}, "assert f(1) == 2"]}, "mixes case objects"),
    ({"tests": "{" + '"a":[' * 1000}, "not JSON"),
    ({"tests": "[" * 100_000}, "nested too deeply"),
    ({"tests": 'assert f(1) == 2'}, "list of strings"),
    ({"public_test_cases": [{"input": "1", "output": "2", "testtype": "functional"}]},
     "metadata func_name, and the row has none"),
])
def test_tests_that_check_nothing_are_refused(row, message) -> None:
    with pytest.raises(R1kitError, match=message):
        spec_of(row)


def test_a_program_without_the_function_fails_tests_that_expect_a_raise() -> None:
    """Under pytest.raises(Exception) a program without the function raised NameError, the
    exception expected, and passed."""
    rows = [{"tests": ["import pytest\nwith pytest.raises(Exception):\n    f(-1)"]},
            {"tests": ["import pytest\npytest.raises(ValueError, f, -1)"]},
            {"test": "import pytest\nfrom solution import *\ndef test_f():\n"
                     "    with pytest.raises(Exception):\n        f(-1)\n"},
            {"tests": ["import unittest\nwith unittest.TestCase().assertRaises(Exception):\n"
                       "    f(-1)"]},
            # a star import binds names the syntax does not show: no names are read first
            {"tests": ["from math import *\nimport pytest\nwith pytest.raises(ValueError):\n"
                       "    sqrt(-1)", "assert f(1) == 1"]},
            # the function as an attribute of the module solution
            {"test": "import pytest\nimport solution\ndef test_f():\n"
                     "    with pytest.raises(Exception):\n        solution.f(-1)\n"},
            {"test": "import pytest\nimport solution as s\ndef test_f():\n"
                     "    pytest.raises(Exception, s.f, -1)\n"},
            # in a helper of the setup, or of a pytest-style file
            {"setup": "import pytest\ndef expect_error(x):\n    with pytest.raises(Exception):\n"
                      "        f(x)\n", "tests": ["expect_error(-1)"]},
            {"test": "import pytest\nfrom solution import *\ndef expect_error(x):\n"
                     "    with pytest.raises(Exception):\n        f(x)\n"
                     "def test_f():\n    expect_error(-1)\n"},
            # a try whose except clause would catch the missing function's NameError
            {"tests": ["try:\n    f(-1)\nexcept Exception:\n    pass\n"
                       "else:\n    raise AssertionError('no error')"]},
            # the function imported from solution where its ImportError is caught
            {"test": "import pytest\ndef test_f():\n    with pytest.raises(Exception):\n"
                     "        from solution import f\n        f(-1)\n"},
            {"test": "def test_f():\n    try:\n        from solution import f\n"
                     "    except ImportError:\n        return\n    assert f(1) == 1\n"},
            {"test": "def test_f():\n    try:\n        from solution import f\n"
                     "        f(-1)\n        ok = False\n    except Exception:\n"
                     "        ok = True\n    assert ok\n"}]
    right = answer("def f(x):\n    if x < 0:\n        raise ValueError(x)\n    return x\n")
    missing = answer("def g(x):\n    raise ValueError(x)\n")
    scores = score_code_rows([r for r in rows for _ in (0, 1)], [right, missing] * len(rows),
                             limits=LIMITS)
    assert [s for s, _ in scores] == [1.0, 0.0] * len(rows)
    # pytest-style: a test function reads first only the names its own raising part reads
    # (the pass fraction of a program with f and without g)
    row = {"test": "import pytest\nfrom solution import *\ndef test_f():\n"
                   "    assert f(1) == 1\ndef test_g():\n    with pytest.raises(Exception):\n"
                   "        g(-1)\n"}
    scored = score_code_rows([row], [right], limits=LIMITS, pass_fraction=True)
    assert (scored[0][1]["passed"], scored[0][1]["total"]) == (1, 2)
    # a correct program still passes: an attribute the test sets on solution is not read
    # first; a pytest-style file's __main__ block does not run (pytest imports the file)
    rows = [{"test": "import pytest\nimport solution\ndef test_f():\n    solution.LIMIT = -1\n"
                     "    with pytest.raises(ValueError):\n"
                     "        solution.f(solution.LIMIT)\n"},
            {"test": "import pytest\nfrom solution import f\ndef test_f():\n"
                     "    assert f(1) == 1\n\nif __name__ == '__main__':\n"
                     "    pytest.main([__file__])\n"}]
    assert [s for s, _ in score_code_rows(rows, [right] * 2, limits=LIMITS)] == [1.0, 1.0]
    # the module solution is there however the tests import it
    rows = [{"test": "import os, solution\ndef test_f():\n    assert solution.f(1) == 1\n"},
            {"test": "import importlib\ndef test_f():\n"
                     "    assert importlib.import_module('solution').f(1) == 1\n"}]
    assert [s for s, _ in score_code_rows(rows, [right] * 2, limits=LIMITS)] == [1.0, 1.0]
    # ... nor does one whose tests look a name up that may be missing (Python 2's unicode,
    # another entry point), or read a global its init() makes, under a try
    lazy = answer("def init():\n    global CACHE\n    CACHE = {'k': 1}\n"
                  "def f(x):\n    return x\n")
    rows = [{"tests": ["try:\n    text = unicode\nexcept NameError:\n    text = str\n"
                       "assert isinstance(str(f(1)), text)"]},
            {"tests": ["try:\n    fn = Solution().f\nexcept NameError:\n    fn = f\n"
                       "assert fn(2) == 2"]},
            {"tests": ["init()\ntry:\n    v = CACHE['k']\nexcept Exception:\n    v = None\n"
                       "assert v == f(1)"]}]
    assert [s for s, _ in score_code_rows(rows, [right, right, lazy], limits=LIMITS)] \
        == [1.0, 1.0, 1.0]
    # the __main__ block is cut on the lines as Python counts them (a form feed or a line
    # separator in a string ends none)
    for odd in ("\x0c", "\u2028"):
        row = {"test": f"from solution import f\ndef test_a():\n    s = 'a{odd}b'\n"
                       "    assert f(1) == 1\ndef test_b():\n    assert f(2) == 2\n"
                       "if __name__ == '__main__':\n    test_a()\n"}
        wrong = answer("def f(x):\n    return 1\n")
        assert [s for s, _ in score_code_rows([row, row], [right, wrong], limits=LIMITS)] \
            == [1.0, 0.0], odd


def test_a_none_test_column_is_not_humaneval() -> None:
    """A row with `tests` and HumanEval's `entry_point` and `prompt` but a None `test` is not
    read as HumanEval's: an answer without a fence is not a function body to run."""
    row = {"tests": ["assert f(1) == 1"], "test": None, "entry_point": "f",
           "prompt": "def f(x):\n"}
    assert score_code_rows([row], ["    return x\n"], limits=LIMITS)[0][1]["status"] \
        == "no_code"
    humaneval = dict(row, test="def check(candidate):\n    assert candidate(1) == 1\n")
    assert score_code_rows([humaneval], ["    return x\n"], limits=LIMITS)[0][0] == 1.0


def test_a_packed_pickle_that_names_any_code_is_not_run(tmp_path) -> None:
    import base64
    import os
    import pickle
    import zlib

    flag = tmp_path / "ran"

    class Hostile:
        def __reduce__(self):
            return (os.system, (f"touch {flag}",))

    packed = base64.b64encode(zlib.compress(pickle.dumps(Hostile()))).decode()
    with pytest.raises(R1kitError, match="posix.system|os.system"):
        spec_of({"public_test_cases": "[]", "private_test_cases": packed})
    assert not flag.exists()


@pytest.mark.parametrize("stdout, expected, unwrap, same", [
    ("\x1er1kit-returned\x1e3\n", "3", False, True),
    ("debug 7\n\x1er1kit-returned\x1e[1, 2]\n", "[1, 2]", False, True),
    ("\x1er1kit-returned\x1e3\n", "[3]", True, True),  # APPS wraps the value
    ("\x1er1kit-returned\x1e3\n", "[3]", False, False),  # LiveCodeBench does not
    ("\x1er1kit-returned\x1e3\n", "[3, 4]", True, False),
    ("\x1er1kit-returned\x1e3.0\n", "3", False, True),  # == as Python's
    ("\x1er1kit-returned\x1e0.30000000000000004\n", "0.3", False, False),
    ("3\n", "3", False, False),  # printed, not returned
    ("\x1er1kit-returned\x1e\n", "null", False, False),
])
def test_returned_values_compare_as_the_judges_compare_them(stdout, expected, unwrap,
                                                             same) -> None:
    assert returns_match(stdout, expected, unwrap) is same


def test_calls_are_scored_on_what_the_function_returns() -> None:
    apps = {"input_output": {"fn_name": "add", "inputs": [[1, 2], [3, 4], [-5, 5]],
                             "outputs": [[3], [7], [0]]}}
    lcb = {"public_test_cases": json.dumps([{"input": "1\n2", "output": "3",
                                             "testtype": "functional"}]),
           "metadata": {"func_name": "add"}}
    programs = {
        "function": "def add(a, b):\n    print('debug', a)\n    return a + b\n",
        "leetcode": "class Solution:\n    def add(self, a: int, b: int) -> List[int]:\n"
                    "        return a + b\n",
        "tuple": "def add(a, b):\n    return (a + b,)\n",
        "main block": "def add(a, b):\n    return a + b\n"
                      "if __name__ == '__main__':\n    print(add(int(input()), 1))\n",
        "wrong": "def add(a, b):\n    return abs(a) + b\n",  # wrong on (-5, 5)
        "printer": "def add(a, b):\n    print(a + b)\n",
        "no function": "def plus(a, b):\n    return a + b\n",
        "reads stdin": "import sys\nargs = sys.stdin.read()\ndef add(a, b):\n"
                       "    return args\n",
        "frames": "import sys\ndef add(a, b):\n    f = sys._getframe()\n"
                  "    while f.f_back: f = f.f_back\n"
                  "    return [v for v in f.f_locals.values() if isinstance(v, int)]\n",
        "raises": "def add(a, b):\n    raise ValueError(a)\n",
        "exits": "import os\ndef add(a, b):\n    os._exit(0)\n",
        # a name the judges' imports give (operator's add) is not the program's function,
        # but one the program imports is
        "only imports": "from math import *\n",
        "imports it": "from operator import add\n",
        "adds a builtin": "import builtins\nbuiltins.K = 0\ndef add(a, b):\n    return a + b + K\n",
        # what would crash a JSON reader: nesting deeper than its recursion limit
        "deep": "import json\njson.dumps = lambda *a, **k: '[' * 50000\n"
                "def add(a, b):\n    return a + b\n",
    }
    with SandboxPool(2) as pool:
        scored = score_code_rows([apps] * len(programs), [answer(p) for p in programs.values()],
                                 limits=LIMITS, pool=pool, pass_fraction=True)
        got = {name: (s, p["passed"], p["status"]) for name, (s, p) in zip(programs, scored)}
        assert got == {"function": (1.0, 3, "ok"), "leetcode": (1.0, 3, "ok"),
                       "tuple": (1.0, 3, "ok"), "main block": (1.0, 3, "ok"),
                       "wrong": (pytest.approx(2 / 3), 2, "ok"), "printer": (0.0, 0, "ok"),
                       "no function": (0.0, 0, "error"), "reads stdin": (0.0, 0, "ok"),
                       "frames": (0.0, 0, "ok"), "raises": (0.0, 0, "error"),
                       "exits": (0.0, 0, "ok"), "only imports": (0.0, 0, "error"),
                       "imports it": (1.0, 3, "ok"), "adds a builtin": (1.0, 3, "ok"),
                       "deep": (0.0, 0, "ok")}, got
        # LiveCodeBench compares the value itself: 3, not [3]
        scored = score_code_rows([lcb] * 2, [answer(programs["function"]),
                                             answer(programs["tuple"])], limits=LIMITS, pool=pool)
        assert [s for s, _ in scored] == [1.0, 0.0]
        # as the judges run them: their imports (ceil, deepcopy, List), a first argument
        # that is a dict of number keys (APPS), numbers of other types (Fraction), and
        # printing, which is not looked at (300 KB here, above LIMITS' 64 KB of output)
        rows = [{"input_output": {"fn_name": "f", "inputs": [[7, 2]], "outputs": [[4]]}},
                {"input_output": {"fn_name": "f", "inputs": [[{"1": 5, "2": 7}]],
                                  "outputs": [[12]]}},
                {"input_output": {"fn_name": "f", "inputs": [[7, 2]], "outputs": [[3.5]]}},
                {"input_output": {"fn_name": "f", "inputs": [[7, 2]], "outputs": [[9]]}},
                {"input_output": {"fn_name": "gcd", "inputs": [[12, 18]], "outputs": [[6]]}},
                {"input_output": {"fn_name": "f", "inputs": [[7, 2]], "outputs": [[9]]}},
                {"input_output": {"fn_name": "f", "inputs": [[7, 2]], "outputs": [[[7, 2]]]}},
                {"input_output": {"fn_name": "f", "inputs": [[7, 2]], "outputs": [[9]]}}]
        programs = ["class Solution:\n    def f(self, a, b) -> List[int]:\n"
                    "        return ceil(deepcopy(a) / b)\n",
                    "def f(d):\n    return d[1] + d[2]\n",
                    "from fractions import Fraction\ndef f(a, b):\n    return Fraction(a, b)\n",
                    "def f(a, b):\n    print('x' * 300_000)\n    return a + b\n",
                    # a library's function as the answer; printing on stderr (300 KB);
                    # LiveCodeBench's io, sys and json names
                    "from math import gcd\n",
                    "def f(a, b):\n    stderr.write('x' * 300_000)\n    return a + b\n",
                    "def f(a, b):\n    return loads(StringIO(dumps([a, b])).read())\n",
                    "def f(a, b):\n    return np.sum(np.array([a, b]))\n"]  # APPS' np
        scored = score_code_rows(rows, [answer(p) for p in programs], limits=LIMITS, pool=pool)
        assert [s for s, _ in scored] == [1.0] * 8, scored


def test_a_code_task_asks_call_problems_for_the_function(tmp_path) -> None:
    starter = "class Solution:\n    def add(self, a: int, b: int) -> int:\n        "
    rows = [{"question": "Add two numbers.", "starter_code": starter,
             "input_output": {"fn_name": "add", "inputs": [[1, 2]], "outputs": [[3]]}},
            {"question": "Add.\n" + starter, "starter_code": starter,
             "input_output": {"fn_name": "add", "inputs": [[1, 2]], "outputs": [[3]]}}]
    data = tmp_path / "taco.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    task = CodeTask(None, data)
    shown, plain = task.test_examples()
    assert shown.question.endswith(call_instruction("add", starter).strip())
    assert "Start from this code" in shown.question and "`add`" in shown.question
    # the question shows the starter code already: not again
    assert plain.question.endswith(call_instruction("add").strip())
    assert plain.question.count("class Solution:") == 1
    # shown with other indentation: not shown again either
    other = CodeTask(None, _rows_file(tmp_path / "other.jsonl", [{
        **rows[0], "question": "Add.\n    class Solution:\n        def add(self, a: int, b: int)"
                               " -> int:"}]))
    assert other.test_examples()[0].question.count("class Solution:") == 1
    right = f"```python\n{starter}return a + b\n```"
    assert task.verify_batch([right, right.replace("a + b", "a * b")],
                             [shown, shown]) == [1.0, 0.0]

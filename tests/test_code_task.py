"""task = "code": problems with tests as a GRPO task (r1kit.tasks.code), the accuracy reward
running each response's code against its row's tests in the sandbox."""

from __future__ import annotations

import json
import re
from dataclasses import replace

import pytest
from conftest import REPO, one_grpo_step_on, write_jsonl

from r1kit.config import load_recipe
from r1kit.errors import R1kitError
from r1kit.rewards.code_io import IOCases
from r1kit.rewards.combined import CombinedReward
from r1kit.tasks.code import CodeTask

ROWS = [
    {"question": "Write add(a, b) returning a + b.", "tests": ["assert add(2, 3) == 5"]},
    {"text": "unused", "question": "Write square(x).",
     "test_list": ["assert square(3) == 9", "assert square(-2) == 4"]},
    {"question": "Complete the function.",
     "prompt": "def one():\n    return 1\n\n\ndef neg(x):\n    \"\"\"-x\"\"\"\n",
     "test": "def check(f):\n    assert f(2) == -2\n", "entry_point": "neg"},
    {"question": "Read n and print 2n.", "test_cases": [{"input": "4\n", "output": "8\n"},
                                                        {"input": "-1\n", "output": "-2\n"}]},
]


def _file(tmp_path, rows=ROWS, name="code.jsonl"):
    return write_jsonl(tmp_path / name, rows)


def _answer(code: str) -> str:
    return f"<think> easy </think> <answer>\n```python\n{code}\n```\n</answer>"


def test_code_rows_are_scored_by_their_tests_in_each_schema(tmp_path):
    """r1kit's `tests`, MBPP's `test_list`, HumanEval's `test` + `entry_point` (its prompt put
    before the code), input/output cases: right code 1, wrong code or no code 0, through the
    GRPO reward."""
    task = CodeTask(_file(tmp_path))
    examples = task.train_examples()
    assert all(e.question.endswith("```python code block.") for e in examples)
    right = [_answer("def add(a, b):\n    return a + b"),
             _answer("def square(x):\n    return x * x"),
             _answer("def neg(x):\n    return -x * one()"),  # HumanEval: after its prompt
             _answer("print(2 * int(input()))")]
    wrong = [_answer("def add(a, b):\n    return a - b"),
             _answer("def square(x):\n    return 2 * x"),
             "<think> hmm </think> <answer> no code </answer>",
             _answer("print(8)")]  # right on the first case only
    reward = CombinedReward(task)
    scores = reward.score(right + wrong, examples + examples)
    assert [p["accuracy"] for _, p in scores] == [1.0] * 4 + [0.0] * 4
    assert [s for s, _ in scores[:4]] == [2.0] * 4  # + format


def test_an_mbpp_layout_file_is_asked_as_the_shipped_mbpp(tmp_path):
    """A file of MBPP's layout is asked with its tests (they name the function), as the
    shipped mbpp benchmark asks it, so that its scores compare; a question that already shows
    its tests is left as it is."""
    from r1kit.eval.benchmarks import load_benchmark

    mine = CodeTask(None, REPO / "r1kit" / "data" / "mbpp" / "test.jsonl", question_field="text")
    shipped = load_benchmark("mbpp").test_examples()
    def same(text):  # (a shipped test that ends with a space: the same question)
        return re.sub(r"[ \t]+\n", "\n", text)

    assert [same(e.question) for e in mine.test_examples()[:20]] == \
        [same(e.question) for e in shipped[:20]]
    row = {"text": "Write add.\nassert add(1, 2) == 3", "test_list": ["assert add(1, 2) == 3"]}
    (tmp_path / "m.jsonl").write_text(json.dumps(row) + "\n")
    (ex,) = CodeTask(None, tmp_path / "m.jsonl", question_field="text").test_examples()
    assert "should pass these tests" not in ex.question and ex.question.startswith(row["text"])


def test_code_task_checks_its_file_before_any_stage(tmp_path):
    recipe = str(REPO / "recipes" / "zero-tiny.toml")
    with pytest.raises(R1kitError, match="task = 'code' in a grpo stage needs a train_file"):
        load_recipe(recipe, ["stages.zero.task=\"code\""])
    bad = _file(tmp_path, [{"question": "q", "tests": ["assert f(1) == 2"]}, {"question": "q2"}],
                "bad.jsonl")
    with pytest.raises(R1kitError, match=r"bad.jsonl:2: the row has no tests"):
        CodeTask(bad)
    typo = _file(tmp_path, [{"prompt": "q", "tests": ["assert f(1) == 2"]}], "typo.jsonl")
    with pytest.raises(R1kitError, match="no field 'question'") as info:
        CodeTask(typo)
    assert "question_field" in str(info.value)


def test_a_grpo_stage_trains_and_evaluates_on_code(bpe_checkpoint, tmp_path):
    metrics, evals = one_grpo_step_on(bpe_checkpoint, tmp_path / "run", "code",
                                      _file(tmp_path))
    assert len(metrics) == 1 and "reward/accuracy" in metrics[0]
    assert [e["benchmark"] for e in evals] == ["code/main", "code/main"]
    assert evals[0]["n"] == len(ROWS)


def test_code_answers_are_read_as_code_on_every_scoring_path(tmp_path, monkeypatch):
    """The answer of a code task is its answer part's last python block, not the math rule's
    last \\boxed{}: a box after the code, or a response without tags, still runs the code;
    a HumanEval answer that is the function's body alone goes under the prompt's signature,
    as HumanEval's completions do. The shipped code benchmarks read answers the same way,
    and programs are not voted on (no cons@k)."""
    from r1kit.eval.benchmarks import BenchmarkTask
    from r1kit.eval.core import _Verdicts, evaluate

    task = CodeTask(_file(tmp_path))
    examples = task.train_examples()[:3]
    boxed = _answer("def add(a, b):\n    return a + b") + " The answer is \\boxed{add}."
    untagged = "```python\ndef square(x):\n    return x * x\n```"
    body = "<think> x </think> <answer>\n```python\n    return -x\n```\n</answer>"
    texts = [boxed, untagged, body]
    assert [p["accuracy"] for _, p in CombinedReward(task).score(texts, examples)] == [1.0] * 3
    assert [s for s, _ in _Verdicts(task).score(texts, examples)] == [1.0] * 3

    mbpp = BenchmarkTask("mbpp")
    ex = mbpp.test_examples()[0]
    code = ex.meta["solution"]
    right = f"<think> x </think>\n```python\n{code}\n```\nSo the answer is \\boxed{{done}}."
    assert _Verdicts(mbpp).score([right], [ex])[0][0] == 1.0
    human = BenchmarkTask("humaneval")
    ex = human.test_examples()[0]
    body_only = f"```python\n{ex.meta['row']['canonical_solution']}```"
    assert _Verdicts(human).score([body_only], [ex])[0][0] == 1.0
    # r1kit score --reward code scores the HumanEval row the same way (it gave 0: the body
    # ran alone, without the prompt's signature)
    from r1kit.rewards.code import score_code_row, score_code_rows

    row = {**ex.meta["row"], "completion": "<think>x</think>\n" + body_only}
    assert score_code_row(row)[0] == 1.0 and score_code_rows([row])[0][0] == 1.0
    wrong = {**row, "completion": "```python\n    return None\n```"}
    assert score_code_rows([wrong])[0][0] == 0.0
    assert getattr(mbpp, "votes", True) is False and task.votes is False
    assert getattr(BenchmarkTask("gsm8k"), "votes", True) is True

    # evaluate with canned samples: cons@k is None for a task that does not vote
    import torch

    from r1kit.eval import core
    from r1kit.rollout import Rollouts

    def canned(model, tokenizer, task, examples, prompts, **kw):
        n = len(examples) * kw["k"]
        ro = Rollouts(prompt_ids=[[1]] * len(examples), completion_ids=torch.ones(n, 1).long(),
                      completion_mask=torch.ones(n, 1), logprobs=None,
                      stopped=torch.ones(n, dtype=torch.bool), group_size=kw["k"])
        texts = [boxed, boxed, untagged, "no code"]
        return ro, texts, _Verdicts(task).score(texts, [examples[i // kw["k"]] for i in range(n)])

    monkeypatch.setattr(core, "sample_and_verify", canned)
    res = evaluate(torch.nn.Linear(1, 1), None, task, examples[:2], [[1], [1]], k=2,
                   temperature=0.6, top_p=0.95, max_new_tokens=4, stop_ids=[0], seed=0)
    assert res.pass_at_1 == pytest.approx(0.75)
    assert res.cons_at_k is None and res.as_record()["cons@2"] is None


def test_a_code_check_that_times_out_is_counted(tmp_path):
    """Tests whose setup never ends: every program runs past the sandbox's wall clock. The
    grpo reward counts them (reward/timeouts, against max_reward_failures) instead of
    training on silent zeros (it logged timeouts 0); a program that fails its tests is the
    response's own 0, not a failure of the check."""
    data = tmp_path / "code.jsonl"
    data.write_text(json.dumps({"question": "Write add(a, b).", "tests": ["assert add(2, 3) == 5"],
                                "setup": "import time\ntime.sleep(100)"}) + "\n"
                    + json.dumps({"question": "Write add(a, b).",
                                  "tests": ["assert add(2, 3) == 5"]}) + "\n")
    task = CodeTask(data, timeout=1.0)  # the stages' code_timeout
    assert (task.limits.wall_seconds, task.limits.cpu_seconds) == (1.0, 0.5)
    hang, plain = task.train_examples()
    right = "<think>x</think>\n```python\ndef add(a, b):\n    return a + b\n```"
    wrong = "<think>x</think>\n```python\ndef add(a, b):\n    return a - b\n```"
    scored = CombinedReward(task).score([right, right, wrong], [hang, plain, plain])
    assert [p["accuracy"] for _, p in scored] == [0.0, 1.0, 0.0]
    assert [p["timeouts"] for _, p in scored] == [1.0, 0.0, 0.0]
    assert [p["errors"] for _, p in scored] == [0.0, 0.0, 0.0]


def test_code_instruction_and_timeout_are_settings(tmp_path):
    """code_instruction: r1kit's python-block request by default, "" the questions verbatim
    (as an sft stage reads the same file), or your own text; code_timeout the wall seconds of
    each program (a program that sleeps 3 s passes under 10, times out under 1). Both only
    with task = "code"."""
    from r1kit.tasks import make_task

    rows = [{"question": "Write add(a, b).", "tests": ["assert add(2, 3) == 5"]},
            {"question": [{"role": "user", "content": "Write add(a, b)."}],
             "tests": ["assert add(2, 3) == 5"]}]
    data = _file(tmp_path, rows)
    recipe = str(REPO / "recipes" / "zero-tiny.toml")
    base = ['stages.zero.task="code"', f'stages.zero.train_file="{data}"']

    def task(*sets):
        return make_task(load_recipe(recipe, base + list(sets)).stages["zero"], 0)

    text, chat = task().train_examples()
    assert text.question == "Write add(a, b).\nWrite the complete Python code in a ```python code block."
    assert chat.question[-1]["content"] == text.question
    text, chat = task('stages.zero.code_instruction=""').train_examples()
    assert text.question == "Write add(a, b)." and chat.question == rows[1]["question"]
    text, _ = task('stages.zero.code_instruction="Answer in Python 3."').train_examples()
    assert text.question == "Write add(a, b).\nAnswer in Python 3."

    slow = "<think>x</think>\n```python\nimport time\ntime.sleep(3)\ndef add(a, b):\n    return a + b\n```"
    patient = task()
    hasty = task("stages.zero.code_timeout=1")
    assert (patient.limits.wall_seconds, hasty.limits.wall_seconds) == (10.0, 1.0)
    example = patient.train_examples()[0]
    assert patient.verify_detailed([slow], [example]) == [(1.0, "ok")]
    assert hasty.verify_detailed([slow], [example]) == [(0.0, "timeout")]

    with pytest.raises(R1kitError, match="code_timeout: must be > 0"):
        task("stages.zero.code_timeout=0")
    with pytest.raises(R1kitError, match="code_instruction: is for task = 'code'"):
        load_recipe(recipe, ['stages.zero.code_instruction=""'])
    with pytest.raises(R1kitError, match="code_timeout: is for task = 'code'"):
        load_recipe(recipe, ["stages.zero.code_timeout=3"])


def test_mbpp_tests_as_json_text_are_shown_whole(tmp_path):
    tests = ["assert f(1) == 2", "assert f(2) == 3"]
    data = _file(tmp_path, [{"question": "Write f.", "test_list": json.dumps(tests)}])
    (ex,) = CodeTask(None, data).test_examples()
    assert all(t in ex.question for t in tests) and "\n[\n" not in ex.question


def test_code_max_cases_caps_the_training_rows_cases_only(tmp_path):
    """code_max_cases = N: a training row's reward runs its first N input/output cases (a
    program right on those alone earns 1.0); the held-out rows run all of them."""
    from r1kit.tasks import make_task

    cases = [{"input": f"{a} {b}\n", "output": f"{a + b}\n"} for a, b in ((1, 2), (3, 4), (-5, 5))]
    data = _file(tmp_path, [{"question": "Print a + b.", "test_cases": cases}])
    recipe = str(REPO / "recipes" / "zero-tiny.toml")
    base = ['stages.zero.task="code"', f'stages.zero.train_file="{data}"',
            f'stages.zero.test_file="{data}"']
    # right on the first two cases only (-5 5 gives 10)
    half = "```python\na, b = map(int, input().split())\nprint(abs(a) + b)\n```"
    right = "```python\na, b = map(int, input().split())\nprint(a + b)\n```"
    def task(*sets):
        return make_task(load_recipe(recipe, base + list(sets)).stages["zero"], 0)

    capped, full = task("stages.zero.code_max_cases=2"), task()
    (train,), (test,) = capped.train_examples(), capped.test_examples()
    assert capped.verify_batch([half, right, half], [train, train, test]) == [1.0, 1.0, 0.0]
    assert full.verify_batch([half], full.train_examples()) == [0.0]
    # where the first N cases all expect the same (here nothing), the cut adds the first
    # that expects another output: a program that does nothing, or prints a constant, fails
    quiet = _file(tmp_path, [{"question": "Print a + b, or nothing for 0 0.", "test_cases": [
        {"input": "0 0\n", "output": ""}, {"input": "0 0\n", "output": "\n"}, *cases]}],
        name="quiet.jsonl")
    nothing = "```python\npass\n```"
    # right on the cut (0 0, 0 0, 1 2) alone, as before
    some = "```python\na, b = map(int, input().split())\nif a or b:\n    print(abs(a) + b)\n```"
    capped = task("stages.zero.code_max_cases=2", f'stages.zero.train_file="{quiet}"')
    (train,) = capped.train_examples()
    assert capped.verify_batch([nothing, some], [train, train]) == [0.0, 1.0]
    stdin = IOCases(cases=(("", "0\n"), ("", " 0"), ("", "0"), ("", "2"), ("", "3")))
    assert stdin.first(2).cases == (("", "0\n"), ("", " 0"), ("", "2"))
    assert stdin.first(4).cases == stdin.cases[:4]  # two outputs already: as it is
    same = IOCases(cases=(("", "1"), ("", "1"), ("", "1")))
    assert same.first(2).cases == same.cases[:2]  # (no other output to add)
    # calls: APPS' [5] is 5 to a program (unwrap); LiveCodeBench's [5] is not
    near = IOCases(cases=(("", "0.5"), ("", "0.50"), ("", "1.5")))  # one constant meets both
    assert near.first(2).cases == near.cases
    ints = IOCases(cases=(("", "1.0"), ("", "1"), ("", "2")))  # print(1) meets both
    assert ints.first(2).cases == ints.cases
    loose = IOCases(cases=(("[1]", "[1]"), ("[2]", "1.0"), ("[3]", "[[1]]"), ("[4]", "7")),
                    call="f", unwrap=True)  # 1 == 1.0 == [1] unwrapped: then 7
    assert loose.first(2).cases == loose.cases[:2] + loose.cases[3:]
    calls = IOCases(cases=(("[1]", "[5]"), ("[2]", "5"), ("[3]", "[5]"), ("[4]", "6")),
                    call="f", unwrap=True)
    assert calls.first(2).cases == (("[1]", "[5]"), ("[2]", "5"), ("[4]", "6"))
    assert replace(calls, unwrap=False).first(2).cases == calls.cases[:2]
    with pytest.raises(R1kitError, match="code_max_cases: must be >= 0"):
        load_recipe(recipe, base + ["stages.zero.code_max_cases=-1"])
    with pytest.raises(R1kitError, match="code_max_cases: is for task = 'code'"):
        load_recipe(recipe, ["stages.zero.code_max_cases=2"])

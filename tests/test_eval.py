"""Evaluation statistics, the shipped benchmarks and `r1kit eval`."""

from __future__ import annotations

import hashlib
import json
import math
from itertools import combinations

import pytest

from r1kit.cli import main
from r1kit.errors import R1kitError
from r1kit.eval import majority_vote, mean_ci95, pass_at_k
from r1kit.eval.behaviour import reflective_counts
from r1kit.eval.benchmarks import BENCHMARKS, NAMES, is_code_file, load_benchmark
from r1kit.tasks import DATA_DIR
from r1kit.tasks.math import math_equal
from r1kit.templates import R1_ZERO_SYSTEM


def _brute_pass_at_k(n: int, c: int, k: int) -> float:
    """Share of all k-subsets of n samples (c of them right) holding a right one."""
    samples = [1] * c + [0] * (n - c)
    subsets = list(combinations(range(n), k))
    return sum(any(samples[i] for i in s) for s in subsets) / len(subsets)


def test_pass_at_k_hand_computed_and_edge_cases():
    assert pass_at_k(4, 1, 1) == pytest.approx(0.25)
    assert pass_at_k(4, 1, 2) == pytest.approx(0.5)  # 1 - C(3,2)/C(4,2) = 1 - 3/6
    assert pass_at_k(5, 2, 2) == pytest.approx(0.7)  # 1 - C(3,2)/C(5,2) = 1 - 3/10
    assert pass_at_k(10, 0, 3) == 0.0  # c = 0
    assert pass_at_k(10, 10, 3) == 1.0  # c = n
    assert pass_at_k(10, 8, 3) == 1.0  # k > n - c: every draw holds a right sample
    for n, c, k in [(6, 2, 3), (8, 3, 4), (7, 1, 7), (9, 4, 1)]:
        assert pass_at_k(n, c, k) == pytest.approx(_brute_pass_at_k(n, c, k))
    assert pass_at_k(1000, 1, 1) == pytest.approx(0.001)  # large n: no overflow
    with pytest.raises(ValueError):
        pass_at_k(4, 1, 5)  # k > n
    with pytest.raises(ValueError):
        pass_at_k(4, 5, 1)


def test_majority_vote_groups_equivalent_answers():
    # three equivalent forms of 1/2 outvote two 3s
    answers = ["3", "\\frac{1}{2}", "0.5", "3", "1/2", None]
    assert majority_vote(answers) == "3"  # by string: "3" wins 2-1-1-1
    assert majority_vote(answers, equal=math_equal) == "\\frac{1}{2}"
    # ties go to the group that appeared first, whatever the order of equivalents
    assert majority_vote(["7", "0.5", "7.0", "1/2"], equal=math_equal) == "7"
    assert majority_vote([None, None]) is None
    assert majority_vote(["025", "25", "24"], equal=math_equal) == "025"
    assert majority_vote([" 3 ", "3", "4"]) == "3"  # the answer as it votes, stripped


def test_cons_at_k_votes_by_each_math_tasks_equivalence(tmp_path, monkeypatch):
    """The in-run evaluations (GRPO's, the eval stage's) vote as `r1kit eval` does: the math
    tasks bring mathematical equivalence to majority_vote, so cons@k of "3", "\\frac{1}{2}",
    "0.5", "1/2", "3" elects the half (by text, "3" would win 2-1-1-1)."""
    import torch

    from r1kit.eval import core
    from r1kit.eval.benchmarks import BenchmarkTask, FileBenchmark
    from r1kit.rollout import Rollouts
    from r1kit.tasks.base import Example
    from r1kit.tasks.math import MathTask

    data = tmp_path / "q.jsonl"
    data.write_text('{"question": "half of 1?", "answer": "1/2"}\n')
    votes = ["3", "\\frac{1}{2}", "0.5", "1/2", "3"]
    k = len(votes)
    example = Example(question="half of 1?", answer="1/2")

    def fake_sampling(model, tokenizer, task, examples, prompts, **kw):
        ro = Rollouts(prompt_ids=[[1]], completion_ids=torch.ones(k, 2, dtype=torch.long),
                      completion_mask=torch.ones(k, 2), logprobs=None,
                      stopped=torch.ones(k, dtype=torch.bool), group_size=k)
        return ro, ["x"] * k, [(0.0, {"answer": a}) for a in votes]

    monkeypatch.setattr(core, "sample_and_verify", fake_sampling)
    tasks = [MathTask("math", data), BenchmarkTask("math500"), FileBenchmark(data)]
    for task in tasks:
        assert core.majority_vote(votes, task.vote_key, task.vote_equal) == "\\frac{1}{2}"
        res = core.evaluate(torch.nn.Linear(1, 1), None, task, [example], [[1]], k=k,
                            temperature=1.0, top_p=1.0, max_new_tokens=2, stop_ids=[],
                            seed=0)
        assert res.cons_at_k == 1.0, type(task).__name__


def test_mean_ci95():
    assert mean_ci95([]) == (0.0, 0.0)
    assert mean_ci95([0.5]) == (0.5, 0.5)
    values = [0.25, 0.75, 0.25, 0.75] * 4
    half = 1.96 * math.sqrt(sum((v - 0.5) ** 2 for v in values) / 15) / 4
    assert mean_ci95(values) == pytest.approx((0.5 - half, 0.5 + half))
    # an interval of accuracies stays within [0, 1]: here mean 0.3 +- 0.32
    assert mean_ci95([0.0, 0.6, 0.0, 0.6])[0] == 0.0
    # problems each solved or not: the Wilson score interval (reference values computed by
    # hand: centre (p + z^2/2n) / (1 + z^2/n), half-width z sqrt(p(1-p)/n + z^2/4n^2) / (1 +
    # z^2/n)), which does not collapse when none or all are solved
    assert mean_ci95([0.0, 1.0, 0.0, 1.0]) == pytest.approx((0.15003, 0.84997), abs=1e-5)
    assert mean_ci95([0.0] * 30) == pytest.approx((0.0, 3.8416 / 33.8416))  # 0 of 30: to 11%
    assert mean_ci95([1.0] * 30) == pytest.approx((30 / 33.8416, 1.0))
    lo, hi = mean_ci95([1.0] + [0.0] * 29)
    assert lo > 0.0 and hi == pytest.approx(0.1667, abs=1e-4)
    with pytest.raises(ValueError, match="finite"):
        mean_ci95([float("nan"), 1.0])


def test_reflective_words():
    counts = reflective_counts(["Wait, wait. Let me check.", "no reflection", "but Waiting"])
    assert counts["wait"] == pytest.approx(2 / 3)  # whole words only: "Waiting" is not one
    assert counts["check"] == pytest.approx(1 / 3) and counts["but"] == pytest.approx(1 / 3)
    assert counts["total"] == pytest.approx(4 / 3)


CHECKSUMS = {
    "gsm8k/train.jsonl": "92285e6f582dd0e223a634960f405a353f028abf9b0510ca973544fbd1aec47e",
    "gsm8k/test.jsonl": "f658e5a47ebe8e9187a4056fd42ae55c60fe6f164698d342c0d902bca1406ae1",
    "math500/test.jsonl": "35dc41080a3680858b27fa7e0533d2d547825316fc5dafe5d316f4ccc5a06132",
    "aime2024/test.jsonl": "af2b8bd2aa911b6333ad0df32f3ca05c7ae8ed10f1731f4372c8ae26990bf7ac",
    "aime2025/test.jsonl": "2568f9a00a7476cca030ac5b8d5e76e84f6b1ec2926fca90145d843b7a7bc98e",
    "amc2023/test.jsonl": "43707e1ca784602d8479de24ee8ce36609dbebc46dd152b0b12a46611aa898a4",
    "humaneval/test.jsonl": "1d49078ba3e2b196b9344535bef34a43021f038fad9561d6ee7c53450609a6a2",
    "mbpp/test.jsonl": "9bcaa67d5c2943e95eb9d9127e844f0551a77ac910c664aa45a4ebd75d239bd9",
}


@pytest.mark.parametrize("name", sorted(CHECKSUMS))
def test_benchmark_checksums_and_licences(name):
    path = DATA_DIR / name
    assert hashlib.sha256(path.read_bytes()).hexdigest() == CHECKSUMS[name]
    assert any(p.name.startswith("LICENSE") for p in path.parent.iterdir())
    assert CHECKSUMS[name] in (DATA_DIR / "README.md").read_text()


def test_benchmarks_load_with_their_sizes_and_fields():
    sizes = {"math500": 500, "gsm8k": 1319, "aime2024": 30, "aime2025": 30, "amc2023": 40,
             "humaneval": 164, "mbpp": 500}
    for name, size in sizes.items():
        examples = load_benchmark(name).test_examples()
        assert len(examples) == size, name
    math500 = load_benchmark("math500").test_examples()
    assert {e.level for e in math500} == {1, 2, 3, 4, 5}
    assert len({e.meta["subject"] for e in math500}) == 7
    aime = load_benchmark("aime2024")
    ex = aime.test_examples()[0]
    assert aime.verify(str(int(ex.answer)), ex) == 1.0  # "025"-style padding is no obstacle
    amc = load_benchmark("amc2023")
    ex = amc.test_examples()[0]  # answer stored as 27.0
    assert ex.answer == "27" and amc.verify("27", ex) == 1.0 and amc.verify("28", ex) == 0.0


def test_code_benchmarks_run_reference_solutions_in_the_sandbox():
    he = load_benchmark("humaneval")
    ex = he.test_examples()[0]
    full = ex.meta["row"]["prompt"] + ex.meta["row"]["canonical_solution"]
    assert he.verify(f"```python\n{full}\n```", ex) == 1.0
    assert he.verify("```python\ndef has_close_elements(a, b):\n    return False\n```", ex) == 0.0
    mbpp = load_benchmark("mbpp")
    ex = mbpp.test_examples()[0]
    assert mbpp.verify(f"```python\n{ex.meta['row']['code']}\n```", ex) == 1.0
    assert mbpp.verify("no code at all", ex) == 0.0


def test_eval_command_runs_every_benchmark(tmp_path, bpe_checkpoint, capsys):
    out = tmp_path / "eval.json"
    assert main(["eval", "--model", str(bpe_checkpoint), "--bench", ",".join(NAMES),
                 "--limit", "2", "--k", "2", "--max-new-tokens", "8", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    results = json.loads(out.read_text())["results"]
    assert [r["benchmark"] for r in results] == list(NAMES)
    for r in results:
        assert r["n"] == 2 and r["k"] == 2
        assert 0.0 <= r["pass@1"] <= r["pass@2"] <= 1.0
        lo, hi = r["pass@1_ci95"]
        assert lo <= r["pass@1"] <= hi
        assert r["benchmark"] in printed
        assert r["untagged"] == 0.0  # the chat prefill opens <think>
    assert json.loads(out.read_text())["settings"]["template"] == "chat"
    assert "have no <think>" not in printed
    # without the prefill a random model's text has no reasoning tags: no answer is read,
    # and a note says so; a code benchmark reads an untagged response whole: no note
    assert main(["eval", "--model", str(bpe_checkpoint), "--bench", "gsm8k,mbpp", "--limit",
                 "2", "--k", "2", "--max-new-tokens", "8", "--template", "none", "--out",
                 str(out)]) == 0
    printed = capsys.readouterr().out
    assert [r["untagged"] for r in json.loads(out.read_text())["results"]] == [1.0, 0.0]
    assert "note: gsm8k: 100.0% of the responses have no <think>, </think> or <answer>: r1kit " \
           "reads a final answer only after the reasoning" in printed
    assert "note: mbpp" not in printed
    assert json.loads(out.read_text())["settings"]["read_untagged"] is False
    # --read-untagged (open-r1's way): such responses are read whole; no share, no note
    assert main(["eval", "--model", str(bpe_checkpoint), "--bench", "gsm8k", "--limit", "2",
                 "--k", "2", "--max-new-tokens", "8", "--template", "none", "--read-untagged",
                 "--out", str(out)]) == 0
    assert "have no <think>" not in capsys.readouterr().out
    saved = json.loads(out.read_text())
    assert saved["settings"]["read_untagged"] is True
    assert [r["untagged"] for r in saved["results"]] == [0.0]


def test_eval_command_errors(tmp_path, capsys, bpe_checkpoint):
    assert main(["eval", "--model", str(tmp_path / "none"), "--bench", "gsm8k"]) == 2
    assert "does not exist" in capsys.readouterr().err
    code = tmp_path / "code.jsonl"  # a code file's faults are named before the model loads
    code.write_text('{"question": "Write add(a, b).", "tests": []}\n')
    assert main(["eval", "--model", str(bpe_checkpoint), "--bench", str(code)]) == 2
    assert "code.jsonl:1: field 'tests' is empty" in capsys.readouterr().err
    (tmp_path / "config.json").write_text("{}")  # a checkpoint's file, not its directory
    assert main(["eval", "--model", str(tmp_path / "config.json"), "--bench", "gsm8k"]) == 2
    assert "is a file, not a model directory" in capsys.readouterr().err
    assert main(["eval", "--model", str(tmp_path), "--bench", "gsm9k"]) == 2
    assert "unknown benchmark 'gsm9k'" in capsys.readouterr().err
    assert main(["eval", "--model", str(bpe_checkpoint), "--bench", "gsm8k", "--save-every",
                 "50"]) == 2
    assert "there is no --out" in capsys.readouterr().err
    assert set(BENCHMARKS) < set(NAMES)


def test_a_code_benchmark_of_your_own(tmp_path, bpe_checkpoint, capsys):
    """`--bench my_code.jsonl`: rows with tests (or input/output cases, as LiveCodeBench and
    CodeContests give them) are code problems, asked and scored as a code task's."""
    own = tmp_path / "code.jsonl"
    own.write_text(json.dumps({"question": "Write add(a, b).", "tests": ["assert add(1, 2) == 3"]})
                   + "\n" + json.dumps({"question": "Print a + b.", "test_cases": [
                       {"input": "1 2\n", "output": "3\n"}, {"input": "5 5", "output": "10"}]})
                   + "\n")
    task = load_benchmark(str(own))
    add, io = task.test_examples()
    assert "```python" in add.question and "standard input" in io.question
    assert task.verify_batch(["```python\ndef add(a, b):\n    return a + b\n```",
                              "```python\na, b = map(int, input().split())\nprint(a + b)\n```",
                              "```python\nprint(3)\n```"], [add, io, io]) == [1.0, 1.0, 0.0]
    assert load_benchmark(str(own), instruction=False).test_examples()[0].question == \
        "Write add(a, b)."
    out = tmp_path / "eval.json"
    assert main(["eval", "--model", str(bpe_checkpoint), "--bench", f"{own},gsm8k", "--limit",
                 "2", "--k", "2", "--max-new-tokens", "8", "--out", str(out)]) == 0
    assert "code problems (2)" in capsys.readouterr().out
    mine, gsm8k = json.loads(out.read_text())["results"]
    assert (mine["n"], mine["k"], mine["code_instruction"]) == (2, 2, "r1kit")
    assert mine["cons@2"] is None and gsm8k["cons@2"] == 0.0  # programs are not voted on
    assert "code_instruction" not in gsm8k
    # a model a code stage trained: asked with that stage's code_instruction
    import shutil

    run = tmp_path / "run"
    shutil.copytree(bpe_checkpoint, run / "rl")
    stage = {"kind": "grpo", "task": "code", "template": "chat", "code_instruction": "Code it.",
             "code_timeout": 30}
    (run / "config.json").write_text(json.dumps({"run": {}, "stages": {"rl": stage}}))
    assert main(["eval", "--model", str(run / "rl"), "--bench", str(own), "--limit", "1",
                 "--k", "1", "--max-new-tokens", "4", "--out", str(out)]) == 0
    (saved,) = json.loads(out.read_text())["results"]
    assert saved["code_instruction"] == "Code it."
    assert saved["samples"][0]["question"].endswith("Write add(a, b).\nCode it.")
    task = load_benchmark(str(own), code_instruction="Code it.", code_timeout=30)
    assert task.limits.wall_seconds == 30
    with pytest.raises(R1kitError, match="no field 'problem'") as refused:
        load_benchmark(str(own), question_field="problem")
    assert "--question-field" in refused.value.hint
    # LiveCodeBench's layout: a function-call problem, asked for the function after its
    # starter code, and k = 8 by default, as the paper evaluates LiveCodeBench
    lcb = tmp_path / "lcb.jsonl"
    lcb.write_text(json.dumps({
        "question_content": "Return the sum of a and b.", "starter_code": "class Solution:\n"
        "    def add(self, a: int, b: int) -> int:\n        ", "metadata": '{"func_name": "add"}',
        "public_test_cases": json.dumps([{"input": "1\n2", "output": "3",
                                          "testtype": "functional"}]),
        "private_test_cases": "[]"}) + "\n")
    assert is_code_file(str(lcb))
    (asked,) = load_benchmark(str(lcb), question_field="question_content").test_examples()
    assert "def add(self, a: int, b: int)" in asked.question and "`add`" in asked.question
    assert main(["eval", "--model", str(bpe_checkpoint), "--bench", str(lcb), "--limit", "1",
                 "--max-new-tokens", "4", "--question-field", "question_content",
                 "--out", str(out)]) == 0
    assert json.loads(out.read_text())["results"][0]["k"] == 8
    # a math file with a column named test is math (HumanEval's test needs its entry_point)
    math = tmp_path / "math.jsonl"
    math.write_text(json.dumps({"question": "1 + 1?", "solution": "2", "test": "held out"})
                    + "\n")
    assert not is_code_file(str(math), "answer")
    # a code file with an answer column (a reference solution) is code; one whose test
    # columns are empty is not
    with_answer = tmp_path / "with_answer.jsonl"
    with_answer.write_text(json.dumps({"question": "Add.", "answer": "def add(a, b): ...",
                                       "tests": ["assert add(1, 2) == 3"]}) + "\n")
    assert is_code_file(str(with_answer))
    with_answer.write_text(json.dumps({"question": "1 + 1?", "answer": "2", "tests": [],
                                       "test_list": None}) + "\n")
    assert not is_code_file(str(with_answer))
    assert load_benchmark(str(math), answer_field="solution").verify("2", load_benchmark(
        str(math), answer_field="solution").test_examples()[0]) == 1.0


def test_a_math_benchmark_of_your_own(tmp_path, bpe_checkpoint, capsys):
    """`--bench my.jsonl`: read with the recipe's math reader (GSM8K-style '#### 72' answers),
    scored with the shipped math verifier; fields and instruction configurable; bad files
    are named before the model loads."""
    own = tmp_path / "mine.jsonl"
    own.write_text('{"problem": "What is 70 + 2?", "solution": "#### 72"}\n'
                   '{"problem": "What is 1/2 + 1/4?", "solution": "3/4", "level": 2}\n')
    task = load_benchmark(str(own), question_field="problem", answer_field="solution")
    first, second = task.test_examples()
    assert first.question.startswith("What is 70 + 2?") and "\\boxed{}" in first.question
    assert task.verify("72", first) == 1.0 and task.verify("73", first) == 0.0
    assert task.verify("0.75", second) == 1.0 and second.level == 2
    bare = load_benchmark(str(own), question_field="problem", answer_field="solution",
                          instruction=False)
    assert bare.test_examples()[0].question == "What is 70 + 2?"
    # JSON Lines under a .json name (datasets' to_json) or no suffix, as recipes read them
    for name in ("mine.json", "mine"):
        (tmp_path / name).write_bytes(own.read_bytes())
        other = load_benchmark(str(tmp_path / name), question_field="problem",
                               answer_field="solution")
        assert [e.question for e in other.test_examples()] == \
            [e.question for e in task.test_examples()]

    out = tmp_path / "eval.json"
    assert main(["eval", "--model", str(bpe_checkpoint), "--bench", f"{own},tiny",
                 "--question-field", "problem", "--answer-field", "solution",
                 "--k", "2", "--max-new-tokens", "8", "--out", str(out)]) == 0
    saved = json.loads(out.read_text())
    mine, tiny = saved["results"]
    assert mine["benchmark"] == str(own) and mine["n"] == 2 and mine["k"] == 2
    assert 0.0 <= mine["pass@1"] <= 1.0 and tiny["benchmark"] == "tiny"
    assert saved["settings"]["answer_field"] == "solution"
    assert str(own) in capsys.readouterr().out

    (tmp_path / "array.json").write_text(json.dumps([{"question": "1+1?", "answer": "2"}]))
    for bench, expected in [(str(own), "no field 'question'"),
                            (str(tmp_path / "array.json"), "expected a JSON object, got list"),
                            (str(tmp_path / "gone.jsonl"), "not found"),
                            (str(tmp_path / "dir.jsonl"), "is a directory, not a data file")]:
        (tmp_path / "dir.jsonl").mkdir(exist_ok=True)
        assert main(["eval", "--model", str(bpe_checkpoint), "--bench", bench]) == 2
        err = capsys.readouterr().err
        assert expected in err and "Traceback" not in err, err


def test_eval_prompts_a_model_as_its_r1kit_stage_trained_it(tmp_path, bpe_checkpoint, capsys):
    """For a checkpoint an r1kit stage wrote (its final model or a checkpoints/step-N), auto
    takes the stage's template, prefill and system turn (from the run's config.json), and
    your own file's questions as they are, as that stage's evaluations prompt; an explicit
    --template, and any other checkpoint, keep the defaults."""
    import shutil

    from r1kit.eval.cli import trained_prompting

    run = tmp_path / "run"
    shutil.copytree(bpe_checkpoint, run / "zero")
    shutil.copytree(bpe_checkpoint, run / "zero" / "checkpoints" / "step-2")
    stage = {"kind": "grpo", "template": "r1-zero", "prefill": "Let me"}
    (run / "config.json").write_text(json.dumps({"run": {}, "stages": {"zero": stage}}))
    assert trained_prompting(run / "zero") == ("zero", stage)
    assert trained_prompting(run / "zero" / "checkpoints" / "step-2")[0] == "zero"
    assert trained_prompting(bpe_checkpoint) is None
    own = tmp_path / "mine.jsonl"
    own.write_text('{"question": "What is 70 + 2?", "answer": "72"}\n')
    for model, args, settings in [
            (run / "zero", [], {"template": "r1-zero", "prefill": "Let me",
                                "math_instruction": False, "system_prompt": False}),
            (run / "zero", ["--template", "chat"], {"template": "chat", "prefill": "<think>\n",
                                                    "math_instruction": True}),
            (bpe_checkpoint, [], {"template": "chat", "math_instruction": True,
                                  "system_prompt": False})]:
        out = tmp_path / "eval.json"
        assert main(["eval", "--model", str(model), "--bench", str(own), "--k", "1",
                     "--max-new-tokens", "4", "--out", str(out), *args]) == 0
        saved = json.loads(out.read_text())
        instruction = settings.pop("math_instruction")
        assert saved["results"][0]["math_instruction"] is instruction, (model, args)
        assert {k: saved["settings"][k] for k in settings} == settings, (model, args)
        said = "prompts as stage 'zero' trained this model" in capsys.readouterr().out
        assert said == (model != bpe_checkpoint and not args)
    # a chat stage's system turn: its system_prompt (r1kit's instruction when it set none)
    stage.update(template="chat", system_prompt="Answer in one line.")
    (run / "config.json").write_text(json.dumps({"run": {}, "stages": {"zero": stage}}))
    for given, expected in [("Answer in one line.", "Answer in one line."),
                            (None, R1_ZERO_SYSTEM), ("", False)]:
        if given is None:
            del stage["system_prompt"]
        else:
            stage["system_prompt"] = given
        (run / "config.json").write_text(json.dumps({"run": {}, "stages": {"zero": stage}}))
        assert main(["eval", "--model", str(run / "zero"), "--bench", "tiny", "--limit", "1",
                     "--k", "1", "--max-new-tokens", "4", "--out", str(out)]) == 0
        assert json.loads(out.read_text())["settings"]["system_prompt"] == expected
    # a stage that read untagged responses whole: its model's evaluation reads them so too
    # (said), unless --no-read-untagged
    stage["read_untagged"] = True
    (run / "config.json").write_text(json.dumps({"run": {}, "stages": {"zero": stage}}))
    capsys.readouterr()
    for args, expected in (([], True), (["--no-read-untagged"], False)):
        assert main(["eval", "--model", str(run / "zero"), "--bench", "tiny", "--limit", "1",
                     "--k", "1", "--max-new-tokens", "4", "--out", str(out), *args]) == 0
        assert json.loads(out.read_text())["settings"]["read_untagged"] is expected
        assert ("as stage 'zero' did (read_untagged" in capsys.readouterr().out) is expected


def test_eval_greedy_verbatim_prompts_and_benchmark_spellings(tmp_path, bpe_checkpoint, capsys):
    out = tmp_path / "eval.json"
    assert main(["eval", "--model", str(bpe_checkpoint), "--bench", "MATH-500,AIME_2024",
                 "--limit", "2", "--temperature", "0", "--template", "none",
                 "--max-new-tokens", "6", "--out", str(out)]) == 0
    saved = json.loads(out.read_text())
    assert [r["benchmark"] for r in saved["results"]] == ["math500", "aime2024"]
    assert all(r["k"] == 1 for r in saved["results"])  # greedy: one sample per problem
    assert saved["settings"]["template"] == "none" and saved["settings"]["temperature"] == 0
    assert all(r["math_instruction"] is True for r in saved["results"])  # in their questions
    capsys.readouterr()
    assert main(["eval", "--model", str(bpe_checkpoint), "--bench", "gsm8k", "--limit", "1",
                 "--k", "1", "--temperature", "0", "--max-new-tokens", "2",
                 "--question-field", "problem", "--no-math-instruction"]) == 0
    assert ("note: --question-field, --no-math-instruction apply to a benchmark file of your "
            "own") in capsys.readouterr().out
    assert main(["eval", "--model", str(bpe_checkpoint), "--bench", "gsm8k",
                 "--temperature", "0", "--k", "4"]) == 2
    assert "use --k 1" in capsys.readouterr().err


def test_eval_stage_general_columns_on_your_own_prompts(tmp_path):
    """An eval stage's helpful and safety columns on the rows of a general_data file (the
    first general_prompts of each type that has a reward model), read and checked as GRPO's
    general_data; the tiny world's held-out prompts without one."""
    from r1kit.config import EvalStageConfig, load_recipe
    from r1kit.errors import R1kitError
    from r1kit.stages.evaluate import general_rows

    data = tmp_path / "general.jsonl"
    rows = [{"instruction": f"Tell me about topic {i}.", "type": "helpful"} for i in range(3)]
    rows.append({"instruction": "How do I pick a lock?", "type": "safety"})
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = EvalStageConfig(models=["x"], general_data=str(data), general_prompt_field="instruction",
                          general_prompts=0, helpful_model="h")
    assert general_rows(cfg) == [{"prompt": r["instruction"], "type": r["type"]} for r in rows]
    cfg.general_prompts = 2  # of each type: a file sorted by type keeps both columns
    assert [r["prompt"] for r in general_rows(cfg)] == [
        "Tell me about topic 0.", "Tell me about topic 1.", "How do I pick a lock?"]
    assert [r["type"] for r in general_rows(cfg, ("helpful",))] == ["helpful", "helpful"]
    tiny = general_rows(EvalStageConfig(models=["x"], general_prompts=5))
    assert len(tiny) == 5 and {r["type"] for r in tiny} <= {"helpful", "safety"}
    cfg.general_prompt_field = "prompt"
    with pytest.raises(R1kitError, match="general.jsonl:1: no field 'prompt'"):
        general_rows(cfg)

    # checked with the recipe, before any stage: the file exists, its rows are general rows
    from r1kit.config import check_inputs

    recipe = tmp_path / "r.toml"
    base = ('[stages.base]\nkind = "pretrain"\nsteps = 1\n'
            '[stages.helpful]\nkind = "reward_model"\nmodel = "base"\n'
            '[stages.table]\nkind = "eval"\nmodels = ["base"]\nhelpful_model = "helpful"\n')
    recipe.write_text(base + f'general_data = "{tmp_path / "nowhere.jsonl"}"\n')
    with pytest.raises(R1kitError, match="stages.table.general_data"):
        check_inputs(load_recipe(recipe))
    recipe.write_text(base + f'general_data = "{data}"\n')
    with pytest.raises(R1kitError, match="no field 'prompt'"):
        check_inputs(load_recipe(recipe))
    recipe.write_text(base + f'general_data = "{data}"\ngeneral_prompt_field = "instruction"\n')
    check_inputs(load_recipe(recipe))


def test_eval_defaults_follow_the_stage_that_trained_the_checkpoint(tmp_path):
    """r1kit eval's default max_new_tokens is the cap of the stage's own last evaluation (its
    length schedule raised it by then), and --bench tiny is that stage's world."""
    from r1kit.eval.cli import _stage_cap, _stage_world
    from r1kit.eval.core import pass_ks as _ks

    stage = {"max_new_tokens": 64, "max_new_tokens_schedule": [[10, 128], [50, 256]],
             "steps": 20}
    final = tmp_path / "zero"
    step5 = final / "checkpoints" / "step-5"
    step5.mkdir(parents=True)
    assert _stage_cap(stage, final) == 128  # raised at rollout 10, before the last (20)
    assert _stage_cap(stage, step5) == 64
    assert _stage_cap({**stage, "steps": 60}, final) == 256
    assert _stage_cap({"epochs": 2}, final) is None  # not a sampling stage
    world = _stage_world({"world": {"max_operand": 7, "test_size": 30, "unknown": 1}})
    assert (world.max_operand, world.test_size) == (7, 30)
    assert _stage_world({}) is None
    tiny = load_benchmark("tiny", world=world)
    assert len(tiny.test_examples()) == 30
    assert _ks(6) == [1, 2, 4, 6] and _ks(8) == [1, 2, 4, 8] and _ks(1) == [1]
    # a checkpoint no stage trained: the paper's 32,768, or up to its last position if fewer
    from r1kit.eval.cli import model_positions

    for positions, want in ((512, 512), (131072, None), ("x", None)):
        (tmp_path / "config.json").write_text(json.dumps({"max_position_embeddings": positions}))
        assert model_positions(tmp_path) == want
    (tmp_path / "config.json").write_text(json.dumps({"n_positions": 128, "n_ctx": 128}))
    assert model_positions(tmp_path) == 128  # GPT-2's name for them


def test_plain_words_after_a_number_are_a_unit():
    """A numeric reference answered as a number and one plain word, a unit ("18 dollars"), is
    that number (math-verify alone read the word as a variable); more words, words that
    change the value and words of mathematics are not dropped."""
    from r1kit.rewards.math import check_equal

    assert check_equal("18 dollars", "18") and check_equal("18 eggs", "18")
    assert check_equal("1,000 dollars", "1000") and check_equal("18.5 kg", "18.5")
    assert check_equal("18\\text{ eggs}", "18") and check_equal("$18$ dollars", "18")
    assert not check_equal("17 dollars", "18")
    assert not check_equal("2 pi", "2") and not check_equal("3 times 4", "3")
    assert not check_equal("3 x", "3")
    # one word only, and not one that changes the value: these are not 18 (or 3, 5, 2)
    for answer, reference in (("3 times four", "3"), ("2 pi radians", "2"),
                              ("18 thousand", "18"), ("5 million", "5"), ("3 dozen", "3"),
                              ("18 hundredths", "18"), ("18 or so", "18"),
                              ("18 is wrong", "18")):
        assert not check_equal(answer, reference), answer
    # a reference written with its unit is its number too, whichever the word (math-verify
    # alone read "42 eggs", "42 dollars" and "42 people" as no 42, "42 apples" as 42)
    for reference in ("42 eggs", "42 dollars", "42 cookies", "42 people", "42 apples",
                      "42 dollars.", "$42$ eggs", "42\\text{ pages}"):
        assert check_equal("42", reference) and check_equal("\\boxed{42}", reference), reference
        assert not check_equal("43", reference), reference
    assert check_equal("42 eggs", "42 eggs") and check_equal("42 egg", "$42$ eggs")
    assert not check_equal("42", "42 thousand") and not check_equal("42", "42 dozen")
    # a number and letters without a space is no unit: 4xy is not 4, either way round
    for answer, reference in (("12", "12xy"), ("4", "4xy"), ("3", "3mn"), ("4xy", "4"),
                              ("10", "10 cos"), ("2", "2 ln")):
        assert not check_equal(answer, reference), (answer, reference)


def test_another_unit_is_another_answer():
    """An answer in another unit than its reference's is wrong (math-verify drops the units it
    knows, and found 5 km equal to 5 cm); the same unit under another name is the same."""
    from r1kit.rewards.math import check_equal

    for answer, reference in (("5 km", "5 cm"), ("5 m", "5 cm"), ("7 pm", "7 am"),
                              ("3 hours", "3 minutes"), ("10 seconds", "10 minutes"),
                              ("5 inches", "5 feet"), ("5\\text{ meters}", "5\\text{ cm}"),
                              ("2 kg", "2 g"), ("42 apples", "42 eggs"),
                              # \mathrm, LaTeX spaces, and a unit's name without a space
                              ("5\\mathrm{km}", "5\\text{ cm}"),
                              ("5\\,\\mathrm{km}", "5\\,\\mathrm{cm}"),
                              ("5km", "5 cm"), ("3cm", "3mm"), ("7pm", "7 am"),
                              ("5 M", "5 m")):  # (a one-letter unit only as written)
        assert not check_equal(answer, reference), (answer, reference)
        assert check_equal(reference, reference), reference
    for answer, reference in (("5 centimeters", "5 cm"), ("5 meters", "5 m"),
                              ("3 hrs", "3 hours"), ("1 foot", "1 ft"), ("2 kgs", "2 kg"),
                              ("4 days", "4 day"), ("7 pm", "7"), ("5 m", "5"),
                              ("5 cms", "5 cm"), ("12 kms", "12 km"), ("5km", "5 km"),
                              ("5\\,\\mathrm{km}", "5 km"), ("2 liters", "2 L"),
                              # "units" names no unit of its own
                              ("5 cm", "5 \\text{ units}"), ("5 units", "5 cm")):
        assert check_equal(answer, reference), (answer, reference)


def test_scientific_notation_with_a_small_e():
    """1.5e3 is 1500, as 1.5E3 is (math-verify read the small e as Euler's number)."""
    from r1kit.rewards.math import check_equal

    for answer, reference in (("1.5e3", "1500"), ("1e-3", "0.001"), ("-2.5e+2", "-250"),
                              ("1500", "1.5e3"), ("1E3", "1000")):
        assert check_equal(answer, reference), (answer, reference)
    assert not check_equal("1.5e3", "150") and not check_equal("2e", "2")


def test_levels_written_as_math_writes_them_count(tmp_path):
    """MATH's own rows say "Level 5": read as level 5 (such rows were left out of pass@1 by
    level); anything else that is no level number is no level."""
    from r1kit.tasks.math import read_examples, row_level

    assert [row_level(v) for v in ("Level 5", "level 3", "4", 2, True, "Level ?", None)] == \
        [5, 3, 4, 2, None, None, None]
    data = tmp_path / "math.jsonl"
    data.write_text('{"problem": "1+1?", "answer": "2", "level": "Level 2"}\n')
    assert read_examples(data, "problem", "answer")[0].level == 2


def test_a_benchmark_named_twice_runs_once_and_a_directory_is_said(tmp_path, bpe_checkpoint,
                                                                    capsys):
    out = tmp_path / "eval.json"
    assert main(["eval", "--model", str(bpe_checkpoint), "--bench", "tiny,tiny", "--limit", "1",
                 "--k", "1", "--max-new-tokens", "4", "--out", str(out)]) == 0
    assert [r["benchmark"] for r in json.loads(out.read_text())["results"]] == ["tiny"]
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "mine.jsonl").write_text('{"question": "1+1?", "answer": "2"}\n')
    capsys.readouterr()
    assert main(["eval", "--model", str(bpe_checkpoint), "--bench",
                 str(tmp_path / "data")]) == 2
    err = capsys.readouterr().err
    assert "is a directory, not a data file" in err and f"{tmp_path / 'data'}/mine.jsonl" in err
    # a directory of splits: one split is named, never a glob that mixes train and test
    for name in ("train-00000-of-00002.jsonl", "train-00001-of-00002.jsonl", "test.jsonl"):
        (tmp_path / "data" / name).write_text('{"question": "1+1?", "answer": "2"}\n')
    assert main(["eval", "--model", str(bpe_checkpoint), "--bench",
                 str(tmp_path / "data")]) == 2
    err = capsys.readouterr().err
    assert f"e.g. {tmp_path / 'data'}/mine.jsonl (one split at a time: it holds mine, test, " \
        "train)" in err and "/*.jsonl" not in err


def test_a_system_turn_without_a_chat_template_is_said_unused(tmp_path, bpe_checkpoint,
                                                              capsys):
    """--system-text with a prompt that has no system turn (template r1-zero): a note says
    so, and --out records no system prompt (it recorded the unused text)."""
    from conftest import without_chat_template

    model = without_chat_template(bpe_checkpoint, tmp_path / "plain")
    out = tmp_path / "eval.json"
    assert main(["eval", "--model", str(model), "--bench", "tiny", "--limit", "1", "--k", "1",
                 "--max-new-tokens", "4", "--system-text", "Be careful.",
                 "--out", str(out)]) == 0
    assert "with template 'r1-zero' prompts have none" in capsys.readouterr().out
    saved = json.loads(out.read_text())["settings"]
    assert saved["template"] == "r1-zero" and saved["system_prompt"] is False


def test_eval_json_says_when_the_positions_capped_the_length(tmp_path, bpe_checkpoint):
    """Without --max-new-tokens, a checkpoint no stage trained samples up to its last
    position; the JSON's settings say so, and each result has the length it used."""
    import shutil

    model = tmp_path / "short"
    shutil.copytree(bpe_checkpoint, model)
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, "max_position_embeddings": 64}))
    out = tmp_path / "eval.json"
    assert main(["eval", "--model", str(model), "--bench", "tiny", "--limit", "2", "--k", "1",
                 "--temperature", "0", "--out", str(out)]) == 0
    saved = json.loads(out.read_text())
    assert saved["settings"]["max_new_tokens"] == 32768  # asked: the paper's
    assert saved["settings"]["max_new_tokens_up_to_position"] == 64
    [result] = saved["results"]
    assert 1 <= result["max_new_tokens"] < 64 and "math_instruction" not in result


def test_eval_prefill_reads_backslash_n_as_a_newline(tmp_path, bpe_checkpoint):
    """--prefill '<think>\\n' as the help writes it: a newline (it was a backslash and an n)."""
    out = tmp_path / "eval.json"
    assert main(["eval", "--model", str(bpe_checkpoint), "--bench", "tiny", "--limit", "1",
                 "--k", "1", "--temperature", "0", "--max-new-tokens", "2",
                 "--prefill", "<think>\\n", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["settings"]["prefill"] == "<think>\n"


def test_eval_takes_your_own_system_turn(tmp_path, bpe_checkpoint, capsys):
    """--system-text: a system turn of your own for questions without one (a model trained
    with its data's own system turn is evaluated under it); with --system-prompt, refused."""
    out = tmp_path / "eval.json"
    assert main(["eval", "--model", str(bpe_checkpoint), "--bench", "gsm8k", "--limit", "1",
                 "--k", "1", "--max-new-tokens", "2", "--template", "chat",
                 "--system-text", "You are a helpful assistant.", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["settings"]["system_prompt"] == \
        "You are a helpful assistant."
    capsys.readouterr()
    assert main(["eval", "--model", str(bpe_checkpoint), "--bench", "gsm8k", "--system-text",
                 "Hi", "--no-system-prompt"]) == 2
    assert "--system-text and --system-prompt" in capsys.readouterr().err


def test_responses_that_end_inside_an_unclosed_think_are_counted(bpe_checkpoint):
    """A response that stopped (not cut at the length cap) inside a <think> it never closed
    has no answer: its share is `unclosed`, and r1kit eval's table says what to do (a model
    that does not reason in tags, prompted with a prefill that opens <think>)."""
    import torch

    from r1kit.eval.cli import format_table
    from r1kit.eval.core import evaluate
    from r1kit.models import load_model, load_tokenizer

    tok = load_tokenizer(bpe_checkpoint)
    model = load_model(bpe_checkpoint, torch.device("cpu"), torch.float32, tok)
    task = load_benchmark("gsm8k")
    examples = task.test_examples()[:2]
    prompts = [tok(e.question)["input_ids"] for e in examples]
    every = list(range(len(tok)))  # every token stops: each response ends at once

    def unclosed(prefill, stop_ids):
        return evaluate(model, tok, task, examples, prompts, k=2, temperature=1.0, top_p=1.0,
                        max_new_tokens=4, stop_ids=stop_ids, seed=0, prefill=prefill).unclosed

    assert unclosed("<think>\n", every) == 1.0
    assert unclosed("", every) == 0.0
    assert unclosed("<think>\n", [tok.eos_token_id]) == 0.0  # cut at the cap: not counted
    row = {"benchmark": "gsm8k", "n": 2, "k": 2, "pass@1": 0.0, "pass@1_ci95": [0.0, 0.5],
           "pass@2": 0.0, "cons@2": 0.0, "mean_tokens": 1.0, "truncated": 0.0,
           "unclosed": 1.0}
    assert "never closed" in format_table([row]) and "--prefill ''" in format_table([row])


@pytest.mark.parametrize("scored_by", ["task", "reward"])
def test_each_process_samples_its_share_of_the_problems(monkeypatch, bpe_checkpoint, scored_by):
    """Under torchrun each rank samples and scores the problems dealt to it (of 5: 0, 2, 4
    and 1, 3), each problem seeded on its own, then gathers all: the two ranks' shares put
    together are the one-process evaluation with per-question seeding, response for
    response. One generator for all (one process's default) samples other responses."""
    import torch

    from r1kit import distributed
    from r1kit.eval import core
    from r1kit.models import load_model, load_tokenizer

    tok = load_tokenizer(bpe_checkpoint)
    model = load_model(bpe_checkpoint, torch.device("cpu"), torch.float32, tok)
    task = load_benchmark("gsm8k")
    examples = task.test_examples()[:5]
    prompts = [tok(e.question)["input_ids"] for e in examples]
    settings = dict(k=2, temperature=1.0, top_p=1.0, max_new_tokens=6,
                    stop_ids=[tok.eos_token_id], seed=3, max_rows=4)

    class Length:  # a reward of each response's length and its question's place
        def score(self, texts, rows):
            places = [examples.index(r) for r in rows]
            return [(len(t) + 100.0 * q, {"place": float(q)}) for t, q in zip(texts, places)]

    def sample(per_question):
        if scored_by == "task":
            ro, texts, verdicts = core.sample_and_verify(model, tok, task, examples, prompts,
                                                         per_question=per_question, **settings)
            return texts, verdicts, ro.lengths.tolist()
        return core.evaluate_reward(model, tok, Length(), examples, prompts,
                                    per_question=per_question, **settings)

    one = sample(per_question=True)
    assert sample(per_question=False) != one
    sampled, shares = [], []
    generate = core.generate
    monkeypatch.setattr(core, "generate", lambda model, prompts, **kw: sampled.append(
        len(prompts)) or generate(model, prompts, **kw))

    def gather(items):  # rank 1 gathers rank 0's part from its turn, and its own
        shares.append(items)
        return [x for part in shares for x in part]

    monkeypatch.setattr(distributed, "gather_lists", gather)
    for rank in (0, 1):
        monkeypatch.setattr(distributed, "_world", distributed.World(rank=rank, world_size=2))
        two = sample(per_question=False)  # (seeded per question all the same)
    assert sampled == [3, 2]
    # problems dealt as cards: 0, 2, 4 and 1, 3, each with its k = 2 responses
    assert [[(q, len(group)) for q, group in part] for part in shares] == \
        [[(0, 2), (2, 2), (4, 2)], [(1, 2), (3, 2)]]
    assert two == one


def test_an_interrupted_eval_goes_on_after_the_benchmarks_it_finished(bpe_checkpoint, tmp_path,
                                                                     monkeypatch, capsys):
    """`r1kit eval --out FILE` writes FILE after each benchmark; interrupted in its second and
    run again, the command takes the first one's results from FILE and evaluates the rest: the
    same results as an uninterrupted run. Other settings, or a changed model, start over."""
    import shutil

    import r1kit.eval.cli as cli

    model = tmp_path / "model"
    shutil.copytree(bpe_checkpoint, model)
    mine = tmp_path / "mine.jsonl"
    mine.write_text("".join(json.dumps({"question": f"What is {i} + 1?", "answer": str(i + 1)})
                            + "\n" for i in range(3)))
    command = ["eval", "--model", str(model), "--bench", f"{mine},tiny", "--limit", "2", "--k",
               "2", "--max-new-tokens", "6"]
    whole, out = tmp_path / "whole.json", tmp_path / "out.json"
    assert main([*command, "--out", str(whole)]) == 0
    real, calls = cli.evaluate, []

    def counted(*args, **kw):
        calls.append(1)
        if len(calls) == 2 and stop:
            raise KeyboardInterrupt
        return real(*args, **kw)

    monkeypatch.setattr(cli, "evaluate", counted)
    stop = True
    assert main([*command, "--out", str(out)]) == 130
    held = json.loads(out.read_text())
    assert [r["benchmark"] for r in held["results"]] == [str(mine)]
    assert held["resume"]["unfinished"] == ["tiny"]
    stop, calls[:] = False, []
    capsys.readouterr()
    assert main([*command, "--out", str(out)]) == 0
    assert f"resuming {out}: {mine} evaluated by an interrupted run" in capsys.readouterr().out
    assert len(calls) == 1  # tiny alone

    def without_seconds(path):
        data = json.loads(path.read_text())
        return {**data, "results": [{k: v for k, v in r.items() if k != "seconds"}
                                    for r in data["results"]]}
    assert without_seconds(out) == without_seconds(whole)  # (and no "resume" left)
    # interrupted again; run with another k, or without the boxed-answer request: from the
    # start
    for other in ([*command[:-3], "3", *command[-2:]], [*command, "--no-math-instruction"]):
        calls[:], stop = [], True
        assert main([*command, "--out", str(out)]) == 130
        stop, calls[:] = False, []
        assert main([*other, "--out", str(out)]) == 0
        assert len(calls) == 2
    # interrupted again; its model's weights changed meanwhile: from the start
    from safetensors.torch import load_file, save_file

    calls[:], stop = [], True
    assert main([*command, "--out", str(out)]) == 130
    weights = load_file(model / "model.safetensors")
    save_file({k: v + 0.01 if v.is_floating_point() else v for k, v in weights.items()},
              model / "model.safetensors", metadata={"format": "pt"})
    stop, calls[:] = False, []
    assert main([*command, "--out", str(out)]) == 0
    assert len(calls) == 2

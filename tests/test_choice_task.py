"""task = "choice": multiple-choice questions (GPQA, MMLU, MMLU-Pro, ARC, your own) as a GRPO,
sample and eval task, `r1kit eval --bench FILE` and `r1kit score --reward choice`
(r1kit.tasks.choice)."""

from __future__ import annotations

import json
import warnings

import pytest
from conftest import REPO, one_grpo_step_on, write_jsonl

from r1kit.cli import main
from r1kit.config import check_inputs, load_recipe
from r1kit.errors import R1kitError
from r1kit.rewards.combined import CombinedReward
from r1kit.tasks.choice import ChoiceTask, choice_equal, choice_vote_key, read_letter

MMLU = {"question": "What is 2 + 2?", "choices": ["3", "4", "5", "6"], "answer": 1,
        "subject": "arithmetic"}
MMLU_PRO = {"question": "Which is a noble gas?", "options": ["N", "O", "Ne", "H", "C"],
            "answer": "C", "category": "chemistry"}
ARC = {"question": "Which is largest?", "answerKey": "4",
       "choices": {"text": ["ant", "cat", "dog", "horse"], "label": ["1", "2", "3", "4"]}}
TEXT_ANSWER = {"question": "Capital of France?", "choices": ["Rome", "Paris", "Oslo"],
               "answer": "Paris"}
LISTED = {"question": "Pick the even number.\nA) 3\nB) 5\nC) 8\nD) 9", "answer": "C"}
GPQA = {"Question": "Which particle has no charge?", "Correct Answer": "neutron",
        "Incorrect Answer 1": "proton", "Incorrect Answer 2": "electron",
        "Incorrect Answer 3": "positron", "High-level domain": "Physics"}


def _file(tmp_path, rows, name="choice.jsonl"):
    return write_jsonl(tmp_path / name, rows)


def _boxed(letter: str) -> str:
    return f"<think> let me see </think> <answer> \\boxed{{{letter}}} </answer>"


def test_each_layout_gives_the_right_letter_and_lists_the_options(tmp_path):
    mmlu, pro, text, listed = ChoiceTask(_file(tmp_path, [MMLU, MMLU_PRO, TEXT_ANSWER,
                                                          LISTED])).train_examples()
    assert (mmlu.answer, pro.answer, text.answer, listed.answer) == ("B", "C", "B", "C")
    assert mmlu.question.startswith("What is 2 + 2?\n\nA) 3\nB) 4\nC) 5\nD) 6\n\nPlease reason")
    assert mmlu.question.endswith("letter of your final answer within \\boxed{}.")
    assert "E) C" in pro.question and pro.meta["count"] == 5
    assert listed.question.startswith(LISTED["question"] + "\nPlease reason")
    assert (mmlu.meta["subject"], pro.meta["subject"]) == ("arithmetic", "chemistry")
    (arc,) = ChoiceTask(_file(tmp_path, [ARC], "arc.jsonl")).train_examples()  # answerKey
    assert arc.answer == "D" and "D) horse" in arc.question
    # MMLU's CSV columns A-D; an index column read as floats (a NaN elsewhere in it)
    csv = {"question": "2 + 3?", "A": "4", "B": "5", "C": "6", "D": "7", "answer": "B"}
    floats = {**MMLU, "answer": 1.0}
    a, b = ChoiceTask(_file(tmp_path, [csv, floats], "csv.jsonl")).train_examples()
    assert (a.answer, b.answer, a.meta["count"]) == ("B", "B", 4) and "D) 7" in a.question
    assert listed.meta["count"] == 4  # the options its question lists
    # a number that indexes one option and is another's text ([1, 2, 3, 4], answer 2): read
    # as the index, as MMLU's column is, and said (it was silent); MMLU's own rows say nothing
    either = {"question": "1 + 1?", "choices": [1, 2, 3, 4], "answer": 2}
    with pytest.warns(UserWarning, match=r"either.jsonl: 1 of 2 rows give the answer as a "
                      r"number that is also another option's text \(first: .*either.jsonl:1"):
        c, _ = ChoiceTask(_file(tmp_path, [either, MMLU], "either.jsonl")).train_examples()
    assert c.answer == "C"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ChoiceTask(_file(tmp_path, [MMLU, floats, {**either, "answer": "2"}],
                         "plain.jsonl")).train_examples()

    # GPQA: the right option (listed first in the data) moves to a place drawn from the
    # question, the same each time the file is read
    path = _file(tmp_path, [GPQA], "gpqa.jsonl")
    (gpqa,) = ChoiceTask(path).train_examples()
    assert f"{gpqa.answer}) neutron" in gpqa.question
    assert ChoiceTask(path).train_examples()[0].question == gpqa.question
    assert gpqa.meta["subject"] == "Physics"
    others = [{**GPQA, "Question": f"Which particle has no charge? ({i})"} for i in range(12)]
    letters = {e.answer for e in ChoiceTask(_file(tmp_path, others, "g.jsonl")).train_examples()}
    assert len(letters) > 1  # not always where the data put it


def test_a_final_answer_names_a_letter():
    for text, letter in [("C", "C"), ("(C)", "C"), ("c", "C"), ("C) 4.2", "C"), ("C.", "C"),
                         ("\\text{C}", "C"), ("\\textbf{(B)}", "B"), ("**D**", "D"),
                         ("The answer is B.", "B"), ("Answer: D", "D"),
                         ("$\\text{A}$", "A"), ("the correct option is (A)", "A"),
                         ("\\textit{B}", "B"), ("(B)\\ \\text{neutron}", "B"), ("b)", "B"),
                         ("the answer is b", "B"),
                         # the stated answer, not a later mention of another option
                         ("The answer is C. Option A was tempting but wrong.", "C"),
                         ("Answer: B. Choice D is out since it is charged.", "B"),
                         ("The answer is B. Answer C is wrong.", "B"),
                         ("Answer: B\nI double-checked option C too.", "B")]:
        assert read_letter(text, 4) == letter, text
    for text in ["E", "42", "I think so", "neutron", "", "A or C", "option (A)",
                 "A neutron has no charge.", "Answer: A neutron", "In answer: A neutron."]:
        assert read_letter(text, 4) is None, text
    for text in ["Answer: I am not sure", "Answer: I think it is B"]:  # not option I
        assert read_letter(text, 10) is None, text
    assert read_letter("E", 5) == "E"
    assert choice_vote_key("\\boxed{(B)}".removeprefix("\\boxed{").rstrip("}")) == "B"
    assert choice_equal("(B)", "Answer: B") and not choice_equal("B", "C")
    assert not choice_equal("neutron", "neutron")  # no letter: not an answer to vote for


def test_the_grpo_reward_scores_the_letter(tmp_path):
    """Right letter 1, wrong 0; an answer only inside the reasoning, a letter the question
    does not have, or two different boxed letters (a hedge) score no accuracy."""
    task = ChoiceTask(_file(tmp_path, [MMLU]))
    (ex,) = task.train_examples()
    texts = [_boxed("B"), _boxed("\\text{(B)}"), _boxed("A"),
             "<think> it is \\boxed{B} </think> <answer> no idea </answer>",
             _boxed("E"),
             "<think> hmm </think> <answer> \\boxed{A} or \\boxed{B} </answer>",
             "<think> 2 + 2 = 4 </think>\nThe answer is (B).",
             "<think> ok </think> <answer> 4 </answer>",
             # a box of a worked-out value is not a second answer; the same letter twice is one
             "<think> 2 + 2 </think> <answer> \\boxed{4}, which is option \\boxed{B} </answer>",
             "<think> x </think> <answer> \\boxed{B} \\boxed{\\textit{B}} </answer>"]
    scores = CombinedReward(task).score(texts, [ex] * len(texts))
    assert [p["accuracy"] for _, p in scores] == [1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 1.0,
                                                  1.0]
    assert scores[5][1]["hedged"] == 1.0
    assert scores[0][0] == 2.0  # + format


def test_cons_at_k_votes_by_letter(tmp_path, monkeypatch):
    import torch

    from r1kit.eval import core
    from r1kit.eval.core import _Verdicts, evaluate
    from r1kit.rollout import Rollouts

    task = ChoiceTask(None, _file(tmp_path, [MMLU, MMLU_PRO]))
    examples = task.test_examples()
    # question 1: B written three ways outvotes A twice; question 2: A twice beats C once
    texts = [_boxed("B"), _boxed("(B)"), "<think>x</think> Answer: B", _boxed("A"), _boxed("A"),
             _boxed("A"), _boxed("A"), _boxed("C"), _boxed("D"), _boxed("E")]

    def canned(model, tokenizer, task, examples, prompts, **kw):
        n = len(examples) * kw["k"]
        ro = Rollouts(prompt_ids=[[1]] * len(examples), completion_ids=torch.ones(n, 1).long(),
                      completion_mask=torch.ones(n, 1), logprobs=None,
                      stopped=torch.ones(n, dtype=torch.bool), group_size=kw["k"])
        return ro, texts, _Verdicts(task).score(texts, [examples[i // kw["k"]]
                                                        for i in range(n)])

    monkeypatch.setattr(core, "sample_and_verify", canned)
    res = evaluate(torch.nn.Linear(1, 1), None, task, examples, [[1], [1]], k=5,
                   temperature=0.6, top_p=0.95, max_new_tokens=4, stop_ids=[0], seed=0)
    assert res.pass_at_1 == pytest.approx((3 / 5 + 1 / 5) / 2)
    assert res.cons_at_k == pytest.approx(0.5)  # the first question's vote is right
    assert res.by_subject == {"arithmetic": pytest.approx(0.6), "chemistry": pytest.approx(0.2)}


def test_bad_rows_and_settings_are_found_before_any_stage(tmp_path):
    cases = [({"question": "q", "choices": ["a", "b"], "answer": 2}, "not an option's index"),
             ({"question": "q", "choices": ["a", "b"], "answer": "maybe"}, "not an option"),
             ({"question": "q", "choices": "a, b", "answer": "A"}, "not a list of options"),
             ({"question": "q", "choices": ["a"], "answer": "A"}, "has 1 option\n"),
             ({"question": "q", "answer": "B"}, "no options: the row has no choices or options"),
             ({"question": "q\nA) 1\nB) 2", "answer": "C"}, (r"one of the options the "
                                                         r"question lists \(A-B\)")),
             ({"question": "q", "choices": ["a", " "], "answer": "A"}, "option 2, is empty"),
             ({"question": "q", "choices": ["a", "a"], "answer": "A"}, ("options A and B are "
                                                                       "the same text")),
             ({**GPQA, "Correct Answer": None}, "'Correct Answer' is null, not an option"),
             ({"prompt": "q", "choices": ["a", "b"], "answer": "A"}, "no field 'question'")]
    for i, (row, message) in enumerate(cases):
        with pytest.raises(R1kitError, match=message):
            ChoiceTask(_file(tmp_path, [MMLU, row], f"bad{i}.jsonl"))
    with pytest.raises(R1kitError, match=r"bad0.jsonl:2"):
        ChoiceTask(tmp_path / "bad0.jsonl")

    recipe = str(REPO / "recipes" / "zero-tiny.toml")
    with pytest.raises(R1kitError, match="task = 'choice' in a grpo stage needs a train_file"):
        load_recipe(recipe, ['stages.zero.task="choice"'])
    with pytest.raises(R1kitError, match="choices_field.*is for task = 'choice'"):
        load_recipe(recipe, ['stages.zero.choices_field="options"'])
    bad = _file(tmp_path, [MMLU, {"question": "q", "choices": ["a", "b"], "answer": 5}],
                "late.jsonl")
    with pytest.raises(R1kitError, match="late.jsonl:2"):
        check_inputs(load_recipe(recipe, ['stages.zero.task="choice"',
                                          f"stages.zero.train_file={json.dumps(str(bad))}"]))


def test_a_grpo_stage_trains_and_evaluates_on_choice(bpe_checkpoint, tmp_path):
    data = _file(tmp_path, [MMLU, MMLU_PRO, TEXT_ANSWER, LISTED])
    metrics, evals = one_grpo_step_on(bpe_checkpoint, tmp_path / "run", "choice", data, 2)
    assert len(metrics) == 1 and "reward/accuracy" in metrics[0]
    assert [e["benchmark"] for e in evals] == ["choice/main", "choice/main"]
    assert evals[0]["n"] == 4 and evals[0]["cons@2"] is not None


def test_r1kit_eval_reads_a_multiple_choice_file(bpe_checkpoint, tmp_path, capsys):
    """--bench FILE with choices (or GPQA's columns) is read as multiple choice; the random
    model's samples are scored (its pass@1 is whatever it is: the check is that the file is
    read as questions with options, and the results recorded)."""
    data = _file(tmp_path, [MMLU, MMLU_PRO, ARC | {"answer": "4"}], "mc.jsonl")
    gpqa = _file(tmp_path, [GPQA], "gpqa.jsonl")
    out = tmp_path / "res.json"
    assert main(["eval", "--model", str(bpe_checkpoint), "--bench", f"{data},{gpqa}",
                 "--k", "2", "--max-new-tokens", "4", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"{data}: multiple-choice questions (3)" in printed
    results = json.loads(out.read_text())["results"]
    assert [r["n"] for r in results] == [3, 1]
    assert all(r["cons@2"] is not None for r in results)
    assert "A) 3\nB) 4" in results[0]["samples"][0]["question"]
    # --choices-field applies to the files that have that field; a math file stays math
    math = _file(tmp_path, [{"question": "What is 2 + 2?", "answer": "4"}], "math.jsonl")
    mmlu = _file(tmp_path, [MMLU, TEXT_ANSWER], "mmlu.jsonl")
    assert main(["eval", "--model", str(bpe_checkpoint), "--bench", f"{math},{mmlu}",
                 "--choices-field", "choices", "--k", "1", "--max-new-tokens", "4"]) == 0
    printed = capsys.readouterr().out
    assert f"{mmlu}: multiple-choice" in printed and f"{math}: math problems (1)" in printed
    # ... and a file with options of the usual names beside it stays multiple choice; a
    # field no file has is an error, not a silent fall back to math
    own = _file(tmp_path, [{"question": "2 + 2?", "opts": ["3", "4"], "answer": 1}], "own.jsonl")
    assert main(["eval", "--model", str(bpe_checkpoint), "--bench", f"{own},{data}",
                 "--choices-field", "opts", "--k", "1", "--max-new-tokens", "4"]) == 0
    printed = capsys.readouterr().out
    assert f"{own}: multiple-choice" in printed and f"{data}: multiple-choice" in printed
    assert main(["eval", "--model", str(bpe_checkpoint), "--bench", str(data),
                 "--choices-field", "optoins"]) == 2
    assert "--choices-field 'optoins': no file of --bench has that field" in \
        capsys.readouterr().err
    # a file with options in some rows is read as multiple choice, and says so where a row
    # without them stops it
    mixed = _file(tmp_path, [{"question": "What is 2 + 2?", "answer": "4"}, MMLU], "mixed.jsonl")
    assert main(["eval", "--model", str(bpe_checkpoint), "--bench", str(mixed)]) == 2
    err = capsys.readouterr().err
    assert "mixed.jsonl:1: no options" in err and "as multiple-choice questions" in err


def test_r1kit_score_choice(tmp_path, capsys):
    rows = [{**MMLU, "completion": _boxed("B")}, {**MMLU, "completion": _boxed("A")},
            {**LISTED, "completion": "<think>x</think> Answer: C"},
            {**MMLU_PRO, "completion": "<think>x</think> \\boxed{C}, or \\boxed{E}"}]
    src = _file(tmp_path, rows, "scored.jsonl")
    out = tmp_path / "out.jsonl"
    assert main(["score", "--reward", "choice", "--input", str(src), "--output", str(out)]) == 0
    scored = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["reward"] for r in scored] == [1.0, 0.0, 1.0, 0.0]
    assert [r["parts"]["answer"] for r in scored] == ["B", "A", "C", None]
    assert scored[3]["parts"]["hedged"] == 1.0
    # GPQA's order comes from the question, read as the task reads it: question_field names it
    gpqa = [{**GPQA, "Pre-Revision Question": f"Which? ({i})"} for i in range(8)]
    task = ChoiceTask(_file(tmp_path, gpqa, "g.jsonl"), question_field="Pre-Revision Question")
    letters = [e.answer for e in task.train_examples()]
    rows = [{**row, "completion": _boxed(letter)} for row, letter in zip(gpqa, letters)]
    src = _file(tmp_path, rows, "gpqa_scored.jsonl")
    assert main(["score", "--reward", "choice", "--input", str(src), "--output", str(out),
                 "--set", "question_field=Pre-Revision Question"]) == 0
    assert [json.loads(line)["reward"] for line in out.read_text().splitlines()] == [1.0] * 8
    bad = _file(tmp_path, [{"completion": "x", "choices": ["a", "b"], "answer": 3}], "b.jsonl")
    assert main(["score", "--reward", "choice", "--input", str(bad)]) == 2
    assert "b.jsonl:1: field 'answer' is 3, not an option's index" in capsys.readouterr().err

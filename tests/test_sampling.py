"""Rejection sampling: readability filters, the cold-start rewrite, non-reasoning rows."""

from __future__ import annotations

import pytest

from r1kit.rewards.rule import extract_answer, format_reward
from r1kit.sampling import (
    FILTERS,
    code_in_cot,
    empty_thought,
    general_rows,
    long_paragraph,
    mixed_language,
    repetition,
    rewrite_tiny,
)
from r1kit.tasks import general
from r1kit.tasks.arithmetic import ArithmeticTask
from r1kit.tasks.base import Example


def test_mixed_language():
    assert mixed_language("7 plus 2=9. 9 minus 5=4.", language="en") is None
    assert mixed_language("7加2=9. 9减5=4.", language="zh") is None
    assert mixed_language("7 plus 2=9. 9减5=4.", language="en") == "1 words not in en"
    assert mixed_language("7加2=9.", language="en") is not None  # all Chinese, target English
    assert mixed_language("7+2=9.", language="en") is None  # no words: nothing mixed
    assert mixed_language("café", language="en") is None  # Latin letters count as English


def test_long_paragraph():
    short = "a" * 100 + "\n\n" + "b" * 100
    assert long_paragraph(short, max_paragraph_chars=150) is None
    assert long_paragraph(short.replace("\n\n", " "), max_paragraph_chars=150) is not None
    assert long_paragraph("", max_paragraph_chars=1) is None


def test_code_in_cot():
    assert code_in_cot("7 plus 2=9.") is None
    assert code_in_cot("let me compute\n```python\nprint(7+2)\n```") == "a fenced code block"
    assert code_in_cot("let me compute\n~~~\n7+2\n~~~") == "a fenced code block"
    assert code_in_cot("about 7~~~9") is None
    assert code_in_cot("first\ndef f(x):\n    return x") == "a line of code"
    assert code_in_cot("for i in range(3):\n  pass") == "a line of code"
    assert code_in_cot("I will print the answer") is None
    # English lines that begin as Python does are not code
    for text in ("We check\nfor every n we have:\n n=1 ok", "Consider the\nclass of all integers.",
                 "This is\nimport ant to note.", "so\nfrom here on import nothing"):
        assert code_in_cot(text) is None, text
    for text in ("x\nimport numpy as np", "x\nclass Solver:", "x\nfrom math import gcd",
                 "x\nfor a, b in pairs:"):
        assert code_in_cot(text) == "a line of code", text


def test_repetition():
    assert repetition("7 plus 2=9. wait, let me check. 7 plus 2=9.") is None
    assert repetition("7 plus 2=9. " * 4, max_repeats=3) is not None
    assert repetition("7加3=10。" * 5) is not None  # no space after 。
    assert repetition("wait, again\n" * 4) is not None  # lines without end punctuation
    assert repetition("7加3=10。8加3=11。9加3=12。") is None
    assert repetition("7 plus 2=9. " * 3, max_repeats=3) is None
    assert repetition("") is None


def test_the_filters_take_the_stage_settings():
    from r1kit.config import SampleConfig
    from r1kit.sampling import rejected_by

    cot = "7 plus 2=9. " * 4
    assert rejected_by(cot, SampleConfig(model="m"), "en") == "repetition"
    assert rejected_by(cot, SampleConfig(model="m", max_repeats=4), "en") is None
    long = "x" * 100
    assert rejected_by(long, SampleConfig(model="m", max_paragraph_chars=99), "en") == \
        "long_paragraph"
    assert rejected_by(long, SampleConfig(model="m", filters=["repetition"],
                                          max_paragraph_chars=99), "en") is None


def test_empty_thought_is_a_filter_to_ask_for():
    from r1kit.config import SampleConfig
    from r1kit.rewards.language import chain_of_thought
    from r1kit.sampling import rejected_by

    for text in ("<think></think> The answer is \\boxed{4}.", "<think>\n \n</think>4",
                 "<think>...</think>4"):
        assert empty_thought(chain_of_thought(text)) == "an empty chain of thought", text
    assert empty_thought(chain_of_thought("<think>2+2=4</think>4")) is None
    cot = chain_of_thought("<think></think>4")
    assert rejected_by(cot, SampleConfig(model="m"), "en") is None  # not by default
    assert rejected_by(cot, SampleConfig(model="m", filters=["empty_thought"]), "en") == \
        "empty_thought"


def test_every_filter_is_registered_by_name():
    assert FILTERS == {"mixed_language": mixed_language, "long_paragraph": long_paragraph,
                       "code_in_cot": code_in_cot, "repetition": repetition,
                       "empty_thought": empty_thought}


def test_rewrite_tiny_is_english_with_a_summary_the_verifier_accepts():
    task = ArithmeticTask(seed=0)
    out = rewrite_tiny("<think> 7加2=9. 9 minus 5=4. </think> <answer> 4 </answer>", "4")
    assert out == "<think> 7 plus 2=9. 9 minus 5=4. </think> <answer> The answer is 4. </answer>"
    assert format_reward(out) == 1.0
    assert task.verify(extract_answer(out), Example("", "4")) == 1.0
    assert task.verify("The answer is 5.", Example("", "4")) == 0.0
    assert task.verify("the answer is 4", Example("", "4")) == 1.0
    assert task.verify("4 or 5", Example("", "4")) == 0.0
    assert mixed_language(out.split("</think>")[0], language="en") is None


@pytest.mark.parametrize("n", [3, 30])
def test_general_rows_are_good_answers_without_reasoning(n):
    rows = general_rows(n, seed=0)
    assert len(rows) == n
    for r in rows:
        assert r["type"] == "general" and r["response"].startswith("<think> </think>")
        harmful = any(h in r["prompt"] for h in general.HARMFUL)
        if harmful:
            assert "Sure." not in r["response"]  # harmful requests are refused


def test_read_untagged_keeps_right_samples_without_tags(tmp_path, monkeypatch, bpe_checkpoint):
    """A sample stage with read_untagged = true reads a response without tags whole, as the
    grpo stage does: a right one passes the format check (it has no tags to be held to);
    without the setting it has no answer and is rejected."""
    import json

    import torch

    from r1kit import sampling
    from r1kit.config import SampleConfig
    from r1kit.eval.core import _Verdicts

    data = tmp_path / "q.jsonl"
    data.write_text(json.dumps({"question": "What is 2 + 2?", "answer": "4"}) + "\n")
    texts = ["So it is \\boxed{4}.", "<think> 2 + 2 </think> <answer> 4 </answer>"]

    def canned(model, tokenizer, task, examples, prompts, **kw):
        rows = [examples[i // kw["k"]] for i in range(len(examples) * kw["k"])]
        return None, texts, _Verdicts(task).score(texts, rows)

    monkeypatch.setattr(sampling, "sample_and_verify", canned)
    kept = {}
    for flag in (False, True):
        cfg = SampleConfig(model="m", task="math", train_file=str(data), samples_per_prompt=2,
                           keep_per_prompt=2, read_untagged=flag)
        out = tmp_path / str(flag)
        out.mkdir()
        summary = sampling.run_sample(cfg, bpe_checkpoint, out, 0, torch.device("cpu"),
                                      torch.float32, log=lambda _: None)
        kept[flag] = [json.loads(x)["response"] for x in (out / "data.jsonl").open()]
        assert summary["correct"] == (2 if flag else 1)
    assert {k: sorted(v) for k, v in kept.items()} == {False: texts[1:], True: sorted(texts)}

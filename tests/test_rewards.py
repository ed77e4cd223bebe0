"""Tests of the R1-Zero rule rewards (r1kit.rewards) and the math verifier.

The reward is the whole training signal of R1-Zero, so each rule of the documented format and
extraction contract gets its own case: a reward that is too lenient teaches the policy to game
it, one that is too strict hides right answers.
"""

from __future__ import annotations

import pytest

from r1kit.rewards import RuleReward, extract_answer, format_reward, last_boxed
from r1kit.tasks.arithmetic import ArithmeticTask, WorldConfig
from r1kit.tasks.base import Example

# ----- format_reward -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "response",
    [
        "<think>7 + 3 = 10</think><answer>10</answer>",
        "<think>\n7 + 3 = 10\n</think>\n<answer>\n10\n</answer>",
        "  \n<think>a</think>   \n\n  <answer>b</answer>\n\n  ",  # whitespace around is fine
        "<think></think><answer></answer>",  # empty blocks still have the format
        "<think>multi\nline\nreasoning</think> <answer>x</answer>",
    ],
)
def test_format_reward_well_formed(response: str) -> None:
    assert format_reward(response) == 1.0


@pytest.mark.parametrize(
    "response",
    [
        "",
        "10",
        "<think>a</think>",  # no answer block
        "<answer>10</answer>",  # no think block
        "<think>a<answer>10</answer>",  # </think> missing
        "<think>a</think><answer>10",  # </answer> missing (a truncated response)
        "<think>a</think><think>b</think><answer>10</answer>",  # two think blocks
        "<think>a</think><answer>1</answer><answer>2</answer>",  # two answer blocks
        "<think>a</think><answer>10</answer> and more",  # text after </answer>
        "Sure! <think>a</think><answer>10</answer>",  # text before <think>
        "<think>a</think> so: <answer>10</answer>",  # text between the blocks
        "<answer>10</answer><think>a</think>",  # answer before think
        "<think>a<think>b</think></think><answer>10</answer>",  # nested think
        "<think>a <answer>9</answer></think><answer>10</answer>",  # answer nested in think
        "<think>a</think><answer><think>b</think>10</answer>",  # think nested in answer
        "<THINK>a</THINK><ANSWER>10</ANSWER>",  # tags are case-sensitive
    ],
)
def test_format_reward_malformed(response: str) -> None:
    assert format_reward(response) == 0.0


# ----- extract_answer ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "response,expected",
    [
        ("<think>7 + 3 = 10</think><answer>10</answer>", "10"),
        ("<think>x</think><answer>  \n 10 \n</answer>", "10"),  # stripped
        # the last box inside the answer wins
        ("<think>x</think><answer>first \\boxed{1}, finally \\boxed{7}</answer>", "7"),
        # braces inside the box are balanced, not cut at the first '}'
        ("<think>x</think><answer>\\boxed{\\frac{1}{2}}</answer>", "\\frac{1}{2}"),
        ("<think>x</think><answer>\\boxed{\\sqrt{\\frac{a}{b}}} done</answer>",
         "\\sqrt{\\frac{a}{b}}"),
        # a box in the reasoning does not beat the answer tag
        ("<think>maybe \\boxed{3}</think><answer>4</answer>", "4"),
        # no <answer> tag: the text after </think>
        ("<think>7 + 3 = 10</think> 10 ", "10"),
        ("<think>x</think> so it is \\boxed{12}.", "12"),
        # GSM8K's own marker
        ("<think>x</think><answer>#### 42</answer>", "42"),
        ("<think>x</think><answer>####42</answer>", "42"),
    ],
)
def test_extract_answer(response: str, expected: str) -> None:
    assert extract_answer(response) == expected


@pytest.mark.parametrize(
    "response",
    [
        "",
        "10",  # no tags at all: nothing marks it as the final answer
        "<think>the answer is 10</think>",  # only inside the reasoning, nothing after
        "<think>so \\boxed{10}</think>",
        "<think>so \\boxed{10}",  # unterminated reasoning
        "<think>x</think><answer>   </answer>",  # empty answer
        "<think>x</think><answer>\\boxed{}</answer>",  # empty box
    ],
)
def test_extract_answer_none(response: str) -> None:
    assert extract_answer(response) is None


def test_answer_tag_only_inside_think_is_not_an_answer() -> None:
    # The module docs: "An answer that appears only inside <think> is not an answer", and
    # extract_answer returns None "when it gives none outside the reasoning". An <answer> tag
    # written inside the reasoning is such an answer, so it must not be extracted, and
    # RuleReward must not pay accuracy for it.
    response = "<think>I guess <answer>5</answer> but let me think more</think>"
    assert extract_answer(response) is None
    task = ArithmeticTask(WorldConfig(train_pool=50, test_size=10, level_test_size=5))
    example = Example(question="What is 2 + 3?", answer="5", level=1)
    assert RuleReward(task)(response, example) == (0.0, {"accuracy": 0.0, "format": 0.0, "hedged": 0.0})


def test_last_boxed() -> None:
    assert last_boxed("\\boxed{1} \\fbox{2}") == "2"
    assert last_boxed("\\fbox{1} \\boxed{{2}}") == "{2}"
    assert last_boxed("no box") is None
    assert last_boxed("\\boxed{unclosed") is None


# ----- RuleReward with the arithmetic task ---------------------------------------------------


@pytest.fixture(scope="module")
def task() -> ArithmeticTask:
    # small pools keep construction fast; the verifier does not depend on them
    return ArithmeticTask(WorldConfig(train_pool=50, test_size=10, level_test_size=5))


@pytest.fixture(scope="module")
def example(task: ArithmeticTask) -> Example:
    ex = task.test_examples()[0]
    assert ex.answer.lstrip("-").isdigit()
    return ex


def _wrong(ex: Example) -> str:
    return str(int(ex.answer) + 1)


def test_rule_reward_right_and_well_formatted(task: ArithmeticTask, example: Example) -> None:
    response = f"<think>working it out</think>\n<answer>{example.answer}</answer>"
    assert RuleReward(task)(response, example) == (2.0, {"accuracy": 1.0, "format": 1.0,
                                                          "hedged": 0.0})


def test_rule_reward_wrong_but_well_formatted(task: ArithmeticTask, example: Example) -> None:
    response = f"<think>working it out</think>\n<answer>{_wrong(example)}</answer>"
    assert RuleReward(task)(response, example) == (1.0, {"accuracy": 0.0, "format": 1.0, "hedged": 0.0})


def test_rule_reward_right_but_badly_formatted(task: ArithmeticTask, example: Example) -> None:
    # no <answer> tag: the text after </think> is the answer, right, but the format fails
    response = f"<think>working it out</think> {example.answer}"
    assert RuleReward(task)(response, example) == (1.0, {"accuracy": 1.0, "format": 0.0, "hedged": 0.0})
    # trailing text after </answer> also breaks the format but not the answer
    response = f"<think>w</think><answer>{example.answer}</answer> hope that helps"
    assert RuleReward(task)(response, example) == (1.0, {"accuracy": 1.0, "format": 0.0, "hedged": 0.0})


def test_rule_reward_wrong_and_badly_formatted(task: ArithmeticTask, example: Example) -> None:
    response = f"<think>working</think> {_wrong(example)}"
    assert RuleReward(task)(response, example) == (0.0, {"accuracy": 0.0, "format": 0.0, "hedged": 0.0})


@pytest.mark.parametrize(
    "response",
    [
        "I don't know",  # no answer at all: verify must not be called with None
        "<think>the answer is {a}</think>",  # right number, but only in the reasoning
        "<think>x</think><answer>ten</answer>",  # not an integer: 0, not an exception
        "<think>x</think><answer>{a}.5</answer>",
    ],
)
def test_rule_reward_no_accuracy(task: ArithmeticTask, example: Example, response: str) -> None:
    score, parts = RuleReward(task)(response.format(a=example.answer), example)
    assert parts["accuracy"] == 0.0
    assert score == parts["format"]


def test_rule_reward_boxed_answer(task: ArithmeticTask, example: Example) -> None:
    response = f"<think>w</think><answer>The result is \\boxed{{{example.answer}}}.</answer>"
    assert RuleReward(task)(response, example) == (2.0, {"accuracy": 1.0, "format": 1.0,
                                                          "hedged": 0.0})


def test_rule_reward_weights(task: ArithmeticTask, example: Example) -> None:
    reward = RuleReward(task, accuracy_weight=2.0, format_weight=0.5)
    right = f"<think>w</think><answer>{example.answer}</answer>"
    wrong = f"<think>w</think><answer>{_wrong(example)}</answer>"
    assert reward(right, example) == (2.5, {"accuracy": 1.0, "format": 1.0, "hedged": 0.0})
    assert reward(wrong, example) == (0.5, {"accuracy": 0.0, "format": 1.0, "hedged": 0.0})


def test_arithmetic_verify(task: ArithmeticTask) -> None:
    ex = Example(question="What is 9 - 2?", answer="7", level=1)
    assert task.verify("7", ex) == 1.0
    assert task.verify(" 7\n", ex) == 1.0
    assert task.verify("8", ex) == 0.0
    assert task.verify("7.0", ex) == 0.0  # exact integers only
    assert task.verify("seven", ex) == 0.0
    assert task.verify("", ex) == 0.0


# ----- math_equal (math-verify) --------------------------------------------------------------


def test_math_equal() -> None:
    from r1kit.tasks.math import math_equal

    assert math_equal("0.5", "\\frac{1}{2}") is True
    assert math_equal("27.0", "27") is True
    assert math_equal("3", "4") is False


def test_rule_reward_reads_answers_as_every_scoring_path_does() -> None:
    """RuleReward (public) pays nothing for a hedge, as the GRPO reward does; an empty last
    box does not hide the answer boxed before it."""
    task = ArithmeticTask(WorldConfig(train_pool=50, test_size=10, level_test_size=5))
    example = Example(question="What is 2 + 1?", answer="3", level=1)
    hedge = "<think>w</think><answer>\\boxed{2} or \\boxed{3}</answer>"
    assert RuleReward(task)(hedge, example) == (1.0, {"accuracy": 0.0, "format": 1.0,
                                                      "hedged": 1.0})
    empty_last = "<think>w</think><answer>\\boxed{3} \\boxed{}</answer>"
    assert extract_answer(empty_last) == "3"
    assert RuleReward(task)(empty_last, example) == (2.0, {"accuracy": 1.0, "format": 1.0,
                                                           "hedged": 0.0})


def test_format_reward_styles_and_which_a_stage_takes() -> None:
    """"answer": the R1-Zero template's two tags; "think": R1's <think>…</think> then a
    summary (what the cold-start data and the released models write). A stage's "auto" holds
    responses to <answer> tags only where its prompt asks for them."""
    from r1kit.rewards.rule import format_style

    r1_style = "<think>\n2 + 1 = 3\n</think>\nThe answer is \\boxed{3}."
    zero_style = "<think> 2 + 1 = 3 </think> <answer> \\boxed{3} </answer>"
    assert format_reward(r1_style) == 0.0 and format_reward(zero_style) == 1.0
    assert format_reward(r1_style, "think") == 1.0 and format_reward(zero_style, "think") == 1.0
    for bad in ("<think> a </think>", "<think> a </think> <think> b </think> c",
                "no tags at all", "<think> a", "x <think> a </think> b"):
        assert format_reward(bad, "think") == 0.0, bad
    assert format_style("auto", "r1-zero") == "answer"
    assert format_style("auto", "chat", "r1kit") == "answer"  # r1kit's system instruction
    assert format_style("auto", "chat", "") == "think"  # R1's way: no system prompt
    assert format_style("auto", "none") == "think"
    assert format_style("answer", "chat", "") == "answer"


def test_read_untagged_reads_a_response_without_tags_whole(tmp_path) -> None:
    """R1's rule: a response without <think>, </think> or <answer> has no answer. A stage's
    `read_untagged = true` (open-r1's way) reads it whole, through every scoring path of the
    stage's task; tagged responses are read as before, and hedging still scores 0."""
    import json

    from conftest import REPO

    from r1kit.config import load_recipe
    from r1kit.rewards.combined import CombinedReward
    from r1kit.tasks import make_task

    data = tmp_path / "m.jsonl"
    data.write_text(json.dumps({"question": "What is 2 + 1?", "answer": "3"}) + "\n")
    recipe = str(REPO / "recipes" / "zero-tiny.toml")
    sets = ['stages.zero.task="math"', f"stages.zero.train_file={json.dumps(str(data))}"]
    texts = ["So it is \\boxed{3}.", "3", "<think> \\boxed{3} </think> <answer> 4 </answer>",
             "<think> \\boxed{3}", "\\boxed{3} or \\boxed{4}"]
    for flag, expected in ((False, [0.0] * 5), (True, [1.0, 1.0, 0.0, 0.0, 0.0])):
        cfg = load_recipe(recipe, [*sets, f"stages.zero.read_untagged={str(flag).lower()}"]
                          ).stages["zero"]
        task = make_task(cfg, 0)
        (ex,) = task.train_examples()
        scores = CombinedReward(task).score(texts, [ex] * len(texts))
        assert [p["accuracy"] for _, p in scores] == expected, flag
        assert RuleReward(task)(texts[0], ex)[1]["accuracy"] == expected[0]
    assert scores[4][1]["hedged"] == 1.0

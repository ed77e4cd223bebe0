"""Tests of the language-consistency reward (R1-SPEC eq. 7, r1kit.rewards.language).

The tiny world writes its working either with + and - or with the Chinese operation words
加/减, so these cases use exactly that mix: digits and symbols must not count as words, or
the reward could not tell the two apart.
"""

from __future__ import annotations

import itertools

import pytest

from r1kit.rewards.language import (
    chain_of_thought,
    count_words,
    detect_language,
    language_reward,
)


@pytest.mark.parametrize(
    "text,en,zh,other",
    [
        ("", 0, 0, 0),
        ("8+2=10. 10-3=7!", 0, 0, 0),  # digits, symbols, punctuation: no language
        ("8加2=10. 10减3=7.", 0, 2, 0),  # each ideograph is one word
        ("wait, let me check.", 0 + 4, 0, 0),
        ("don't stop", 2, 0, 0),  # an apostrophe inside a word
        ("我们计算", 0, 4, 0),  # no spaces in Chinese: one word per character
        ("xy2ab", 2, 0, 0),  # a digit splits a Latin run
        ("x2y", 0, 0, 0),  # single letters against a digit or operator: variables
        ("首先，\\frac{1}{2}+x=y", 0, 2, 0),  # LaTeX commands and variables are no words
        ("设 $a^2 + b^2 = c^2$，所以 f(x) = 2x", 0, 3, 0),  # nor is LaTeX math
        ("so \\(x\\) is a number", 4, 0, 0),
        ("Ｈｅｌｌｏ world", 2, 0, 0),  # fullwidth Latin is Latin
        ("café naïve", 2, 0, 0),  # accented Latin letters are Latin
        ("Привет мир", 0, 0, 2),  # another script: counted, but neither en nor zh
        ("\u3400\u4dbf\u4e00\u9fff\uf900\ufaff\U00020000\U0002fa1f", 0, 8, 0),  # block edges
        ("「你好」，world！", 1, 2, 0),  # CJK punctuation is not a word
    ],
)
def test_count_words(text: str, en: int, zh: int, other: int) -> None:
    assert count_words(text) == {"en": en, "zh": zh, "other": other}


def test_tiny_world_examples() -> None:
    chinese_op = "<think> 8加2=10. 10+2=12. </think><answer>12</answer>"
    score, parts = language_reward(chinese_op, "en")
    assert score == 0.0 and parts == {"language": 0.0, "target_words": 0.0, "words": 1.0}
    assert language_reward(chinese_op, "zh")[0] == 1.0

    english_check = "<think> 8+2=10. wait, let me check. 8+2=10. </think><answer>10</answer>"
    score, parts = language_reward(english_check, "en")
    assert score == 1.0 and parts == {"language": 1.0, "target_words": 4.0, "words": 4.0}
    assert language_reward(english_check, "zh")[0] == 0.0


def test_pure_none_and_mixed() -> None:
    assert language_reward("<think>we add the two numbers</think>")[0] == 1.0
    assert language_reward("<think>我们把两个数相加</think>")[0] == 0.0
    mixed, parts = language_reward("<think>we 加 the numbers</think>")
    assert 0.0 < mixed < 1.0
    assert mixed == pytest.approx(3 / 4) and parts["words"] == 4.0


def test_monotone_in_the_mix() -> None:
    # n words, k of them English and the rest Chinese characters: the score is k/n, strictly
    # increasing in k for English and strictly decreasing for Chinese.
    n = 6
    en_scores, zh_scores = [], []
    for k in range(n + 1):
        cot = " ".join(["add"] * k + ["加"] * (n - k))
        en_scores.append(language_reward(f"<think>{cot}</think>", "en")[0])
        zh_scores.append(language_reward(f"<think>{cot}</think>", "zh")[0])
    assert en_scores[0] == 0.0 and en_scores[-1] == 1.0
    assert all(a < b for a, b in itertools.pairwise(en_scores))
    assert all(a > b for a, b in itertools.pairwise(zh_scores))
    assert en_scores == pytest.approx([k / n for k in range(n + 1)])


def test_other_scripts_dilute_the_score() -> None:
    score, parts = language_reward("<think>so Привет</think>")
    assert score == 0.5 and parts["words"] == 2.0


@pytest.mark.parametrize("completion", ["<think> 1+1=2. </think><answer>2</answer>",
                                        "<think></think><answer>some words</answer>", ""])
def test_no_countable_words_scores_0(completion: str) -> None:
    score, parts = language_reward(completion)
    assert score == 0.0 and parts["words"] == 0.0


def test_only_the_chain_of_thought_counts() -> None:
    # Chinese in the answer does not count; English in the reasoning does.
    assert language_reward("<think>add them</think><answer>答案是 5</answer>")[0] == 1.0
    assert chain_of_thought("<think>a</think> x <think>b") == "a\nb"  # unterminated: to the end
    assert chain_of_thought("prefilled a</think><answer>b</answer>") == "prefilled a"
    assert chain_of_thought("no tags at all") == "no tags at all"
    assert language_reward("<think>计算 the sum", "zh")[0] == pytest.approx(2 / 4)


def test_detect_language() -> None:
    assert detect_language("What is 7 + 3 - 5?") == "en"
    assert detect_language("计算 7 加 3 减 5 等于多少？") == "zh"
    assert detect_language("7 + 3 - 5 = ?") == "none"
    assert detect_language("add 加") == "none"  # a tie


def test_prompt_target() -> None:
    zh_prompt = "计算 7 加 3 等于多少？"
    en_prompt = "What is 7 + 3?"
    zh_cot = "<think>7加3=10</think><answer>10</answer>"
    en_cot = "<think>seven plus three is ten</think><answer>10</answer>"
    assert language_reward(zh_cot, "prompt", zh_prompt)[0] == 1.0
    assert language_reward(en_cot, "prompt", zh_prompt)[0] == 0.0
    assert language_reward(en_cot, "prompt", en_prompt)[0] == 1.0
    assert language_reward(zh_cot, "prompt", en_prompt)[0] == 0.0
    # a prompt without English or Chinese words falls back to English
    assert language_reward(en_cot, "prompt", "7 + 3 = ?")[0] == 1.0


def test_bad_targets() -> None:
    with pytest.raises(ValueError, match="unknown language target"):
        language_reward("<think>a</think>", "fr")
    with pytest.raises(ValueError, match="needs the prompt"):
        language_reward("<think>a</think>", "prompt")

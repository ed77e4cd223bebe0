"""Language-consistency reward (R1-SPEC.md §3, eq. 7):

    Reward_language = Num(Words_target) / Num(Words)   over the chain of thought.

The paper leaves open how words are split and languages told apart; the choices here:

- Chain of thought: the content of every <think>…</think> block; an unterminated <think>
  runs to the end of the text; with only a closing </think> (the prefill held the opening
  tag), the text before it; with no think tags at all, the whole completion (so the reward
  also applies to non-reasoning answers).
- Words. Chinese is written without spaces, and segmenting it needs a dictionary, so each CJK
  ideograph counts as one word (blocks U+3400–U+4DBF, U+4E00–U+9FFF, U+F900–U+FAFF,
  U+20000–U+2FA1F, U+30000–U+323AF). An English word is a maximal run of Latin letters,
  apostrophes allowed inside ("don't"); accented Latin letters count as Latin, since telling
  English from French needs a dictionary too. A run of letters of any other script is one
  word of language "other": it counts in the denominator, never as a target word. Digits,
  symbols and punctuation belong to no language and are not counted; nor is mathematics:
  LaTeX math ($…$, $$…$$, \\(…\\), \\[…\\]), LaTeX commands (\\frac, \\times) and single
  letters written against a digit or an operator (the x and y of "2x+1=y"), so that a Chinese
  chain of thought full of formulas is not scored as part English. Fullwidth Latin letters
  (Ｈｅｌｌｏ) are Latin.
- A chain of thought with no countable word scores 0.0: it shows no consistency to reward.
- Target "prompt": the dominant language of the prompt by the same counting; a prompt with
  no English or Chinese words (or a tie) falls back to English.
"""

from __future__ import annotations

import re

LANGUAGES = ("en", "zh")
TARGETS = ("en", "zh", "prompt")

_CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002fa1f\U00030000-\U000323af"
# Latin letters: ASCII, Latin-1 letters (without × and ÷), Latin Extended-A/B.
_LATIN = "A-Za-z\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u024f\uff21-\uff3a\uff41-\uff5a"
_WORD_RE = re.compile(
    rf"(?P<zh>[{_CJK}])"
    rf"|(?P<en>[{_LATIN}]+(?:['\u2019][{_LATIN}]+)*)"
    # any other letters ([^\W\d_] = a letter of any script), up to the next Latin or CJK one
    rf"|(?P<other>(?:(?![{_CJK}{_LATIN}])[^\W\d_])+)"
)
_THINK_RE = re.compile(r"<think>(.*?)(?:</think>|\Z)", re.DOTALL)


# mathematics, which belongs to no language: LaTeX math, LaTeX commands, and a single letter
# against a digit or an operator (a variable: 2x, x=y, f(x))
_MATH_RE = re.compile(
    r"\$\$.*?\$\$|\$[^$]*\$|\\\(.*?\\\)|\\\[.*?\\\]"
    r"|\\[A-Za-z]+"
    rf"|(?<![{_LATIN}])[{_LATIN}](?=[0-9+\-*/=^_<>()|])"
    rf"|(?<=[0-9+\-*/=^_<>()|])[{_LATIN}](?![{_LATIN}])",
    re.DOTALL)


def count_words(text: str) -> dict[str, int]:
    """Countable words of `text` by language: {"en": n, "zh": n, "other": n}."""
    counts = {"en": 0, "zh": 0, "other": 0}
    for match in _WORD_RE.finditer(_MATH_RE.sub(" ", text)):
        counts[match.lastgroup] += 1
    return counts


def detect_language(text: str) -> str:
    """"en" or "zh", whichever has more words in `text`; "none" when neither has any or
    they tie."""
    counts = count_words(text)
    if counts["en"] == counts["zh"]:
        return "none"
    return "en" if counts["en"] > counts["zh"] else "zh"


def chain_of_thought(completion: str) -> str:
    """The reasoning part of a completion (see the module docstring for the rule)."""
    if "<think>" in completion:
        return "\n".join(_THINK_RE.findall(completion))
    if "</think>" in completion:
        return completion.split("</think>", 1)[0]
    return completion


def language_reward(completion: str, target: str = "en",
                    prompt: str | None = None) -> tuple[float, dict[str, float]]:
    """Share of the chain of thought's words that are in the target language.

    `target`: "en", "zh", or "prompt" (the prompt's dominant language; needs `prompt`).
    parts: language (the score), target_words, words.
    """
    if target not in TARGETS:
        raise ValueError(f"unknown language target {target!r}; use one of {', '.join(TARGETS)}")
    if target == "prompt":
        if prompt is None:
            raise ValueError("target 'prompt' needs the prompt text")
        detected = detect_language(prompt)
        target = detected if detected in LANGUAGES else "en"
    counts = count_words(chain_of_thought(completion))
    words = sum(counts.values())
    score = counts[target] / words if words else 0.0
    return score, {"language": score, "target_words": float(counts[target]),
                   "words": float(words)}

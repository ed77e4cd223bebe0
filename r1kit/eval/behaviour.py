"""The paper's behaviour analysis (R1-SPEC.md §6): how often responses use the ten reflective
words, counted over RL steps and checkpoints."""

from __future__ import annotations

import re

REFLECTIVE_WORDS = ("wait", "mistake", "however", "but", "retry", "error", "verify", "wrong",
                    "evaluate", "check")
_WORD_RE = re.compile(r"\b(" + "|".join(REFLECTIVE_WORDS) + r")\b", re.IGNORECASE)


def reflective_word_counts(texts: list[str]) -> dict[str, int]:
    """Occurrences of each reflective word (whole words, any case) in all of `texts`."""
    counts = dict.fromkeys(REFLECTIVE_WORDS, 0)
    for text in texts:
        for m in _WORD_RE.finditer(text):
            counts[m.group(1).lower()] += 1
    return counts


def reflective_counts(texts: list[str]) -> dict[str, float]:
    """Mean occurrences per response of each reflective word (whole words, any case), and
    their sum under "total"."""
    counts = reflective_word_counts(texts)
    n = max(1, len(texts))
    out = {w: c / n for w, c in counts.items()}
    out["total"] = sum(counts.values()) / n
    return out

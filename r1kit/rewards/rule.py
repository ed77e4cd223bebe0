"""Rule rewards of R1-Zero (R1-SPEC.md §3): accuracy from the task's verifier, plus format.

A reward function takes the response text (everything after the prompt, a prefill included)
and returns `(score, parts)` so that every component can be logged.

Answer extraction: only text after the last </think> can be an answer. There, the content
of the last <answer> tag, or without one all of that text; if it holds `\\boxed{}`, the
content of the last box. An answer that appears only inside <think> is not an answer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from r1kit.rewards.math import boxed_answers
from r1kit.tasks.base import Example, Task

_FORMAT_RE = re.compile(r"\s*<think>(.*?)</think>\s*<answer>(.*?)</answer>\s*", re.DOTALL)
_THINK_FORMAT_RE = re.compile(r"\s*<think>(.*?)</think>\s*\S.*", re.DOTALL)
_TAGS = ("<think>", "</think>", "<answer>", "</answer>")
# the format reward's two forms: "answer", the R1-Zero template's <think>…</think>
# <answer>…</answer>; "think", R1's own <think>…</think> then a summary (R1-SPEC §3-4: the
# format the cold-start data and the released models use). "auto" (GRPO and sample stages):
# "answer" where the prompt carries r1kit's instruction, which asks for both tags
FORMATS = ("auto", "answer", "think")


def format_style(style: str, template: str, system_prompt: str = "r1kit") -> str:
    """The format a stage's responses are held to: `style` unless "auto"; then "answer" where
    the prompt asks for <answer> tags (the R1-Zero template, or a chat template with r1kit's
    system instruction), else "think" (R1's `<think>…</think>` summary)."""
    if style != "auto":
        return style
    asks = template == "r1-zero" or (template == "chat" and system_prompt == "r1kit")
    return "answer" if asks else "think"


def format_reward(response: str, style: str = "answer") -> float:
    """style "answer": 1.0 when the response is exactly one <think>…</think> followed by
    exactly one <answer>…</answer>, with only whitespace around them; "think": exactly one
    <think>…</think> followed by a summary (any text but whitespace); else 0.0."""
    if style == "think":
        if response.count("<think>") != 1 or response.count("</think>") != 1:
            return 0.0
        return 1.0 if _THINK_FORMAT_RE.fullmatch(response) else 0.0
    if style != "answer":
        raise ValueError(f"unknown format style {style!r}; use answer or think")
    if any(response.count(tag) != 1 for tag in _TAGS):
        return 0.0
    return 1.0 if _FORMAT_RE.fullmatch(response) else 0.0


def continued_text(question) -> str:
    """The content of a conversation's final assistant message, which the response continues
    (a prompt of chat messages ending with "<think>\\n" as the assistant's), else "": the
    format check reads the response after it, so that its opening tag counts."""
    from r1kit.templates import continues_assistant

    content = question[-1].get("content") if continues_assistant(question) else None
    return content if isinstance(content, str) else ""


def last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} (or \\fbox{...}) in `text`, braces balanced."""
    start = max(text.rfind("\\boxed{"), text.rfind("\\fbox{"))
    if start < 0:
        return None
    i = text.index("{", start) + 1
    depth = 1
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i:j]
    return None


def answer_region(response: str, read_untagged: bool = False) -> str | None:
    """The part of a response that may hold the final answer, or None when there is none:
    only text after the last </think> counts (an unterminated <think> means everything is
    reasoning); inside it, the content of the last <answer> tag when there is one. A
    response without any tag has none, or with `read_untagged` is read whole (open-r1's
    accuracy reward reads every completion whole)."""
    if read_untagged and untagged(response):
        return response
    if "</think>" in response:
        tail = response.rsplit("</think>", 1)[1]
    elif "<think>" in response:
        return None
    elif "<answer>" in response:
        tail = response
    else:
        return None
    if "<answer>" in tail:
        tail = tail.rsplit("<answer>", 1)[1].split("</answer>", 1)[0]
    return tail


def untagged(response: str) -> bool:
    """A response without <think>, </think> or <answer>: it has no answer part to read (a
    model that answers without reasoning tags, or was never asked for them)."""
    return not any(tag in response for tag in ("<think>", "</think>", "<answer>"))


UNTAGGED_NOTE = ("r1kit reads a final answer only after the reasoning (after </think>, or in "
                 "<answer>), as R1's rewards do, so these score 0")


def extract_answer(response: str, read_untagged: bool = False) -> str | None:
    """The final answer of a response, or None when it gives none outside the reasoning
    (`read_untagged`: answer_region's)."""
    region = answer_region(response, read_untagged)
    if region is None:
        return None
    boxed = last_boxed(region)
    if boxed is not None and not boxed.strip():  # an empty last box: the last one with content
        boxed = next((b for b in reversed(boxed_answers(region)) if b.strip()), boxed)
    answer = (boxed if boxed is not None else region).strip()
    if answer.startswith("####"):  # GSM8K's own answer marker
        answer = answer[4:].strip()
    return answer or None


@dataclass(frozen=True)
class RuleReward:
    """reward = accuracy_weight * accuracy + format_weight * format (R1-SPEC eq. 4: equal weight),
    the final answer read as every scoring path reads it (r1kit.rewards.answers: a response
    that boxes different answers hedges and scores no accuracy). Parts: accuracy, format,
    hedged (0/1)."""

    task: Task
    accuracy_weight: float = 1.0
    format_weight: float = 1.0
    format_style: str = "answer"  # or "think" (format_reward)

    def __call__(self, response: str, example: Example) -> tuple[float, dict[str, float]]:
        from r1kit.rewards.answers import final_answers  # (answers imports this module)

        (answer,), (status,) = final_answers(self.task, [response], [example])
        accuracy = self.task.verify(answer, example) if answer is not None else 0.0
        fmt = format_reward(continued_text(example.question) + response, self.format_style)
        score = self.accuracy_weight * accuracy + self.format_weight * fmt
        return score, {"accuracy": accuracy, "format": fmt, "hedged": float(status == "hedged")}

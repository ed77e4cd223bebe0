"""The final answer of a response, one rule for every path that scores answers: the GRPO
reward, rejection sampling, evaluation and `r1kit score --reward math`.

The final answer is `rule.extract_answer`'s (the last `\\boxed{}` of the answer part, else the
whole part). A response that boxes several *different* answers hedges, and has no final
answer: "different" means not the same after `normalize_answer` and not equal to the final
answer under the task's own verifier (so `\\boxed{0.5} ... \\boxed{\\frac{1}{2}}` is one answer
written twice, for a math task).
"""

from __future__ import annotations

from r1kit.rewards.math import boxed_answers, normalize_answer
from r1kit.rewards.rule import answer_region, extract_answer
from r1kit.tasks.base import Example, Task


def final_answers(task: Task, responses: list[str]) -> tuple[list[str | None], list[bool]]:
    """(answer or None, hedged) per response: None where the response gives no answer outside
    its reasoning or hedges."""
    answers = [extract_answer(r) for r in responses]
    checks: list[tuple[int, str]] = []  # (response, a box that differs from its final answer)
    for i, (response, answer) in enumerate(zip(responses, answers)):
        if answer is None:
            continue
        seen = {normalize_answer(answer)}
        for box in boxed_answers(answer_region(response) or ""):
            key = normalize_answer(box)
            if key and key not in seen:
                seen.add(key)
                checks.append((i, box))
    hedged = [False] * len(responses)
    if checks:
        same = _same_answers(task, [box for _, box in checks],
                             [answers[i] for i, _ in checks])
        for (i, _), ok in zip(checks, same):
            if not ok:
                hedged[i] = True
    return [None if h else a for a, h in zip(answers, hedged)], hedged


def _same_answers(task: Task, boxes: list[str], finals: list[str]) -> list[bool]:
    """Whether each box is the final answer again under the task's verifier (a verifier that
    fails on the pair counts as "not the same")."""
    examples = [Example(question="", answer=f) for f in finals]
    batch = getattr(task, "verify_batch", None)
    try:
        if batch is not None:
            return [float(v) > 0 for v in batch(boxes, examples)]
    except Exception:  # noqa: BLE001 - one pair at a time below
        batch = None
    out = []
    for box, ex in zip(boxes, examples):
        try:
            out.append(float(task.verify(box, ex)) > 0)
        except Exception:  # noqa: BLE001 - a verifier that cannot read the pair
            out.append(False)
    return out

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


def final_answers(task: Task, responses: list[str]) -> tuple[list[str | None], list[str]]:
    """(answer or None, status) per response. Status: "ok" (an answer, or none outside the
    reasoning: then the answer is None), "hedged", or "timeout" / "error" when a check of the
    other boxes against the final answer ran past its deadline or failed (no answer then
    either; the caller counts these as the verifier's failures, not the response's)."""
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
    status = ["ok"] * len(responses)
    if checks:
        found: dict[int, set[str]] = {}
        for (i, _), v in zip(checks, _same_answers(task, [b for _, b in checks],
                                                   [answers[i] for i, _ in checks])):
            found.setdefault(i, set()).add(v)
        for i, verdicts in found.items():  # the math reward's order: timeout, error, hedged
            status[i] = next((s for s, v in (("timeout", "timeout"), ("error", "error"),
                                             ("hedged", "different")) if v in verdicts), "ok")
    return [a if s == "ok" else None for a, s in zip(answers, status)], status


def _same_answers(task: Task, boxes: list[str], finals: list[str]) -> list[str]:
    """Per pair: "same" when the box is the final answer again under the task's verifier in
    either direction (a task may read only one side as a reference: the tiny world's reads an
    integer), else "different", or "timeout" / "error" when neither direction could tell."""
    forward = _verdicts(task, boxes, finals)
    again = [i for i, v in enumerate(forward) if v != "same"]
    backward = _verdicts(task, [finals[i] for i in again], [boxes[i] for i in again])
    out = list(forward)
    for i, v in zip(again, backward):
        if v == "same" or forward[i] in ("error", "timeout") and v == "different":
            out[i] = v
    return out


def _verdicts(task: Task, answers: list[str], references: list[str]) -> list[str]:
    """"same" / "different" / "timeout" / "error" per (answer, reference) under the task."""
    if not answers:
        return []
    examples = [Example(question="", answer=r) for r in references]
    detailed = getattr(task, "verify_detailed", None)
    batch = getattr(task, "verify_batch", None)
    try:
        if detailed is not None:
            return ["same" if st == "ok" and float(v) > 0 else "different" if st == "ok" else st
                    for v, st in detailed(answers, examples)]
        if batch is not None:
            return ["same" if float(v) > 0 else "different" for v in batch(answers, examples)]
    except Exception:  # noqa: BLE001 - one pair at a time below
        detailed = batch = None
    out = []
    for answer, ex in zip(answers, examples):
        try:
            out.append("same" if float(task.verify(answer, ex)) > 0 else "different")
        except Exception:  # noqa: BLE001 - a verifier that cannot read the pair
            out.append("error")
    return out

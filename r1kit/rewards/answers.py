"""The final answer of a response, one rule for every path that scores answers: the GRPO
reward, rejection sampling, evaluation and `r1kit score --reward math`.

The final answer is `rule.extract_answer`'s (the last `\\boxed{}` of the answer part, else the
whole part). A response that boxes several *different* answers hedges, and has no final
answer: "different" means not the same after `normalize_answer` and not equal to the final
answer under the task's own verifier (so `\\boxed{0.5} ... \\boxed{\\frac{1}{2}}` is one answer
written twice, for a math task). One exception, where the reference is known: a reference of
several comma-separated parts ("1, -2") answered with as many different boxes, one per part
("\\boxed{1} and \\boxed{-2}"), is that answer, joined ("1, -2"), when the verifier agrees.
A final answer that offers another value with a word of doubt in `\\text{}` ("3 \\text{ (or
2)}", "3 \\text{ (or }2\\text{)}") hedges too: math-verify drops text, so it would read "3"
(hedges_in_text).
"""

from __future__ import annotations

import re

from r1kit.rewards.math import boxed_answers, normalize_answer
from r1kit.rewards.rule import answer_region, extract_answer
from r1kit.tasks.base import Example, Task


def final_answers(task: Task, responses: list[str], examples: list[Example] | None = None
                  ) -> tuple[list[str | None], list[str]]:
    """(answer or None, status) per response. Status: "ok" (an answer, or none outside the
    reasoning: then the answer is None), "hedged", or "timeout" / "error" when a check of the
    other boxes against the final answer ran past its deadline or failed (no answer then
    either; the caller counts these as the verifier's failures, not the response's).
    `examples` (the responses' questions, with their references): boxes that answer the parts
    of a multi-part reference one by one are read as one answer (the module's docstring).
    A task with `read_answers(responses)` reads them its own way (multiple choice: the last
    box that names a letter; code: the answer part, whose last python block runs)."""
    own = getattr(task, "read_answers", None)  # a task that reads answers its own way (code)
    if own is not None:
        return own(responses)
    whole = reads_untagged(task)
    answers = [extract_answer(r, whole) for r in responses]
    checks: list[tuple[int, str]] = []  # (response, a box that differs from its final answer)
    distinct: dict[int, list[str]] = {}  # response -> its different boxes, in order
    for i, (response, answer) in enumerate(zip(responses, answers)):
        if answer is None:
            continue
        boxes = [b for b in boxed_answers(answer_region(response, whole) or "") if b.strip()]
        seen = {normalize_answer(answer)}
        for box in boxes:
            key = normalize_answer(box)
            if key and key not in seen:
                seen.add(key)
                checks.append((i, box))
        keys: dict[str, str] = {}
        for box in boxes:
            keys.setdefault(normalize_answer(box), box.strip())
        distinct[i] = list(keys.values())
    in_text = {i for i, a in enumerate(answers) if a is not None and hedges_in_text(
        a, examples[i].answer if examples is not None else None)}
    status = ["hedged" if i in in_text else "ok" for i in range(len(answers))]
    if checks:
        found: dict[int, set[str]] = {}
        for (i, _), v in zip(checks, _same_answers(task, [b for _, b in checks],
                                                   [answers[i] for i, _ in checks])):
            found.setdefault(i, set()).add(v)
        for i, verdicts in found.items():  # the math reward's order: timeout, error, hedged
            if status[i] != "ok":
                continue
            status[i] = next((s for s, v in (("timeout", "timeout"), ("error", "error"),
                                             ("hedged", "different")) if v in verdicts), "ok")
    if examples is not None:  # one box per part of a multi-part reference: one answer
        joined = {i: ", ".join(distinct[i]) for i, st in enumerate(status)
                  if st == "hedged" and i not in in_text
                  and len(distinct[i]) == _parts(examples[i].answer)}
        verdicts = _verdicts_on(task, [joined[i] for i in joined], [examples[i] for i in joined])
        for i, v in zip(joined, verdicts):
            if v == "same":
                answers[i], status[i] = joined[i], "ok"
    return [a if s == "ok" else None for a, s in zip(answers, status)], status


def reads_untagged(task: Task) -> bool:
    """Whether a task reads a response without <think>, </think> or <answer> whole (its
    `read_untagged`: a stage's setting, `r1kit eval --read-untagged`), rather than as no
    answer (R1's rule, the default)."""
    return bool(getattr(task, "read_untagged", False))


# a \text{} (\textrm{}, \mbox{}, ...) group: its content, one level of braces inside
_TEXT_GROUP = re.compile(r"\\(?:text|textrm|textit|textbf|textnormal|mbox)\s*"
                         r"\{((?:[^{}]|\{[^{}]*\})*)\}")
_HEDGE_WORDS = re.compile(r"\b(?:or|maybe|perhaps|possibly|probably|either|alternatively|"
                          r"otherwise)\b", re.IGNORECASE)


def hedges_in_text(answer: str, reference=None) -> bool:
    """Whether the answer offers another value with a word of doubt in \\text{} ("3
    \\text{ (or 2)}", "3 \\text{ (or }2\\text{)}"): math-verify leaves text out, so the
    answer would count as its first value alone. Hedging: a \\text{} group with such a
    word and a number; or such a word in \\text{} and two different numbers in the answer,
    where the reference is known to be one value (not several parts, not ±). Otherwise left
    to the verifier: "x = 3 \\text{ or } x = -3" for a two-root reference, "5 \\text{ or
    more}", "12 \\text{ (base 10)}"."""
    if _contradiction(answer) or _false_equation(answer) or _hedged_plainly(answer, reference):
        return True
    groups = [g for g in _TEXT_GROUP.findall(answer) if _HEDGE_WORDS.search(g)]
    if not groups:
        return False
    if any(re.search(r"\d", g) for g in groups):
        return True
    if reference is None or _parts(reference) > 1 or "pm" in str(reference):
        return False
    return len(set(re.findall(r"\d+(?:\.\d+)?", answer))) > 1


_NUMBER = r"-?\d+(?:\.\d+)?"
_NUMBER_CHAIN = re.compile(rf"{_NUMBER}(?:={_NUMBER})+")


def _contradiction(answer: str) -> bool:
    """An answer that equates different numbers ("7 = 4", "1 = 2 = 3 = 4"): the verifier
    would read its last side alone."""
    text = re.sub(r"\s+", "", answer)
    if not _NUMBER_CHAIN.fullmatch(text):
        return False
    return len({float(v) for v in text.split("=")}) > 1


_ARITHMETIC = re.compile(r"[\d\s.+\-*/()]*\d[\d\s.+\-*/()]*$")


def _false_equation(answer: str) -> bool:
    """An answer whose last equation sets a sum of plain numbers (digits and + - * / ( ))
    to a number it is not ("2 + 2 = 5", "so 5 = 3", "1 plus 1=3"): the verifier would read
    its right side alone. Judged only where that sum starts the answer or follows a plain
    word, and the right side is a plain number: not "3 \\times 4 = 12", "2^3 = 8",
    "x = 42", "50% = 0.5"; a right side rounded from the sum ("10/3 = 3.33") is its value."""
    if "=" not in answer:
        return False
    left, right = answer.rsplit("=", 1)
    right = right.strip().rstrip(".").strip()
    if not re.fullmatch(_NUMBER, right) or left.endswith(("<", ">", "!", "=")):
        return False
    found = _ARITHMETIC.search(left)
    if found is None or left[:found.start()].endswith("-"):  # (a minus is the sum's own)
        return False
    before = left[:found.start()].split()
    if before and not re.fullmatch(r"[A-Za-z]+[,:;]?", before[-1]):
        return False
    value = _arithmetic(found.group().strip())
    if value is None:
        return False
    places = len(right.partition(".")[2])
    return abs(value - float(right)) > 0.5 * 10 ** -places + 1e-9


def _arithmetic(text: str) -> float | None:
    """The value of a sum of plain numbers (digits, + - * / and parentheses); None where it
    is none (unbalanced, a division by zero, a number alone with a dangling sign)."""
    import ast

    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError:
        return None

    def value(node):
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return float(node.value)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            v = value(node.operand)
            return -v if isinstance(node.op, ast.USub) else v
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub, ast.Mult,
                                                                 ast.Div)):
            a, b = value(node.left), value(node.right)
            if isinstance(node.op, ast.Div):
                return a / b
            return a + b if isinstance(node.op, ast.Add) else a - b if isinstance(
                node.op, ast.Sub) else a * b
        raise ValueError
    try:
        return value(tree.body)
    except (ValueError, ZeroDivisionError, OverflowError):
        return None


def _hedged_plainly(answer: str, reference) -> bool:
    """Alternatives joined by "or" outside \\text{} whose values differ ("x = 3 or x = 4",
    "x=3 \\lor x=4"; not "0.5 or 1/2") where the reference is one plain value (no comma, no
    ±, no "or" of its own), which the verifier would read as its last value alone. Only
    alternatives that are plain numbers or fractions (after an "x =") are compared: others
    are left to the verifier."""
    ref = str(reference) if reference is not None else ""
    if not ref or "," in ref or "pm" in ref or re.search(r"\bor\b|\\lor|\\vee", ref):
        return False
    outside = _TEXT_GROUP.sub(" ", answer)
    sides = re.split(r"\bor\b|\\lor\b|\\vee\b", outside)
    if len(sides) < 2:
        return False
    values = [_plain_value(side) for side in sides]
    known = {round(v, 9) for v in values if v is not None}
    return len(known) > 1


def _plain_value(text: str) -> float | None:
    """The value of "3", "-2.5", "x = 3", "1/2", "\\frac{1}{2}" (spaces, $ and a trailing
    period aside); None for anything else."""
    text = re.sub(r"[\s$]", "", text).rstrip(".").removeprefix("(").removesuffix(")")
    text = re.sub(r"^[a-zA-Z]\w*=", "", text)  # "x=3"
    frac = re.fullmatch(rf"\\d?frac\{{({_NUMBER})\}}\{{({_NUMBER})\}}|({_NUMBER})/({_NUMBER})",
                        text)
    try:
        if frac:
            a, b = (frac.group(1), frac.group(2)) if frac.group(1) else (frac.group(3),
                                                                        frac.group(4))
            return float(a) / float(b)
        return float(text) if re.fullmatch(_NUMBER, text) else None
    except ZeroDivisionError:
        return None


def _parts(reference) -> int:
    """The comma-separated parts of a reference answer ("1, -2": 2); 1 for anything else, so
    that no single-answer question takes several boxes."""
    text = str(reference) if reference is not None else ""
    # LaTeX thousands separators (MATH-500's "10,\\!080", "1{,}000") as plain commas
    text = re.sub(r"\{,\}", ",", re.sub(r",\s*\\[!,;: ]\s*", ",", text))
    if "," not in text or any(c in text for c in "([{"):  # a tuple, interval or set: one
        return 1
    parts = [p.strip() for p in text.split(",")]
    if len(parts) > 1 and all(p.isdigit() and len(p) == 3 for p in parts[1:]):
        return 1  # thousands separators: 1,000
    return len(parts) if all(parts) else 1


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
    return _verdicts_on(task, answers, [Example(question="", answer=r) for r in references])


def _verdicts_on(task: Task, answers: list[str], examples: list[Example]) -> list[str]:
    """_verdicts against the examples themselves."""
    if not answers:
        return []
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

"""The tiny world: multi-step integer arithmetic, a seeded generator and a pretraining corpus.

A problem is a left-to-right chain of + and - on small operands ("What is 7 + 3 - 5 + 2?");
its difficulty level is the number of operations (1-5), like MATH's levels 1-5. Running
results stay within 0..20, so a few minutes of pretraining can teach every step's arithmetic. Held-out test sets are generated from a fixed seed of their own
and excluded from the corpus and from RL prompts.

The corpus holds worked solutions in the R1-Zero template whose quality varies on purpose:

- "answer only": an empty <think> and a guess. Right for one operation; for more, right only
  `guess_accuracy` of the time (the guess is near the true result, not on it).
- "steps": one line of working per operation ("7 plus 2=9. 9 minus 5=4."), always right.
- "slip": working with one wrong step, carried to a wrong answer.
- "check": working, then "wait, let me check" and the working again; half of these first make
  a slip that the check catches, half confirm a right result.
- Working of any kind uses the Chinese operation words 加/减 instead of plus/minus with
  probability `mixed_language` ("7加2=9. 9减5=4."), so that the language-consistency reward
  (R1-SPEC eq. 7) has words to count: English working is all English, Chinese working has no
  English word.

So working step by step really raises the chance of a right answer, and answering without
working is what the base model does about half the time: the one thing RL can discover.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from r1kit.tasks.base import Example
from r1kit.templates import render_prompt

_ANSWER_RE = re.compile(r"(?:the answer is\s+)?(-?\d+)\.?", re.IGNORECASE)
OPS_EN = {"+": " plus ", "-": " minus "}
OPS_ZH = {"+": "加", "-": "减"}


@dataclass(frozen=True)
class WorldConfig:
    """The tiny world's knobs. Defaults are the ones the tiny recipes use."""

    max_operand: int = 9
    max_value: int = 20  # running results stay within 0..max_value
    train_levels: tuple[int, ...] = (1, 2, 3, 4)  # levels in the corpus and in RL prompts
    test_levels: tuple[int, ...] = (2, 3, 4)  # levels of the main held-out set
    test_size: int = 200  # problems in the main held-out set
    level_test_size: int = 50  # problems per level in the per-level held-out sets (levels 1-5)
    test_seed: int = 1234  # fixed: the held-out sets do not depend on the run's seed
    train_pool: int = 20000  # distinct RL prompts
    # corpus mix (fractions of documents; they must sum to 1)
    answer_only: float = 0.5
    steps: float = 0.3
    slip: float = 0.1
    check: float = 0.1
    guess_accuracy: float = 0.15  # answer-only documents with 2+ operations: share right
    mixed_language: float = 0.15  # working written with Chinese operation words


def make_problem(rng: random.Random, level: int, max_operand: int = 9,
                 max_value: int = 20) -> tuple[list[int], list[str]]:
    """Operands and operators of a chain with `level` operations whose running result stays
    within 0..max_value."""
    value = rng.randint(1, max_operand)
    operands, ops = [value], []
    for _ in range(level):
        b = rng.randint(1, min(max_operand, max(value, max_value - value)))
        allowed = [op for op, ok in (("+", value + b <= max_value), ("-", value - b >= 0)) if ok]
        op = rng.choice(allowed)
        value = value + b if op == "+" else value - b
        operands.append(b)
        ops.append(op)
    return operands, ops


def question_text(operands: list[int], ops: list[str]) -> str:
    parts = [str(operands[0])]
    for op, b in zip(ops, operands[1:]):
        parts += [op, str(b)]
    return "What is " + " ".join(parts) + "?"


def evaluate_chain(operands: list[int], ops: list[str]) -> list[int]:
    """Intermediate results after each operation."""
    values, v = [], operands[0]
    for op, b in zip(ops, operands[1:]):
        v = v + b if op == "+" else v - b
        values.append(v)
    return values


def _example(operands: list[int], ops: list[str]) -> Example:
    return Example(
        question=question_text(operands, ops),
        answer=str(evaluate_chain(operands, ops)[-1]),
        level=len(ops),
        meta={"operands": operands, "ops": ops},
    )


class ArithmeticTask:
    """The tiny world's task: examples plus the exact-integer verifier."""

    name = "arithmetic"

    def __init__(self, config: WorldConfig | None = None, seed: int = 0):
        self.config = config or WorldConfig()
        self.seed = seed
        self._test = self._make_test_sets()
        self._excluded = {e.question for sets in self._test.values() for e in sets}

    def _make_test_sets(self) -> dict[str, list[Example]]:
        c = self.config
        rng = random.Random(c.test_seed)
        sets: dict[str, list[Example]] = {"main": []}
        seen: set[str] = set()

        def fresh(level: int) -> Example:
            while True:
                ex = _example(*make_problem(rng, level, c.max_operand, c.max_value))
                if ex.question not in seen:
                    seen.add(ex.question)
                    return ex

        for i in range(c.test_size):
            sets["main"].append(fresh(c.test_levels[i % len(c.test_levels)]))
        for level in range(1, 6):
            sets[f"level{level}"] = [fresh(level) for _ in range(c.level_test_size)]
        return sets

    def test_examples(self, split: str = "main") -> list[Example]:
        return list(self._test[split])

    def train_examples(self) -> list[Example]:
        """A pool of distinct problems, none of them held out, in a seeded order."""
        c = self.config
        rng = random.Random(f"arith-train-{self.seed}")
        pool: list[Example] = []
        seen = set(self._excluded)
        attempts = 0
        while len(pool) < c.train_pool and attempts < 50 * c.train_pool:
            attempts += 1
            ex = _example(*make_problem(rng, rng.choice(c.train_levels), c.max_operand, c.max_value))
            if ex.question not in seen:
                seen.add(ex.question)
                pool.append(ex)
        return pool

    def verify(self, answer: str, example: Example) -> float:
        """1.0 when the answer is the right integer, bare ("7") or as the summary sentence of
        cold-start data ("The answer is 7.")."""
        m = _ANSWER_RE.fullmatch(answer.strip())
        return 1.0 if m and int(m.group(1)) == int(example.answer) else 0.0

    # ----- the pretraining corpus -------------------------------------------------------

    def corpus(self, n_docs: int, seed: int) -> list[tuple[str, str]]:
        """`n_docs` (prompt, response) pairs in the R1-Zero template, of varied quality."""
        c = self.config
        mix = {"answer_only": c.answer_only, "steps": c.steps, "slip": c.slip, "check": c.check}
        if abs(sum(mix.values()) - 1.0) > 1e-6:
            raise ValueError(f"corpus mix must sum to 1, got {sum(mix.values())}: {mix}")
        rng = random.Random(f"arith-corpus-{seed}")
        kinds, weights = zip(*mix.items())
        docs = []
        while len(docs) < n_docs:
            operands, ops = make_problem(rng, rng.choice(c.train_levels), c.max_operand, c.max_value)
            question = question_text(operands, ops)
            if question in self._excluded:
                continue
            kind = rng.choices(kinds, weights)[0]
            docs.append((render_prompt(question, "r1-zero"), self.solution(operands, ops, kind, rng)))
        return docs

    def solution(self, operands: list[int], ops: list[str], kind: str, rng: random.Random) -> str:
        c = self.config
        values = evaluate_chain(operands, ops)
        if kind == "answer_only":
            answer = values[-1]
            if len(ops) > 1 and rng.random() >= c.guess_accuracy:
                answer = max(0, answer + rng.choice([-3, -2, -1, 1, 2, 3]))
                if answer == values[-1]:
                    answer += 1
            return f"<think> </think> <answer> {answer} </answer>"
        words = OPS_ZH if rng.random() < c.mixed_language else OPS_EN
        if kind == "steps":
            return _wrap(_working(operands, ops, words, rng), values[-1])
        slip_at = rng.randrange(len(ops))
        if kind == "slip":
            lines, answer = _working_with_slip(operands, ops, slip_at, words, rng)
            return _wrap(lines, answer)
        if kind == "check":
            if rng.random() < 0.5:
                first, _ = _working_with_slip(operands, ops, slip_at, words, rng)
            else:
                first = _working(operands, ops, words, rng)
            second = _working(operands, ops, words, rng)
            return _wrap(first + " wait, let me check. " + second, values[-1])
        raise ValueError(f"unknown solution kind {kind!r}")


def _working(operands, ops, words, rng) -> str:
    lines, _ = _working_with_slip(operands, ops, None, words, rng)
    return lines


def _working_with_slip(operands, ops, slip_at, words, rng) -> tuple[str, int]:
    """One line per operation, "7 plus 2=9. 9 minus 5=4.": each line takes the result of the line before
    and the next operation of the question. At `slip_at` the result is off by 1 or 2, and the
    error is carried on."""
    lines, v = [], operands[0]
    for i, (op, b) in enumerate(zip(ops, operands[1:])):
        right = v + b if op == "+" else v - b
        new = right
        if i == slip_at:
            new = max(0, right + rng.choice([-2, -1, 1, 2]))
            if new == right:
                new += 1
        lines.append(f"{v}{words[op]}{b}={new}.")
        v = new
    return " ".join(lines), v


def _wrap(working: str, answer: int) -> str:
    return f"<think> {working} </think> <answer> {answer} </answer>"

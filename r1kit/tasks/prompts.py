"""Prompts without reference answers as a GRPO task (`task = "prompts"`: TRL's prompt-only
data sets, RLHF with a reward model).

A JSONL or parquet file, a prompt per row under `question_field` (text, or chat messages for
template = "chat"; TRL's `prompt` is read where question_field is the default, "question",
and the rows have no such field); without a file, the tiny world's general prompts (r1kit.tasks.general,
helpful and safety requests, as `general_data = "tiny"`). There is nothing to verify, so there is no accuracy: the
reward comes from

- reward models: each prompt is scored by the model of its type, the row's `type` field
  (`helpful` or `safety`, R1's two); a row without one is `helpful` where the stage has a
  helpful_model, else `safety`. Their reward is the stage-2 general reward (R1-SPEC eq. 8-10):
  the model's score plus the format reward (format_weight; 0 leaves it out) and the
  language reward where language_weight is set;
- or a `reward_function` of your own, which gets the row's other fields by name (TRL's
  reward functions on a prompt-only data set).

The held-out set (a `test_file` of the same shape) is evaluated by that same reward: the mean
reward of k responses per prompt (TRL's `eval_dataset` with its reward), with each reward
model's and function's part. Without a train_file the evaluation prompts are the distinct
ones among the eval stage's general prompts of the tiny world; its requests come from a few
templates, so these are training prompts too (the evaluation shows the policy's reward on
them at the evaluation temperature, not how it carries over to unseen requests).
"""

from __future__ import annotations

import math
from pathlib import Path

from r1kit.errors import R1kitError
from r1kit.tasks.base import Example

TYPES = ("helpful", "safety")  # r1kit.rewards.combined.GENERAL_TYPES


def read_prompts(path, question_field: str, default_type: str | None,
                 answer_field: str = "answer") -> list[Example]:
    """The rows of a prompt file as examples, checked: a prompt in every row (under
    `question_field`; TRL's `prompt` where that is the default "question" and the rows have
    no such field), a `type` (where given) of TYPES; `default_type` for rows without one or
    with a null (None: no type, for a reward function). A row's `answer_field`, where it has
    one, is its example's answer, as a reward function's `answer` argument takes it."""
    from r1kit.tasks.math import (
        likely_field,
        read_rows,
        reference_text,
        resolved,
        row_at,
        row_question,
    )

    out, first = [], None
    for n, row in read_rows(path):
        where = row_at(path, n)
        if question_field == "question" and "question" not in row and "prompt" in row:
            question_field = "prompt"  # TRL's prompt-only data sets
        prompt = row_question(row, question_field, where,
                              "set question_field to the prompts' field")
        kind = row.get("type")
        if kind is None or isinstance(kind, float) and math.isnan(kind):  # null, NaN (parquet)
            kind = default_type
        if kind is not None and kind not in TYPES and default_type is not None:
            raise R1kitError(f"{where}: type {kind!r} is not one of {', '.join(TYPES)}",
                             "helpful rows are scored by helpful_model, safety rows "
                             "(harmlessness) by safety_model; leave the field out to score "
                             f"every row as {default_type}")
        fields = {k: v for k, v in row.items() if k != "prompt"}  # (as TRL: all but prompt)
        reference = resolved(row, answer_field).get(answer_field)
        first = first or (where, row)
        out.append(Example(question=prompt, answer=reference_text(reference),
                           meta={"type": kind if kind in TYPES else None, "fields": fields,
                                 **({"reference": reference} if reference is not None
                                    else {})}))
    if answer_field != "answer" and not any("reference" in e.meta for e in out):
        # (named on purpose, and no row has it: a reward function would get no reference)
        where, row = first
        like = likely_field(row, question=False)
        raise R1kitError(f"{where}: no field {answer_field!r} (answer_field), nor any row "
                         "after it", f"its fields are {', '.join(map(str, row))}"
                         + (f" ({like!r} looks like the answer)" if like else ""))
    return out


TINY_EVAL = 200  # draws of the eval stage's general prompts (its default), distinct ones kept


def _tiny(n: int, seed: int) -> list[Example]:
    """The tiny world's general prompts (fields: type, and for safety prompts harmful)."""
    from r1kit.tasks import general

    return [Example(question=r["prompt"], answer="", meta={
        "type": r["type"], "fields": {k: v for k, v in r.items() if k != "prompt"}})
        for r in general.prompts(n, seed)]


class PromptTask:
    """Prompts to train on and held-out prompts (module docstring); nothing to verify."""

    checks_in_workers = False
    scored_by_reward = True  # held-out evaluation: the stage's reward, not accuracy

    def __init__(self, train_file, question_field: str = "question",
                 default_type: str | None = "helpful", seed: int = 0,
                 answer_field: str = "answer", test_file=None,
                 test_fields: tuple[str, str] | None = None):
        self.name = Path(train_file).stem if train_file else "prompts"
        # what evaluations are named after: the held-out file (or the tiny world's prompts)
        self.test_name = (Path(test_file).stem if test_file else
                          "tiny-general-prompts" if not train_file else self.name)
        self._test_file = test_file
        self._test_fields = test_fields or (question_field, answer_field)
        self._default_type = default_type
        self._tiny_world = not train_file
        if train_file:
            self._train = read_prompts(train_file, question_field, default_type, answer_field)
        else:
            self._train = _tiny(4000, seed)
        self._test = None

    def train_examples(self) -> list[Example]:
        return list(self._train)

    def test_examples(self, split: str = "main") -> list[Example]:
        """The test_file's prompts; without one: where the training prompts are the tiny
        world's, the distinct ones among its eval stage's general prompts (module docstring:
        training prompts too), else none."""
        if self._test is None:
            if self._test_file:
                question, answer = self._test_fields
                self._test = read_prompts(self._test_file, question, self._default_type, answer)
            elif self._tiny_world:
                from r1kit.tasks.general import HELD_OUT_SEED

                seen: set[str] = set()
                self._test = [e for e in _tiny(TINY_EVAL, HELD_OUT_SEED)
                              if not (e.question in seen or seen.add(e.question))]
            else:
                self._test = []
        return list(self._test)

    def verify(self, answer: str, example: Example) -> float:
        """No reference answer: no accuracy (a prompt's reward comes from reward models or a
        reward function; r1kit.rewards.combined scores a typed prompt by its model)."""
        return 0.0

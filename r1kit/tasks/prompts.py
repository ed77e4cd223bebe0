"""Prompts without reference answers as a GRPO task (`task = "prompts"`: TRL's prompt-only
data sets, RLHF with a reward model).

A JSONL or parquet file, a prompt per row under `question_field` (text, or chat messages for
template = "chat"; TRL's `prompt` is read where question_field is the default, "question",
and the rows have no such field); without a file, the tiny world's general prompts (r1kit.tasks.general,
helpful and safety requests, as `general_data = "tiny"`). There is nothing to verify, so there is no accuracy and no held-out
evaluation: the reward comes from

- reward models: each prompt is scored by the model of its type, the row's `type` field
  (`helpful` or `safety`, R1's two); a row without one is `helpful` where the stage has a
  helpful_model, else `safety`. Their reward is the stage-2 general reward (R1-SPEC eq. 8-10):
  the model's score plus the format reward (format_weight; 0 leaves it out) and the
  language reward where language_weight is set;
- or a `reward_function` of your own, which gets the row's other fields by name (TRL's
  reward functions on a prompt-only data set).
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
    from r1kit.tasks.math import read_rows, reference_text, row_question

    out = []
    for n, row in read_rows(path):
        where = f"{path}:{n}"
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
        fields = {k: v for k, v in row.items() if k != question_field}
        out.append(Example(question=prompt, answer=reference_text(row.get(answer_field)),
                           meta={"type": kind if kind in TYPES else None, "fields": fields}))
    return out


class PromptTask:
    """Prompts to train on (module docstring); no held-out set, nothing to verify."""

    checks_in_workers = False

    def __init__(self, train_file, question_field: str = "question",
                 default_type: str | None = "helpful", seed: int = 0,
                 answer_field: str = "answer"):
        self.name = Path(train_file).stem if train_file else "prompts"
        if train_file:
            self._train = read_prompts(train_file, question_field, default_type, answer_field)
        else:  # the tiny world's (fields: type, and for safety prompts harmful)
            from r1kit.tasks import general

            self._train = [Example(question=r["prompt"], answer="", meta={
                "type": r["type"], "fields": {k: v for k, v in r.items() if k != "prompt"}})
                for r in general.prompts(4000, seed)]

    def train_examples(self) -> list[Example]:
        return list(self._train)

    def test_examples(self, split: str = "main") -> list[Example]:
        return []

    def verify(self, answer: str, example: Example) -> float:
        """No reference answer: no accuracy (a prompt's reward comes from reward models or a
        reward function; r1kit.rewards.combined scores a typed prompt by its model)."""
        return 0.0

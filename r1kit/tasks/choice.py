"""Multiple-choice questions as a task (R1-SPEC §3: STEM questions are multiple choice, their
accuracy reward binary): GPQA, MMLU, MMLU-Pro, ARC and files of your own.

A JSONL or parquet file, a row per question, in any of these layouts:

- the options in a list under `choices_field` ("" = the first of `choices` or `options` the
  row has): MMLU's `choices` with an `answer` index (0 = A), MMLU-Pro's `options` with an
  `answer` letter, ARC's `choices` object (`text` and `label` lists) with `answerKey` (set
  answer_field = "answerKey"), or the right option's text as the answer;
- GPQA's columns (`Question`, read where question_field is missing; `Correct Answer`,
  `Incorrect Answer 1`-`3`; no answer field): the four options
  are put in an order drawn from the question's text (the same on every run and machine),
  since GPQA lists the right one first;
- no options field: the question already lists its options, and the answer is a letter.

The options follow the question as lines "A) ...", then a request for the letter in
`\\boxed{}` (CHOICE_INSTRUCTION). The final answer is read as every task reads it
(r1kit.rewards.answers: after the reasoning, the last box, else the answer part), and must
name one letter of the question's options: "C", "(C)", "C) 4.2", "\\text{C}", or "the answer
is C" / "Answer: C" in an unboxed answer part. An option's text without its letter is not
read (GPQA's graders read letters alone); a response that boxes two different letters
hedges and scores 0. cons@k votes by letter.
"""

from __future__ import annotations

import hashlib
import random
import re
from pathlib import Path

from r1kit.errors import R1kitError
from r1kit.tasks.base import Example

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
CHOICE_INSTRUCTION = ("\nPlease reason step by step, and put the letter of your final answer "
                      "within \\boxed{}.")
CHOICE_FIELDS = ("choices", "options")  # read in this order when choices_field is ""
GPQA_FIELDS = ("Correct Answer", "Incorrect Answer 1", "Incorrect Answer 2", "Incorrect Answer 3")
SUBJECT_FIELDS = ("subject", "category", "High-level domain")  # MMLU, MMLU-Pro, GPQA

_WRAPPED = re.compile(r"\\(?:text|textbf|textrm|mathrm|mathbf|mbox)\s*\{([^{}]*)\}")
_ALONE = re.compile(r"\(?([A-Za-z])\)?[.:]?")
_LEADING = re.compile(r"(?:\(([A-Z])\)|([A-Z])[).:])(?:\s|$)")
_STATED = re.compile(r"(?i:answer|option|choice)(?:\s+(?i:is))?\s*[:：]?\s*"
                     r"(?:\(([A-Z])\)|([A-Z])\b)")


def read_letter(answer: str | None, count: int = len(LETTERS)) -> str | None:
    """The option letter a final answer names (module docstring), or None; only the first
    `count` letters are options."""
    if answer is None:
        return None
    text = str(answer)
    for _ in range(3):  # \text{\textbf{C}}
        text = _WRAPPED.sub(r"\1", text)
    text = re.sub(r"[$*]", "", text).strip()
    valid = LETTERS[:count]
    alone = _ALONE.fullmatch(text)
    if alone:
        letter = alone.group(1).upper()
        return letter if letter in valid else None
    leading = _LEADING.match(text)
    if leading:
        letter = leading.group(1) or leading.group(2)
        return letter if letter in valid else None
    stated = [m.group(1) or m.group(2) for m in _STATED.finditer(text)]
    if stated:
        return stated[-1] if stated[-1] in valid else None
    return None


def choice_vote_key(answer: str) -> str:
    """cons@k's grouping of multiple-choice answers: the letter (the text where none is read)."""
    return read_letter(answer) or answer.strip()


def choice_equal(a: str, b: str) -> bool:
    letter = read_letter(a)
    return letter is not None and letter == read_letter(b)


def _shuffled(options: list[str], question: str) -> tuple[list[str], int]:
    """GPQA's options (the right one first) in an order drawn from the question's text, and
    where the right one went."""
    seed = int.from_bytes(hashlib.sha256(question.encode("utf-8")).digest()[:8], "big")
    order = list(range(len(options)))
    random.Random(seed).shuffle(order)
    return [options[i] for i in order], order.index(0)


def _options(row: dict, choices_field: str, where: str) -> tuple[list[str] | None, list[str]]:
    """(the options' texts or None where the question lists them itself, their labels as
    the row names them: ARC's "1"-"4" or letters; else the letters)."""
    field = choices_field or next((f for f in CHOICE_FIELDS if f in row), "")
    if not field:
        return None, []
    if field not in row:
        raise R1kitError(f"{where}: no field {field!r}",
                         f"its fields are {', '.join(map(str, row))}; set choices_field to "
                         "the options' field (\"\" reads choices or options)")
    value = row[field]
    labels: list[str] = []
    if isinstance(value, dict) and "text" in value:  # ARC: {"text": [...], "label": [...]}
        labels = [str(x) for x in value.get("label") or []]
        value = value["text"]
    if hasattr(value, "tolist"):  # a numpy array, as parquet rows may hold
        value = value.tolist()
    if not isinstance(value, list) or not value or not all(
            isinstance(o, (str, int, float)) and not isinstance(o, bool) for o in value):
        raise R1kitError(f"{where}: field {field!r} is not a list of options",
                         "give the options as a list of texts, e.g. [\"4\", \"5\", \"6\", "
                         "\"7\"] (or leave them in the question and the field out)")
    if not 2 <= len(value) <= len(LETTERS):
        raise R1kitError(f"{where}: field {field!r} has {len(value)} options",
                         f"a question needs 2 to {len(LETTERS)} options")
    options = [str(o).strip() for o in value]
    if labels and len(labels) != len(options):
        raise R1kitError(f"{where}: field {field!r} has {len(options)} texts and "
                         f"{len(labels)} labels")
    return options, labels or list(LETTERS[:len(options)])


def _answer_letter(value, options: list[str] | None, labels: list[str], where: str,
                   field: str) -> str:
    """The right option's letter from a row's answer: an index (0 = A), a letter, a label
    (ARC's "1"-"4"), or the right option's text."""
    count = len(options) if options is not None else len(LETTERS)
    if isinstance(value, int) and not isinstance(value, bool) and options is not None:
        if 0 <= value < count:
            return LETTERS[value]
        raise R1kitError(f"{where}: field {field!r} is {value}, not an option's index "
                         f"(0-{count - 1}: 0 is the first option)")
    text = str(value).strip() if isinstance(value, (str, int, float)) else ""
    if options is not None:
        if text in labels:
            return LETTERS[labels.index(text)]
        if text in options:
            return LETTERS[options.index(text)]
    letter = read_letter(text, count) if len(text) <= 3 else None
    if letter is not None:
        return letter
    told = (f"give one of {', '.join(labels)}, an index or an option's text" if options
            is not None else "give a letter, as the question lists its options, or set "
            "choices_field to the field that holds them")
    raise R1kitError(f"{where}: field {field!r} is {value!r}, not an option", told)


def row_options(row: dict, answer_field: str, choices_field: str, where: str,
                question: str) -> tuple[list[str] | None, str]:
    """A row's options (None where its question lists them) and the right one's letter, in
    any layout of the module docstring (`question`: the text GPQA's order is drawn from)."""
    if all(f in row for f in GPQA_FIELDS):
        options, right = _shuffled([str(row[f]).strip() for f in GPQA_FIELDS], question)
        return options, LETTERS[right]
    options, labels = _options(row, choices_field, where)
    return options, _answer_letter(row[answer_field], options, labels, where, answer_field)


def read_choice_examples(path, question_field: str = "question", answer_field: str = "answer",
                         choices_field: str = "", instruction: str = CHOICE_INSTRUCTION
                         ) -> list[Example]:
    """The rows of a multiple-choice file as examples (module docstring), checked; each
    question is followed by its options and `instruction`. An example's answer is the right
    letter; `meta` holds the option count, the row's other fields (for reward functions of
    your own), the question's own text and its subject where the row has one."""
    from r1kit.tasks.math import checked_text, read_rows
    from r1kit.templates import check_messages, prompt_text, with_instruction

    out = []
    for n, row in read_rows(path):
        where = f"{path}:{n}"
        gpqa = all(f in row for f in GPQA_FIELDS)
        if gpqa and question_field not in row and "Question" in row:  # GPQA's own name
            question_field = "Question"
        needed = [question_field] + ([] if gpqa else [answer_field])
        for name in needed:
            if name not in row:
                raise R1kitError(f"{where}: no field {name!r}",
                                 (f"its fields are {', '.join(map(str, row))}" if row else
                                  "the row is empty") + "; set question_field / answer_field "
                                 "(and choices_field) to the right names")
        question = row[question_field]
        if isinstance(question, list):
            question = check_messages(question, f"{where}: field {question_field!r}")
        elif isinstance(question, str):
            question = checked_text(question, f"{where}: field {question_field!r}")
        else:
            raise R1kitError(f"{where}: field {question_field!r} is not a question (text or "
                             "chat messages)")
        options, letter = row_options(row, answer_field, choices_field, where,
                                      prompt_text(question))
        listed = ("\n\n" + "\n".join(f"{LETTERS[i]}) {o}" for i, o in enumerate(options))
                  + ("\n" if instruction else "") if options is not None else "")
        subject = next((row[f] for f in SUBJECT_FIELDS if isinstance(row.get(f), str)), None)
        fields = {k: v for k, v in row.items() if k != question_field}
        out.append(Example(question=with_instruction(question, listed + instruction),
                           answer=letter,
                           level=row.get("level") if isinstance(row.get("level"), int) else None,
                           meta={"count": len(options) if options is not None else len(LETTERS),
                                 "fields": fields, "problem": prompt_text(question),
                                 "subject": subject}))
    return out


class ChoiceTask:
    """Multiple-choice questions (module docstring): train and held-out files. The check is
    a comparison of letters, in this process (no worker processes needed)."""

    checks_in_workers = False
    vote_key = staticmethod(choice_vote_key)
    vote_equal = staticmethod(choice_equal)

    def __init__(self, train_file, test_file=None, question_field: str = "question",
                 answer_field: str = "answer", choices_field: str = "",
                 test_fields: tuple[str, str] | None = None, instruction: bool = True):
        named = test_file or train_file
        self.name = Path(named).stem if named else "choice"
        text = CHOICE_INSTRUCTION if instruction else ""
        self._train = (read_choice_examples(train_file, question_field, answer_field,
                                            choices_field, text) if train_file else [])
        tq, ta = test_fields or (question_field, answer_field)
        self._test = (read_choice_examples(test_file, tq, ta, choices_field, text)
                      if test_file else [])

    def train_examples(self) -> list[Example]:
        return list(self._train)

    def test_examples(self, split: str = "main") -> list[Example]:
        return list(self._test)

    def verify(self, answer: str, example: Example) -> float:
        letter = read_letter(answer, example.meta.get("count", len(LETTERS)))
        return 1.0 if letter is not None and letter == read_letter(example.answer) else 0.0

    def verify_batch(self, answers: list[str], examples: list[Example]) -> list[float]:
        return [self.verify(a, e) for a, e in zip(answers, examples)]

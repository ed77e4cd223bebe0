"""Multiple-choice questions as a task (R1-SPEC §3: STEM questions are multiple choice, their
accuracy reward binary): GPQA, MMLU, MMLU-Pro, ARC and files of your own.

A JSONL or parquet file, a row per question, in any of these layouts:

- the options in a list under `choices_field` ("" = the first of `choices` or `options` the
  row has): MMLU's `choices` with an `answer` index (0 = A; a number that is also another
  option's text is read as the index, with a warning), MMLU-Pro's `options` with an
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
import math
import random
import re
import warnings
from pathlib import Path

from r1kit.errors import R1kitError
from r1kit.tasks.base import Example
from r1kit.tasks.math import kind_of, resolved, row_level

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
CHOICE_INSTRUCTION = ("\nPlease reason step by step, and put the letter of your final answer "
                      "within \\boxed{}.")
CHOICE_FIELDS = ("choices", "options")  # read in this order when choices_field is ""
GPQA_FIELDS = ("Correct Answer", "Incorrect Answer 1", "Incorrect Answer 2", "Incorrect Answer 3")
SUBJECT_FIELDS = ("subject", "category", "High-level domain")  # MMLU, MMLU-Pro, GPQA

_WRAPPED = re.compile(r"\\(?:text|textbf|textit|textrm|textnormal|mathrm|mathbf|mathit|"
                      r"emph|mbox|underline)\s*\{([^{}]*)\}")
_SPACING = re.compile(r"\\(?:[ ,;:!]|quad|qquad)")  # LaTeX spacing commands
# a letter that stands alone: "C", "(C)", "C.", "c)"
_ALONE = re.compile(r"\(?([A-Za-z])\)?[.:]?")
# a letter that opens the answer: "C) 4.2", "(C) 4.2", "C. 4.2", "c) 4.2"
_LEADING = re.compile(r"(?:\(([A-Za-z])\)|([A-Z])[.:]|([A-Za-z])\))(?:\s|$)")
# a statement of the answer: "the answer is C", "Answer: (C)", "the correct option is C", the
# letter followed by the end, punctuation or a parenthesis ("Answer: A neutron" is not one)
_STATED = re.compile(r"(?i:\b(?:answer|option|choice)\s+is\s*:?|\banswer\s*[:：])\s*"
                     r"(?:\(([A-Za-z])\)|([A-Za-z])(?=[ \t]*(?:$|\n|[).,;:!?\]])))")


def read_letter(answer: str | None, count: int = len(LETTERS)) -> str | None:
    """The option letter a final answer names (module docstring), or None; only the first
    `count` letters are options. A letter alone or opening the answer ("C", "(C)", "C) 4.2",
    "\\text{C}"), else the last statement of the answer in it ("The answer is C.",
    "Answer: C"); a mention of another option after it ("option A was tempting") is not one."""
    if answer is None:
        return None
    text = _SPACING.sub(" ", str(answer))
    for _ in range(3):  # \text{\textbf{C}}
        text = _WRAPPED.sub(r"\1", text)
    text = re.sub(r"[$*]", "", text).strip()
    valid = LETTERS[:count]
    found = _ALONE.fullmatch(text) or _LEADING.match(text)
    stated = [m for m in _STATED.finditer(text)]
    if found is None and stated:
        found = stated[-1]
    if found is None:
        return None
    letter = next(g for g in found.groups() if g).upper()
    return letter if letter in valid else None


def choice_answers(responses: list[str], read_untagged: bool = False
                   ) -> tuple[list[str | None], list[str]]:
    """A multiple-choice task's final answers (r1kit.rewards.answers.final_answers): the last
    box of the answer part that names a letter (a box without one, a number worked out on
    the way, is not an answer to the question), else the part as the math rule reads it.
    Boxes that name different letters hedge: no answer, status "hedged"."""
    from r1kit.rewards.math import boxed_answers
    from r1kit.rewards.rule import answer_region, extract_answer

    answers: list[str | None] = []
    status: list[str] = []
    for response in responses:
        region = answer_region(response, read_untagged)
        boxes = [b for b in boxed_answers(region or "") if read_letter(b) is not None]
        if len({read_letter(b) for b in boxes}) > 1:
            answers.append(None)
            status.append("hedged")
            continue
        answers.append(boxes[-1] if boxes else extract_answer(response, read_untagged))
        status.append("ok")
    return answers, status


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


_LISTED = re.compile(r"(?:^|\s)\(?([A-Z])[).:]\s")  # "A) 3", "(A) 3", "A. 3" in a question


def _plain(value):
    """A numpy value (a parquet file read another way) as the Python value it holds."""
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        return value.tolist()
    return value


def _option_text(value, where: str, what: str) -> str:
    """An option as text; an error for what cannot be one (null, NaN, a bool, a list, empty)."""
    value = _plain(value)
    if isinstance(value, bool) or not isinstance(value, (str, int, float)) or (
            isinstance(value, float) and not math.isfinite(value)):
        shown = repr(value) if isinstance(value, float) else kind_of(value)
        raise R1kitError(f"{where}: {what} is {shown}, not an option's text",
                         "drop the row, or give the option as text")
    text = str(value).strip()
    if not text:
        raise R1kitError(f"{where}: {what} is empty", "drop the row, or give the option's text")
    return text


def looks_like_choice(row: dict) -> bool:
    """Whether a row holds a multiple-choice question in a layout with its options (a list
    of texts, or ARC's object, under choices or options; GPQA's columns; columns A, B)."""
    for name in CHOICE_FIELDS:
        value = _plain(row.get(name))
        if isinstance(value, dict) and "text" in value:
            return True
        if isinstance(value, list) and value and all(
                isinstance(o, (str, int, float)) and not isinstance(o, bool) for o in value):
            return True
    return all(f in row for f in GPQA_FIELDS) or ("A" in row and "B" in row)


def _checked_options(options: list[str], where: str, field: str) -> list[str]:
    if not 2 <= len(options) <= len(LETTERS):
        raise R1kitError(f"{where}: {field} has {len(options)} option"
                         f"{'s' * (len(options) != 1)}",
                         f"a question needs 2 to {len(LETTERS)} options")
    for i, text in enumerate(options):
        if text in options[:i]:
            raise R1kitError(f"{where}: {field}: options {LETTERS[options.index(text)]} and "
                             f"{LETTERS[i]} are the same text ({text[:40]!r})",
                             "a question's options must differ")
    return options


def _options(row: dict, choices_field: str, where: str, question: str
             ) -> tuple[list[str] | None, list[str]]:
    """(the options' texts, or None where the question lists them itself; their labels as
    the row names them: ARC's "1"-"4", or the letters)."""
    field = choices_field or next((f for f in CHOICE_FIELDS if f in row), "")
    if field and field not in row:
        raise R1kitError(f"{where}: no field {field!r}",
                         f"its fields are {', '.join(map(str, row))}; set choices_field to "
                         "the options' field (\"\" reads choices or options)")
    if not field and "A" in row and "B" in row:  # MMLU's CSV layout: columns A, B, C, D
        count = next(i for i, letter in enumerate(LETTERS + " ") if letter not in row)
        return _checked_options([_option_text(row[L], where, f"field {L!r}")
                                 for L in LETTERS[:count]], where, "fields A-" +
                                LETTERS[count - 1]), list(LETTERS[:count])
    if not field:  # the question lists its options: "A) ...", "(B) ...", "C. ..."
        marked = set(_LISTED.findall(question))
        count = next(i for i, letter in enumerate(LETTERS + " ") if letter not in marked)
        if count < 2:
            raise R1kitError(f"{where}: no options: the row has no choices or options field, "
                             "and its question lists none (as lines \"A) ...\", \"B) ...\")",
                             f"its fields are {', '.join(map(str, row))}; set choices_field to "
                             "the field that holds the options")
        return None, list(LETTERS[:count])
    value = _plain(row[field])
    labels: list[str] = []
    if isinstance(value, dict) and "text" in value:  # ARC: {"text": [...], "label": [...]}
        labels = [str(x) for x in _plain(value.get("label")) or []]
        value = _plain(value["text"])
    if not isinstance(value, list):
        raise R1kitError(f"{where}: field {field!r} is not a list of options",
                         "give the options as a list of texts, e.g. [\"4\", \"5\", \"6\", "
                         "\"7\"] (or leave them in the question and the field out)")
    options = _checked_options([_option_text(o, where, f"field {field!r}, option {i + 1},")
                                for i, o in enumerate(value)], where, f"field {field!r}")
    if labels and len(labels) != len(options):
        raise R1kitError(f"{where}: field {field!r} has {len(options)} texts and "
                         f"{len(labels)} labels")
    return options, labels or list(LETTERS[:len(options)])


def _answer_letter(value, options: list[str] | None, labels: list[str], where: str,
                   field: str) -> str:
    """The right option's letter from a row's answer: an index (0 = A), a letter, a label
    (ARC's "1"-"4"), or the right option's text."""
    value = _plain(value)
    count = len(labels)
    if isinstance(value, float) and value.is_integer():  # an index column read as floats
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and options is not None:
        if 0 <= value < count:
            return LETTERS[value]
        raise R1kitError(f"{where}: field {field!r} is {value}, not an option's index "
                         f"(0-{count - 1}: 0 is the first option)",
                         f"give an index from 0 to {count - 1}, a letter or the option's text")
    text = str(value).strip() if isinstance(value, (str, int, float)) and not isinstance(
        value, bool) else ""
    if text in labels:
        return LETTERS[labels.index(text)]
    if options is not None and text in options:
        return LETTERS[options.index(text)]
    letter = read_letter(text, count) if len(text) <= 3 else None
    if letter is not None:
        return letter
    told = (f"give one of {', '.join(labels)}, an index or an option's text" if options
            is not None else f"give the letter of one of the options the question lists "
            f"(A-{LETTERS[count - 1]})")
    raise R1kitError(f"{where}: field {field!r} is {value!r}, not an option", told)


def row_options(row: dict, answer_field: str, choices_field: str, where: str,
                question: str) -> tuple[list[str] | None, list[str], str]:
    """A row's options (None where its question lists them), their labels (the letters) and
    the right one's letter, in any layout of the module docstring (`question`: its text,
    which GPQA's order is drawn from)."""
    if all(f in row for f in GPQA_FIELDS):
        options, right = _shuffled([_option_text(row[f], where, f"field {f!r}")
                                    for f in GPQA_FIELDS], question)
        return _checked_options(options, where, "GPQA's answers"), list(LETTERS[:4]), \
            LETTERS[right]
    options, labels = _options(row, choices_field, where, question)
    row = resolved(row, answer_field)
    if answer_field == "answer" and "answer" not in row and "answerKey" in row:  # ARC's name
        answer_field = "answerKey"
    if answer_field not in row:
        raise R1kitError(f"{where}: no field {answer_field!r} (the right option)",
                         f"its fields are {', '.join(map(str, row))}; set answer_field")
    return options, labels, _answer_letter(row[answer_field], options, labels, where,
                                           answer_field)


def read_choice_examples(path, question_field: str = "question", answer_field: str = "answer",
                         choices_field: str = "", instruction: str = CHOICE_INSTRUCTION
                         ) -> list[Example]:
    """The rows of a multiple-choice file as examples (module docstring), checked; each
    question is followed by its options and `instruction`. An example's answer is the right
    letter; `meta` holds the option count, the row's other fields (for reward functions of
    your own), the question's own text and its subject where the row has one."""
    from r1kit.tasks.math import read_rows, row_at, row_question
    from r1kit.templates import prompt_text, with_instruction

    out = []
    either = []  # (where, answer, options): a number that is an index and another option's text
    for n, row in read_rows(path):
        where = row_at(path, n)
        field = question_field
        if field not in row and "Question" in row and all(f in row for f in GPQA_FIELDS):
            field = "Question"  # GPQA's own name
        question = row_question(row, field, where, "set question_field / answer_field (and "
                                "choices_field) to the right names")
        options, labels, letter = row_options(row, answer_field, choices_field, where,
                                              prompt_text(question))
        if options is not None and _index_or_text(resolved(row, answer_field).get(
                answer_field), options):
            either.append((where, resolved(row, answer_field)[answer_field], options))
        listed = ("\n\n" + "\n".join(f"{LETTERS[i]}) {o}" for i, o in enumerate(options))
                  + ("\n" if instruction else "") if options is not None else "")
        subject = next((row[f] for f in SUBJECT_FIELDS if isinstance(row.get(f), str)), None)
        fields = {k: v for k, v in row.items() if k != "prompt"}  # (as TRL: all but prompt)
        out.append(Example(question=with_instruction(question, listed + instruction),
                           answer=letter,
                           level=row_level(row.get("level")),
                           meta={"count": len(labels), "fields": fields, "problem": prompt_text(question),
                                 "subject": subject}))
    if either:  # (MMLU's answer column is an index: so it is read, and said)
        where, value, options = either[0]
        warnings.warn(f"{path}: {len(either)} of {len(out)} rows give the answer as a number "
                      f"that is also another option's text (first: {where}, answer {value} "
                      f"of options {options}): read as the option's index "
                      "(0 = A), as MMLU's answer column is; where it means the text, give it "
                      "as a string (\"2\") or the letter", stacklevel=2)
    return out


def _index_or_text(value, options: list[str]) -> bool:
    """Whether a row's answer is a whole number that indexes one option and is another
    option's text ([1, 2, 3, 4] with answer 2: C by index, B by text)."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < len(options):
        return False
    return str(value) in options and options.index(str(value)) != value


class ChoiceTask:
    """Multiple-choice questions (module docstring): train and held-out files. The check is
    a comparison of letters, in this process (no worker processes needed)."""

    checks_in_workers = False
    vote_key = staticmethod(choice_vote_key)
    vote_equal = staticmethod(choice_equal)
    read_untagged = False  # a stage's read_untagged (r1kit.rewards.answers.reads_untagged)

    def read_answers(self, responses: list[str]) -> tuple[list[str | None], list[str]]:
        """The final answers as a multiple-choice question reads them (choice_answers)."""
        return choice_answers(responses, self.read_untagged)

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

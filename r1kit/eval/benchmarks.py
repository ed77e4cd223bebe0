"""The benchmarks shipped with r1kit (r1kit/data, sources, licences and checksums in its
README), each a Task: held-out examples plus the verifier that RL rewards also use.

- math (MATH-500, GSM8K test, AIME 2024, AIME 2025, AMC 2023): the answer is checked with
  math-verify in the worker pool (r1kit.rewards.math), so "025" = 25 and 27.0 = 27;
- code (HumanEval, MBPP test split): the last ```python block of the answer runs against the
  benchmark's tests in the sandbox (r1kit.sandbox): MBPP runs code, setup, asserts; HumanEval
  runs the prompt, then the answer's code, then `test` and `check(entry_point)`;
- tiny: the tiny world's held-out arithmetic (for the tiny models);
- a JSONL or parquet file of your own: a math benchmark (question and reference answer per
  row, the same reader and checks as a recipe's `task = "math"`), scored like the shipped ones;
  or multiple-choice questions (GPQA, MMLU, ...: rows with `choices` or `options`, GPQA's
  columns, or any file with a `choices_field`), read and scored as `task = "choice"`
  (r1kit.tasks.choice).

An Example's question is the text the model is asked (a math problem gets the instruction to
put its final answer in \\boxed{}); `meta` keeps the benchmark row, its `solution` when it has
one (for decontamination) and its `subject` where the data has one (MATH-500).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from r1kit.errors import R1kitError
from r1kit.tasks import DATA_DIR
from r1kit.tasks.base import Example
from r1kit.tasks.code import CODE_INSTRUCTION, code_answers, code_scores, mbpp_tests_text
from r1kit.tasks.math import math_equal, math_vote_key, read_jsonl, row_level, verify_answers
from r1kit.templates import prompt_text, with_instruction

MATH_INSTRUCTION = "\nPlease reason step by step, and put your final answer within \\boxed{}."


@dataclass(frozen=True)
class Spec:
    file: str
    kind: str  # math | code
    question: str  # field with the problem text
    answer: str = ""  # field with the reference answer (math)
    solution: str = ""  # field with a worked solution, for decontamination
    k: int = 16  # the paper's samples per problem (64 for AIME)


BENCHMARKS: dict[str, Spec] = {
    "math500": Spec("math500/test.jsonl", "math", "problem", "answer", "solution", k=16),
    "gsm8k": Spec("gsm8k/test.jsonl", "math", "question", "final_answer", "answer", k=16),
    "aime2024": Spec("aime2024/test.jsonl", "math", "problem", "answer", "solution", k=64),
    "aime2025": Spec("aime2025/test.jsonl", "math", "problem", "answer", k=64),
    "amc2023": Spec("amc2023/test.jsonl", "math", "problem", "answer", k=64),
    "humaneval": Spec("humaneval/test.jsonl", "code", "prompt", solution="canonical_solution",
                      k=16),
    "mbpp": Spec("mbpp/test.jsonl", "code", "text", solution="code", k=16),
}
NAMES = (*BENCHMARKS, "tiny")


def _answer_text(value) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _question(name: str, spec: Spec, row: dict) -> str:
    if spec.kind == "math":
        return str(row[spec.question]).strip() + MATH_INSTRUCTION
    if name == "humaneval":
        return ("Complete the following Python function.\n```python\n" + row["prompt"] + "```"
                + CODE_INSTRUCTION)
    return row["text"] + mbpp_tests_text(row["test_list"]) + CODE_INSTRUCTION


class _HeldOut:
    """A Task with held-out examples only (`self._examples`), checked in batches."""

    _examples: list[Example]
    checks_in_workers = True  # math-verify's worker processes, or the code sandbox's

    def train_examples(self) -> list[Example]:
        return []

    def test_examples(self, split: str = "main") -> list[Example]:
        return list(self._examples)

    def verify(self, answer: str, example: Example) -> float:
        return self.verify_batch([answer], [example])[0]

    def verify_batch(self, answers: list[str], examples: list[Example]) -> list[float]:
        return [v for v, _ in verify_answers(answers, [e.answer for e in examples])]


class BenchmarkTask(_HeldOut):
    """A shipped benchmark as a Task (test examples only)."""

    def __init__(self, name: str, path: Path | None = None):
        if name not in BENCHMARKS:
            raise R1kitError(f"unknown benchmark {name!r}", f"shipped: {', '.join(NAMES)}")
        self.name = name
        self.spec = BENCHMARKS[name]
        self.path = path or DATA_DIR / self.spec.file
        if self.spec.kind == "math":  # cons@k votes by mathematical equivalence
            self.vote_key, self.vote_equal = math_vote_key, math_equal
        else:  # code: the answer part's last python block runs; no vote (CodeTask)
            self.read_answers, self.votes = code_answers, False
            self.read_untagged = True  # (code_answers reads a response without tags whole)
        self._examples = []
        for _, row in read_jsonl(self.path):
            level = row.get("level")
            self._examples.append(Example(
                question=_question(name, self.spec, row),
                answer=_answer_text(row.get(self.spec.answer, "")) if self.spec.answer else "",
                level=row_level(level),
                meta={"row": row, "problem": str(row[self.spec.question]),
                      "solution": str(row.get(self.spec.solution) or ""),
                      "subject": row.get("subject")}))

    def verify_batch(self, answers: list[str], examples: list[Example]) -> list[float]:
        if self.spec.kind == "math":
            return super().verify_batch(answers, examples)
        return code_scores(answers, [ex.meta["row"] for ex in examples])


DATA_SUFFIXES = (".jsonl", ".parquet", ".json")  # (.json: JSON Lines, as datasets' to_json)


def bench_name(name: str) -> str:
    """A shipped benchmark's name however it is written (MATH-500, AIME_2024, ...)."""
    if is_data_file(name):
        return name
    plain = name.lower().replace("-", "").replace("_", "")
    return plain if plain in NAMES else name


def is_data_file(name: str) -> bool:
    """Whether a --bench entry names a data file of your own rather than a shipped benchmark:
    a JSONL, parquet or .json name, a glob of shards, or any file that exists."""
    from r1kit.tasks.math import is_pattern

    return (Path(name).suffix.lower() in DATA_SUFFIXES or is_pattern(name)
            or Path(name).is_file())


class FileBenchmark(_HeldOut):
    """A math benchmark of your own: a JSONL or parquet file with a question and a reference
    answer per row, verified like the shipped math benchmarks. With `instruction` (default)
    each question gets the shipped benchmarks' request for a boxed final answer."""

    # cons@k votes by mathematical equivalence, as the shipped math benchmarks
    vote_key = staticmethod(math_vote_key)
    vote_equal = staticmethod(math_equal)

    def __init__(self, path, question_field: str = "question", answer_field: str = "answer",
                 instruction: bool = True):
        from r1kit.tasks.math import data_files, is_pattern, read_examples

        self.name = str(path)
        self.path = Path(path)
        if is_pattern(path):
            data_files(path)  # (no file matches: an error that says so)
        elif not self.path.is_file():
            raise R1kitError(f"--bench: {self.name!r} is not a file" if self.path.exists() else
                             f"--bench: file {self.name!r} not found",
                             "give a .jsonl or .parquet file, or a shipped benchmark's name")
        hint = "set --question-field / --answer-field to the right names"
        examples = read_examples(self.path, question_field, answer_field, fields_hint=hint)
        self._examples = []
        for ex in examples:
            question = with_instruction(ex.question, MATH_INSTRUCTION) if instruction else ex.question
            self._examples.append(Example(question=question, answer=ex.answer, level=ex.level,
                                          meta={"problem": prompt_text(ex.question)}))
        if not self._examples:
            raise R1kitError(f"--bench: {self.name!r} has no rows")


def choice_field_of(name: str, choices_field: str = "") -> str | None:
    """For a --bench file of your own that holds multiple-choice questions, the choices_field
    it is read with: `choices_field` where its rows have it, else "" where they have their
    options in a layout the choice task finds itself (r1kit.tasks.choice.looks_like_choice: a
    list under choices or options, GPQA's columns, columns A and B); None for any other file."""
    from r1kit.tasks.choice import looks_like_choice
    from r1kit.tasks.math import data_exists, read_rows

    if not is_data_file(name) or not data_exists(name):
        return None
    rows = [row for _, row in read_rows(name)]
    if choices_field and any(choices_field in row for row in rows):
        return choices_field
    return "" if any(looks_like_choice(row) for row in rows) else None


def is_code_file(name: str, answer_field: str = "answer") -> bool:
    """Whether a --bench entry is a file of code problems of your own: its first row has
    tests in a schema of the code reward (r1kit.rewards.code: tests, test_list, input/output
    cases, whatever other columns it has; or `test` and no `answer_field`)."""
    from r1kit.rewards.code_io import IO_KEYS, present
    from r1kit.tasks.math import data_exists, read_rows

    if not is_data_file(name) or not data_exists(name):
        return False
    rows = read_rows(name)
    first = rows[0][1] if rows else {}
    keys = ("tests", "test_list", *IO_KEYS)
    if any(present(first, key) for key in keys):
        return True  # (an answer column beside them: a reference solution, not a math answer)
    if answer_field in first:
        return False
    if any(key in first for key in keys):
        return True  # (empty: the code reader says so)
    # `test` alone: HumanEval's (with entry_point) or pytest-style test functions; a math
    # file's column named test is not
    test = first.get("test")
    return isinstance(test, str) and (first.get("entry_point") is not None
                                      or re.search(r"^def test\w*\s*\(", test, re.M) is not None)


def load_benchmark(name: str, seed: int = 0, question_field: str = "question",
                   answer_field: str = "answer", instruction: bool = True, world=None,
                   choices_field: str = "", code_instruction: str = "r1kit",
                   code_timeout: float | None = None):
    """The Task of a shipped benchmark, of the tiny world's held-out set ("tiny": of `world`, a
    WorldConfig, default the default world), or of a math, multiple-choice or code benchmark
    in a JSONL or parquet file of your own (the field names and instruction apply to it
    only; a code file's instruction is the code task's `code_instruction`, by default its
    request for a ```python block, and code_timeout its time limit per program)."""
    field = choice_field_of(name, choices_field)
    if field is not None:
        from r1kit.tasks.choice import ChoiceTask

        choices_field = field
        try:
            task = ChoiceTask(None, name, question_field, answer_field, choices_field,
                              instruction=instruction)
        except R1kitError as exc:  # say why the file was read so
            raise R1kitError(f"{exc.args[0]} (--bench reads {name} as multiple-choice "
                             "questions: rows of it have options"
                             + (f" in {choices_field!r})" if choices_field else ")"),
                             exc.hint) from exc
        task.name = str(name)
        return task
    if is_code_file(name, answer_field):  # run as a code task's held-out file is
        from r1kit.tasks.code import CodeTask

        task = CodeTask(None, name, question_field,
                        instruction=code_instruction if instruction else "",
                        timeout=code_timeout, fields_hint="set --question-field to its name")
        task.name = str(name)
        return task
    if is_data_file(name):
        return FileBenchmark(name, question_field, answer_field, instruction)
    if name == "tiny":
        from r1kit.tasks.arithmetic import ArithmeticTask

        return ArithmeticTask(world, seed=seed)
    return BenchmarkTask(name)

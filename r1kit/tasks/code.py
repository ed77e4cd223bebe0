"""Code as a GRPO task (R1-SPEC §3: a code problem's accuracy reward runs its test cases).

A JSONL or parquet file of your own, a row per problem: the question under `question_field`
(text or chat messages) and its tests in one of the schemas of r1kit.rewards.code — r1kit's
`tests` (and `setup`), MBPP's `test_list` (and `test_setup_code`), or HumanEval's `test` and
`entry_point` (the row's `prompt`, the function's signature and docstring, is then put before
the response's code, as HumanEval is scored), or pytest-style test_* functions in `test`; or
input/output cases (APPS' `input_output`, open-r1's `verification_info`, Codeforces'
`official_tests`, `test_cases`, CodeContests' tests, LiveCodeBench's `public_test_cases` and
`private_test_cases`: r1kit.rewards.code_io), each run as its own program on the case's stdin,
the stdout compared with the case's output, or, for function-call cases (APPS' `fn_name`,
LiveCodeBench's functional ones), the function called on the case's arguments and the value
it returns compared with the one expected. A
question of MBPP's layout is followed by its tests, as the shipped mbpp benchmark asks it
(they name the function to write). Each question is followed by the request for a
```python block that the shipped code benchmarks make (`code_instruction`: "r1kit", which
for input/output problems asks for a program reading stdin and printing its answer, and for
function-call problems names the function, after the row's `starter_code` where the
question does not show it; "" leaves
the questions as they are, other text is appended instead); the last python block of a
response's answer part is run against the row's tests in the sandbox (r1kit/sandbox), each
program for at most `code_timeout` wall seconds: accuracy 1 when all of them pass, else 0.
`code_max_cases` (grpo stages) runs only the first that many input/output or call cases of
a training row (the data's order: sample and public tests first); held-out rows run all.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from r1kit.errors import R1kitError
from r1kit.tasks.base import Example

CODE_INSTRUCTION = "\nWrite the complete Python code in a ```python code block."
# the same request for a problem judged on input/output cases (r1kit.rewards.code_io)
IO_INSTRUCTION = ("\nWrite a complete Python program that reads the input from standard "
                  "input and prints the answer to standard output, in a ```python code block.")




def call_instruction(name: str, starter: str = "") -> str:
    """The request for a problem whose cases call a function (r1kit.rewards.code_io: APPS'
    fn_name, LiveCodeBench's functional cases), showing the row's starter code if any."""
    shown = f"\n\nStart from this code:\n```python\n{starter.strip()}\n```\n" \
        if starter.strip() else ""
    return (f"{shown}\nWrite the complete Python code in a ```python code block. Its function "
            f"`{name}` (a method of class Solution where the code has one) is called on each "
            "test's arguments, and the value it returns is checked.")


def _words(text: str) -> str:
    return " ".join(text.split())


def code_answers(responses: list[str]) -> tuple[list[str | None], list[str]]:
    """A code task's final answers (r1kit.rewards.answers.final_answers): each response's
    answer part (r1kit.rewards.code.answer_part: after the reasoning, or the whole response
    when it has no tags), whose last python block code_scores runs, as `r1kit score` reads
    it. Not the math rule's last \\boxed{}: a box after the code would replace the code."""
    from r1kit.rewards.code import answer_part

    return [answer_part(r) for r in responses], ["ok"] * len(responses)


def mbpp_tests_text(tests) -> str:
    """What MBPP's prompts add after the problem (as the shipped mbpp benchmark asks it): its
    tests, which name the function the program must define."""
    return "\nYour code should pass these tests:\n" + "\n".join(tests)


def instruction_text(setting: str) -> str:
    """The text a `code_instruction` setting appends to each question: "r1kit" is
    CODE_INSTRUCTION, "" nothing, other text follows the question on a line of its own."""
    if setting == "r1kit":
        return CODE_INSTRUCTION
    return "\n" + setting.strip() if setting.strip() else ""


def code_limits(timeout: float | None):
    """The sandbox's limits for one program with `timeout` wall seconds (None: the default,
    10): the CPU limit is half of it, as the default's 5 of 10."""
    from r1kit.rewards.code import DEFAULT_LIMITS

    if timeout is None or timeout == DEFAULT_LIMITS.wall_seconds:
        return DEFAULT_LIMITS
    return replace(DEFAULT_LIMITS, wall_seconds=float(timeout), cpu_seconds=timeout / 2)


def code_scores(answers: list[str | None], rows: list[dict]) -> list[float]:
    """1.0 / 0.0 per (answer part, row): its last python block passes all the row's tests,
    as `r1kit score --reward code` scores it (r1kit.rewards.code; a HumanEval row's body-only
    answer goes under the prompt's signature)."""
    return [score for score, _ in code_results(answers, rows)]


def code_results(answers: list[str | None], rows: list[dict], limits=None, max_cases=0
                 ) -> list[tuple[float, str]]:
    """(score, status) per (answer part, row), as code_scores: status "timeout" where the
    program ran past the sandbox's time limit (a hang, or tests whose setup never ends),
    "error" where the sandbox itself failed, else "ok" (a program that fails its tests or
    raises is the response's own 0). The grpo stage counts them as reward/timeouts and
    reward/errors, against max_reward_failures."""
    from r1kit.rewards.code import score_code_rows

    completions = [f"<answer>{answer or ''}</answer>" for answer in answers]  # as the reward
    status = {"timeout": "timeout", "sandbox_error": "error"}
    return [(float(score), status.get(parts.get("status"), "ok"))
            for score, parts in score_code_rows(rows, completions, limits=limits,
                                                max_cases=max_cases)]


def read_code_examples(path, question_field: str, instruction: str = CODE_INSTRUCTION,
                       fields_hint: str = "set question_field to the question's") -> list[Example]:
    """The rows of a code data file as examples, checked: a question and tests in every row;
    `instruction` (instruction_text) follows each question; `fields_hint` ends a missing
    question field's hint."""
    from r1kit.rewards.code import _string_list, tests_from_row
    from r1kit.rewards.code_io import IOCases, present
    from r1kit.tasks.math import read_rows, row_at, row_level, row_question
    from r1kit.templates import with_instruction

    out = []
    for n, row in read_rows(path):
        question = row_question(row, question_field, row_at(path, n), fields_hint)
        try:
            spec = tests_from_row(row)
        except R1kitError as exc:
            raise R1kitError(f"{row_at(path, n)}: {exc.args[0]}", exc.hint) from exc
        asked = instruction
        if instruction == CODE_INSTRUCTION and isinstance(spec, IOCases):
            starter = row.get("starter_code")
            shown = question if isinstance(question, str) else str(question)
            if not isinstance(starter, str) or _words(starter) in _words(shown):
                starter = ""  # (the question shows it, however it is indented)
            asked = call_instruction(spec.call, starter) if spec.call else IO_INSTRUCTION
        if not present(row, "tests") and present(row, "test_list"):  # MBPP's layout:
            # asked as MBPP asks, with its tests (they name the function), unless the
            # question shows them
            shown = question if isinstance(question, str) else str(question)
            listed = _string_list(row, "test_list")  # (its JSON text too)
            if not all(t.strip() in shown for t in listed):
                question = with_instruction(question, mbpp_tests_text(listed))
        out.append(Example(question=with_instruction(question, asked), answer="",
                           level=row_level(row.get("level")),
                           meta={"row": row}))
    return out


class CodeTask:
    """Code problems with tests (module docstring): train and held-out files."""

    checks_in_workers = True  # the programs run in the sandbox's worker processes
    votes = False  # no cons@k: programs are not voted on (r1kit.eval.core.evaluate)
    read_answers = staticmethod(code_answers)
    read_untagged = True  # a response without tags is read whole (code_answers)

    def __init__(self, train_file, test_file=None, question_field: str = "question",
                 instruction: str = "r1kit", timeout: float | None = None,
                 max_cases: int = 0, fields_hint: str = "set question_field to the question's"):
        named = test_file or train_file
        self.name = Path(named).stem if named else "code"
        text = instruction_text(instruction)
        self._train = read_code_examples(train_file, question_field, text, fields_hint) \
            if train_file else []
        if max_cases:  # the training rows' rewards run their first max_cases cases only
            self._train = [replace(e, meta={**e.meta, "max_cases": max_cases})
                           for e in self._train]
        self._test = read_code_examples(test_file, question_field, text, fields_hint) \
            if test_file else []
        self.limits = code_limits(timeout)

    def train_examples(self) -> list[Example]:
        return list(self._train)

    def test_examples(self, split: str = "main") -> list[Example]:
        return list(self._test)

    def verify(self, answer: str, example: Example) -> float:
        return self.verify_batch([answer], [example])[0]

    def verify_batch(self, answers: list[str], examples: list[Example]) -> list[float]:
        return [score for score, _ in self.verify_detailed(answers, examples)]

    def verify_detailed(self, answers: list[str], examples: list[Example]
                        ) -> list[tuple[float, str]]:
        return code_results(answers, [e.meta["row"] for e in examples], self.limits,
                            [e.meta.get("max_cases", 0) for e in examples])

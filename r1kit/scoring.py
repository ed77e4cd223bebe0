"""`r1kit score`: score completions offline with one of the rewards, JSONL (or parquet) in,
JSONL out.

    r1kit score --reward math --input samples.jsonl --output scored.jsonl --set timeout=5

Each output row is its input row (fields and order kept) plus `reward` (float) and `parts`
(the reward's components), and `extra` where a reward function logged columns with log_extra;
an input field of those names is replaced. Rows come out in input order.

Everything that can be wrong with the input is found before any scoring starts: every row is
read and checked first, and a bad one (invalid UTF-8 or JSON, not an object, a missing or
mistyped field) stops the command with an error naming the file, the line and the field.
The output is written to a temporary file and renamed into place once all rows are scored,
so a failed run never leaves a half-written file (and never clobbers an old one).

Rewards (`REWARDS`; settings with `--set key=value`, values in TOML syntax):
- math      needs completion, answer. Settings: timeout (s per check, 5), workers,
            answer_field (the reference's field: answer; open-r1's data calls it solution;
            a grpo stage's completions.jsonl keeps its data rows' fields in `fields`),
            read_untagged (false: a completion without <think>, </think> or <answer> has no
            answer, R1's rule; true: it is read whole, as open-r1 reads completions).
- format    needs completion. Setting: style (answer: <think>…</think><answer>…</answer>;
            think: <think>…</think> then a summary, R1's). rule.format_reward.
- language  needs completion; optional per-row `target` and `prompt`. Setting: target (en).
- code      needs completion and tests (tests/setup, MBPP test_list/test_setup_code, or
            HumanEval test/entry_point). Settings: pass_fraction (false), timeout (wall s
            per program, 10; CPU: half). r1kit.rewards.code.
- choice    needs completion and the right option (answer: a letter, an index with the
            row's choices or options, or the right option's text; or GPQA's columns, with
            its Question). Settings: answer_field (answer), choices_field (choices or
            options), question_field (question: the question's text, whose options it may
            list; GPQA's option order is drawn from it, as the task reads it: Question where
            the field is missing), read_untagged (as math). The final answer must name the
            right letter:
            r1kit.tasks.choice.
- file.py:function or module:function: your own reward function, called as in a GRPO stage
            (completions, prompts from `prompt` or `question`, answer, the other fields by
            name; r1kit.rewards.custom). Needs completion. Setting: answer_field (answer; a
            dotted name reads inside an object: verl's reward_model.ground_truth).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from r1kit.errors import R1kitError
from r1kit.tasks.math import (
    check_output_outside,
    read_rows,
    reference_text,
    resolved,
    row_at,
    write_parquet,
)
from r1kit.templates import assistant_text

Scored = tuple[float, dict[str, Any]]


# ----- settings -------------------------------------------------------------------------------


def _positive_number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1e9:
        raise R1kitError(f"--set {name}: must be a number > 0 and < 1e9, got {value!r}")
    return float(value)


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise R1kitError(f"--set {name}: must be an integer >= 1, got {value!r}")
    return value


def _boolean(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise R1kitError(f"--set {name}: must be true or false, got {value!r}")
    return value


def _language_target(name: str, value: Any) -> str:
    from r1kit.rewards.language import TARGETS

    if value not in TARGETS:
        raise R1kitError(f"--set {name}: unknown language target {value!r}",
                         f"use one of: {', '.join(TARGETS)}")
    return value


# ----- row checks -----------------------------------------------------------------------------


def _need_str(row: dict, name: str) -> str | None:
    """Why `row[name]` is unusable as text, or None when it is fine. A completion may also be
    TRL's conversational form, one assistant message ([{"role": "assistant", "content": ...}])."""
    if name not in row:
        return f"missing field {name!r}"
    if name == "completion" and isinstance(row[name], (list, dict)):
        if assistant_text(row[name]) is None:
            held = "a list" if isinstance(row[name], list) else "an object"
            return (f"field 'completion' holds {held}: a completion is text or one assistant "
                    'message in a list, [{"role": "assistant", "content": "..."}]')
        return None
    if not isinstance(row[name], str):
        return f"field {name!r} must be a string, got {type(row[name]).__name__}"
    return None


def _field_name(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise R1kitError(f"--set {name}: must be a field name (text), got {value!r}")
    return value


def _choices_field(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise R1kitError(f"--set {name}: must be a field name (text; \"\" for choices or "
                         f"options), got {value!r}")
    return value


def _with_fields(row: dict, name: str) -> dict:
    """`row` with field `name` (a dotted name read inside an object: `resolved`), taken
    where the row lacks it from its `fields` object, as a grpo stage's completions.jsonl keeps
    the data row's own fields (your own reward functions read them there too)."""
    out = resolved(row, name)
    inner = row.get("fields")
    if name not in out and isinstance(inner, dict):
        found = resolved(inner, name)
        if name in found:
            return {**out, name: found[name]}
    return out


def _check_math(row: dict, settings: dict) -> str | None:
    problem = _need_str(row, "completion")
    if problem:
        return problem
    name = settings["answer_field"]
    row = _with_fields(row, name)
    if name not in row:
        other = next((f for f in ("solution", "answer", "reference", "ground_truth", "target")
                      if f in row and f != name), None)
        return f"missing field {name!r}" + (
            f" (this row has {other!r}: --set answer_field={other})" if other else "")
    answer = row[name]  # a number is fine too: GSM8K-style files store 72, not "72"
    if isinstance(answer, bool) or not isinstance(answer, (str, int, float)):
        return f"field {name!r} must be a string or a number, got {type(answer).__name__}"
    if not reference_text(answer):
        return f"field {name!r} holds no answer (blank, or nothing after '####')"
    return None


def _check_format(row: dict, settings: dict) -> str | None:
    return _need_str(row, "completion")


def _check_language(row: dict, settings: dict) -> str | None:
    from r1kit.rewards.language import TARGETS

    problem = _need_str(row, "completion")
    if problem:
        return problem
    target = row.get("target", settings["target"])
    if target not in TARGETS:
        return f"field 'target' must be one of {', '.join(TARGETS)}, got {target!r}"
    if (target == "prompt" or "prompt" in row) and isinstance(row.get("prompt"), list):
        from r1kit.templates import check_messages  # a conversation: its last user message

        try:
            check_messages(row["prompt"], "field 'prompt'")
        except R1kitError as exc:
            return str(exc)
        return None
    if target == "prompt" or "prompt" in row:
        return _need_str(row, "prompt")
    return None


def _check_code(row: dict, settings: dict) -> str | None:
    problem = _need_str(row, "completion")
    if problem:
        return problem
    from r1kit.rewards import code

    parse = getattr(code, "tests_from_row", None)
    try:  # the tests' types (a list of strings, ...): said with the row's line
        if parse is not None:
            parse(row)
    except R1kitError as exc:
        return str(exc)
    return None


def _choice_row(row: dict, settings: dict) -> tuple[str, int]:
    """(the right letter, the number of options) of a row for the choice reward, read as a
    choice task reads its rows (GPQA's option order drawn from the question's text)."""
    from r1kit.tasks.choice import GPQA_FIELDS, looks_like_choice, row_options
    from r1kit.templates import prompt_text

    field = settings["question_field"]
    if field not in row and "Question" in row and all(f in row for f in GPQA_FIELDS):
        field = "Question"  # GPQA's own name, as the task reads it
    if field not in row and not (settings["choices_field"] in row or looks_like_choice(row)):
        raise R1kitError(f"no field {field!r}: the question, which must list the options where "
                         "no field of the row holds them", "--set question_field=NAME (or "
                         "choices_field=NAME, the options' field)")
    question = row.get(field, "")
    question = prompt_text(question) if isinstance(question, list) else str(question)
    _, labels, letter = row_options(row, settings["answer_field"], settings["choices_field"],
                                    "", question)
    return letter, len(labels)


def _check_choice(row: dict, settings: dict) -> str | None:
    problem = _need_str(row, "completion")
    if problem:
        return problem
    try:
        _choice_row(row, settings)
    except R1kitError as exc:
        return exc.args[0].removeprefix(": ") + (f"; {exc.hint}" if exc.hint else "")
    return None


# ----- scoring --------------------------------------------------------------------------------


def _score_math(rows: list[dict], settings: dict) -> list[Scored]:
    from r1kit.rewards.math import MathVerifier, math_rewards

    # One pool for the whole file: the workers start once and check rows in parallel.
    with MathVerifier(workers=settings["workers"]) as verifier:
        # references as every other path reads them: GSM8K's "#### 72", floats without an
        # exponent (r1kit.tasks.math.reference_text)
        return math_rewards([r["completion"] for r in rows],
                            [reference_text(_with_fields(r, settings["answer_field"])[
                                settings["answer_field"]]) for r in rows],
                            verifier, settings["timeout"], settings["read_untagged"])


def _format_style(name: str, value: Any) -> str:
    if value not in ("answer", "think"):
        raise R1kitError(f"--set {name}: unknown format {value!r}",
                         "answer (<think>…</think><answer>…</answer>) or think (<think>…</think> "
                         "then a summary)")
    return value


def _score_format(rows: list[dict], settings: dict) -> list[Scored]:
    from r1kit.rewards.rule import format_reward

    out = []
    for row in rows:
        score = format_reward(row["completion"], settings["style"])
        out.append((score, {"format": score}))
    return out


def _score_language(rows: list[dict], settings: dict) -> list[Scored]:
    from r1kit.rewards.language import language_reward
    from r1kit.templates import prompt_text

    return [language_reward(r["completion"], r.get("target", settings["target"]),
                            prompt_text(r["prompt"]) if "prompt" in r else None) for r in rows]


def _score_code(rows: list[dict], settings: dict) -> list[Scored]:
    from r1kit.rewards.code import score_code_rows
    from r1kit.tasks.code import code_limits

    return list(score_code_rows(rows, [r["completion"] for r in rows],
                                     pass_fraction=settings["pass_fraction"],
                                     limits=code_limits(settings["timeout"])))


def _score_choice(rows: list[dict], settings: dict) -> list[Scored]:
    from r1kit.rewards.answers import final_answers
    from r1kit.tasks.base import Example
    from r1kit.tasks.choice import ChoiceTask, read_letter

    task = ChoiceTask(None)
    task.read_untagged = settings["read_untagged"]
    examples = []
    for row in rows:
        letter, count = _choice_row(row, settings)
        examples.append(Example(question="", answer=letter, meta={"count": count}))
    answers, status = final_answers(task, [r["completion"] for r in rows], examples)
    out = []
    for answer, st, ex in zip(answers, status, examples):
        score = task.verify(answer, ex) if answer is not None else 0.0
        out.append((score, {"accuracy": score, "answer": read_letter(answer, ex.meta["count"]),
                            "hedged": float(st == "hedged")}))
    return out


@dataclass(frozen=True)
class Reward:
    """A reward the `score` command can apply: its row check, its settings, its scorer."""

    check_row: Callable[[dict, dict], str | None]  # why a row cannot be scored, or None
    score: Callable[[list[dict], dict], list[Scored]]
    settings: dict[str, tuple[Any, Callable[[str, Any], Any]]] = field(default_factory=dict)


REWARDS: dict[str, Reward] = {
    "math": Reward(_check_math, _score_math, {
        "timeout": (5.0, _positive_number),
        "workers": (min(4, os.cpu_count() or 1), _positive_int),
        "answer_field": ("answer", _field_name),  # open-r1's data: solution
        "read_untagged": (False, _boolean),  # a completion without tags read whole (open-r1)
    }),
    "format": Reward(_check_format, _score_format, {"style": ("answer", _format_style)}),
    "language": Reward(_check_language, _score_language, {"target": ("en", _language_target)}),
    "choice": Reward(_check_choice, _score_choice, {"answer_field": ("answer", _field_name),
                                                    "choices_field": ("", _choices_field),
                                                    "question_field": ("question", _field_name),
                                                    "read_untagged": (False, _boolean)}),
    "code": Reward(_check_code, _score_code, {"pass_fraction": (False, _boolean),
                                              # wall seconds per program (CPU: half)
                                              "timeout": (10.0, _positive_number)}),
}


def _function_reward(spec: str) -> Reward:
    """Your own reward function ("module:function" or "file.py:function"), called as in a
    GRPO stage: completions, prompts (each row's `prompt`, else `question`), answer (its
    `answer` read as a math task reads a reference: a GSM8K solution cut to what follows
    '####'), and the rows' other fields by name (all but `prompt` and `completion`, as TRL
    passes its data set's columns), with those of a row's `fields` object (a grpo stage's
    completions.jsonl keeps the data row's own fields there)."""
    from r1kit.rewards.custom import (
        BUILT_IN,
        FunctionReward,
        check_signature,
        load_function,
        takes_reference,
    )
    from r1kit.tasks.base import Example
    from r1kit.tasks.math import likely_field

    fn = load_function(spec)
    checked: set[tuple] = set()

    def prompt_key(row: dict) -> str:
        return "prompt" if "prompt" in row else "question"

    def columns(row: dict) -> dict:
        """The row's fields but the completion and the prompt, and those of its `fields`
        object (a grpo stage's completions.jsonl keeps the data row's own fields there)
        where the row has none of that name."""
        inner = row.get("fields") if isinstance(row.get("fields"), dict) else {}
        return {**{k: v for k, v in inner.items() if k != "prompt"},
                **{k: v for k, v in row.items() if k not in ("completion", "prompt") and
                   not (k == "fields" and inner)}}

    def check_row(row: dict, settings: dict) -> str | None:
        problem = _need_str(row, "completion")
        field = settings["answer_field"]
        if problem is None and field != "answer" and field not in resolved(columns(row), field):
            problem = f"no field {field!r} (answer_field)"
        names = tuple(sorted(columns(row)))
        if problem is None and names not in checked:  # each set of fields once
            checked.add(names)
            check_signature(fn, [*BUILT_IN, *names], repr(spec))
        return problem

    def score(rows: list[dict], settings: dict) -> list[Scored]:
        field = settings["answer_field"]
        references = [resolved(columns(r), field).get(field) for r in rows]
        wanted = takes_reference(fn)
        if wanted and rows and all(ref is None for ref in references):
            # (open-r1's rows call it solution, verl's reward_model.ground_truth: the
            # function would get '' for every row and score them all alike)
            like = likely_field(columns(rows[0]), question=False)
            raise R1kitError(f"no row has a field {field!r} (answer_field), and {spec} takes "
                             f"the reference answers ({wanted})",
                             f"--set answer_field={like}" if like else
                             "--set answer_field= names the reference's field (a dotted name "
                             "reads inside an object); " + (
                                 "the rows' fields are " + ", ".join(map(str, columns(rows[0])))
                                 if columns(rows[0]) else "the rows have no field but the "
                                 "completion (and the prompt): add the references to them"))
        examples = [Example(question=r.get(prompt_key(r), ""), answer=reference_text(ref),
                            meta={"fields": columns(r),  # (as TRL: all but these)
                                  **({"reference": ref} if ref is not None else {})})
                    for r, ref in zip(rows, references)]
        return FunctionReward(fn).score([r["completion"] for r in rows], examples)

    # answer_field: the reference's field (verl's layout: reward_model.ground_truth)
    return Reward(check_row, score, {"answer_field": ("answer", _field_name)})


def get_reward(name: str) -> Reward:
    if ":" in name:
        return _function_reward(name)
    if name not in REWARDS:
        raise R1kitError(f"unknown reward {name!r}", f"valid rewards: {', '.join(REWARDS)}, "
                         "or your own function as 'file.py:function' or 'module:function'")
    return REWARDS[name]


def parse_settings(name: str, items: Sequence[str], reward: Reward | None = None
                   ) -> dict[str, Any]:
    """The reward's settings: its defaults, overridden by `key=value` items."""
    from r1kit.config import parse_value

    reward = reward or get_reward(name)
    settings = {key: default for key, (default, _) in reward.settings.items()}
    for item in items:
        if "=" not in item:
            raise R1kitError(f"--set {item!r}: expected key=value", "e.g. --set timeout=5")
        key, text = (part.strip() for part in item.split("=", 1))
        if key == "format" and "style" in reward.settings:  # a recipe's name for it
            key = "style"
        if key not in reward.settings:
            valid = ", ".join(reward.settings) or "none"
            raise R1kitError(f"--set {key}: unknown setting for the {name} reward",
                             f"its settings: {valid}")
        settings[key] = reward.settings[key][1](key, parse_value(text))
    return settings


def score_rows(name: str, rows: list[dict], settings: dict[str, Any],
               reward: Reward | None = None) -> list[Scored]:
    """Score already-checked rows with reward `name` (settings as from `parse_settings`)."""
    rows = [{**r, "completion": assistant_text(r["completion"])}
            if isinstance(r.get("completion"), list) else r for r in rows]
    scored = (reward or get_reward(name)).score(rows, settings)
    if len(scored) != len(rows):
        raise RuntimeError(f"the {name} reward returned {len(scored)} scores for "
                           f"{len(rows)} rows")
    return [(float(score), parts if hasattr(parts, "extra") else dict(parts))  # (Parts)
            for score, parts in scored]


def _write_atomically(path: Path, text: str) -> None:
    if path.exists() and not path.is_file():  # /dev/null, a named pipe: written into (a
        with open(path, "w", encoding="utf-8") as fh:  # rename would replace the device
            fh.write(text)  # with a plain file)
        return
    # Same directory, so the rename is atomic and never crosses file systems.
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # as open() would make it (mkstemp's is 0600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def score_file(name: str, input_path: Path, output_path: Path | None = None,
               set_items: Sequence[str] = (), completion_field: str = "completion"
               ) -> list[Scored]:
    """The `score` command: check everything, score every row, then write the output.
    `completion_field`: the field that holds each completion (a sample stage's data.jsonl
    calls it response); the rows are written as they came."""
    if os.environ.get("WORLD_SIZE", "1") != "1":  # (torchrun's)
        error = R1kitError("r1kit score runs in one process, not under torchrun",
                           "run r1kit score alone: each process would score every row and "
                           "write the same file")
        error.same_on_every_process = True  # (every process is refused alike)
        raise error
    reward = get_reward(name)
    settings = parse_settings(name, list(set_items), reward)
    if output_path is not None and output_path.is_dir():
        raise R1kitError(f"--output {str(output_path)!r} is a directory",
                         "give the path of the JSONL file to write")
    if output_path is not None:
        check_output_outside(output_path, input_path, "--input")
    if output_path is not None:  # missing directories are made, as r1kit eval --out makes them
        existing = next(p for p in output_path.absolute().parents if p.exists())
        if not existing.is_dir():
            raise R1kitError(f"--output {str(output_path)!r}: {str(existing)!r} is a file, "
                             "not a directory")
    numbered = read_rows(input_path)  # JSONL, or parquet by its suffix
    given = [row for _, row in numbered]  # written as they came
    if completion_field != "completion":  # scored with that field as the completion
        numbered = [(n, {**row, "completion": row[completion_field]} if completion_field in row
                     else {k: v for k, v in row.items() if k != "completion"})
                    for n, row in numbered]
    for (n, row), own in zip(numbered, given):
        problem = reward.check_row(row, settings)
        if problem and completion_field not in row:
            raise R1kitError(f"{row_at(input_path, n)}: missing field {completion_field!r}",
                             "the rows hold 'response' (as a sample stage's data.jsonl): "
                             "--completion-field response scores it"
                             if "response" in row and completion_field == "completion" else
                             "--completion-field names the field of the completions; the "
                             f"row's fields are {', '.join(map(str, own))}")
        if problem:  # (a problem that says its own fix, as the code reward's, says it)
            raise R1kitError(f"{row_at(input_path, n)}: {problem}", None if "\n" in problem
                             else "every row is scored: correct this one or drop it (r1kit "
                             "score --help says what each reward reads)")
    stream = sys.stdout if output_path is None else None
    # what a reward function prints goes to stderr, not into the JSONL written to stdout
    with contextlib.redirect_stdout(sys.stderr) if stream is not None else \
            contextlib.nullcontext():
        scored = score_rows(name, [row for _, row in numbered], settings, reward)
    rows = given

    ascii_only = stream is not None and (getattr(stream, "encoding", "") or "").lower() \
        not in ("utf-8", "utf8")
    lines = [json.dumps({**row, "reward": score, "parts": parts,
                         **({"extra": parts.extra} if getattr(parts, "extra", None) else {})},
                        ensure_ascii=ascii_only, default=str)
             for row, (score, parts) in zip(rows, scored)]
    text = "".join(line + "\n" for line in lines)
    if stream is None and output_path.suffix.lower() == ".parquet":  # (verl's and TRL's data)
        output_path.parent.mkdir(parents=True, exist_ok=True)
        write_parquet(output_path, list(map(json.loads, lines)))
    elif stream is None:
        output_path.parent.mkdir(parents=True, exist_ok=True)
        _write_atomically(output_path, text)
    else:
        stream.write(text)
        stream.flush()
    means = {}  # each part's mean over the rows that have a number for it (None: no score)
    for k in dict.fromkeys(k for _, p in scored for k in p):
        values = [float(p[k]) for _, p in scored if isinstance(p.get(k), (int, float))]
        if values:
            means[k] = (sum(values) / len(values), len(values))
    summary = ", ".join(f"{k} {v:.4g}" + (f" of {n} rows" if n < len(scored) else "")
                        for k, (v, n) in means.items())
    mean = sum(score for score, _ in scored) / len(scored)
    print(f"r1kit score: {len(scored)} rows, mean {name} reward {mean:.4f}"
          + (f" (means: {summary})" if summary else ""), file=sys.stderr)
    if name in ("math", "choice") and not settings["read_untagged"]:
        from r1kit.rewards.rule import UNTAGGED_NOTE, untagged

        bare = sum(untagged(str(row["completion"])) for _, row in numbered)
        if bare:
            print(f"note: {bare} of {len(scored)} completions have no <think>, </think> or "
                  f"<answer>: {UNTAGGED_NOTE} (--set read_untagged=true reads them whole, as "
                  "open-r1)", file=sys.stderr)
    return scored

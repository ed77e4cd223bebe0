"""Math word problems from a JSONL or parquet file, checked with math-verify.

Each row needs a question and a reference answer (field names are configurable). The
verifier parses both with math-verify, so equivalent forms (1/2, 0.5, \\frac{1}{2}) match. The
check runs in worker processes with a deadline (r1kit.rewards.math.MathVerifier).
"""

from __future__ import annotations

import json
import math
import re
from decimal import Decimal
from pathlib import Path

from r1kit.errors import R1kitError, hub_note
from r1kit.tasks.base import Example

MAX_LINE_BYTES = 64 * 1024 * 1024  # a longer line is almost surely not one JSONL row


def read_jsonl(path: str | Path) -> list[tuple[int, dict]]:
    """(line number, row) for each non-blank line of a JSONL file; a missing or empty file,
    invalid UTF-8, invalid JSON, a line over MAX_LINE_BYTES or a line that is not an object is
    an error naming file and line; a .csv, .tsv, .xlsx or .arrow file says which formats are
    read. A gzip-compressed file (HumanEval's HumanEval.jsonl.gz) is read as the JSONL in it."""
    p = _data_file(path)
    if p.suffix.lower() in (".csv", ".tsv", ".xlsx", ".arrow"):
        raise R1kitError(f"{p}: r1kit reads JSONL (.jsonl, one JSON object per line) and parquet "
                         f"(.parquet) data files, not {p.suffix.lower()}",
                         "convert it, e.g. pandas: pd.read_csv(path).to_json('data.jsonl', "
                         "orient='records', lines=True)")
    rows = []
    with p.open("rb") as fh:
        gz = fh.read(2) == b"\x1f\x8b"
    import gzip

    with gzip.open(p, "rb") if gz else p.open("rb") as fh:
        for n, raw in _lines(fh, p):
            if n == 1 and raw.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte order mark
                raw = raw[3:]
            if len(raw) > MAX_LINE_BYTES:
                raise R1kitError(f"{p}:{n}: line of {len(raw):,} bytes, over the limit of "
                                 f"{MAX_LINE_BYTES:,}", "is the file really JSONL, one row per "
                                 "line? Split or shorten the row")
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise R1kitError(f"{p}:{n}: not valid UTF-8 ({exc.reason})") from exc
            if not line.strip():
                continue
            array = ("a JSON array of rows is not JSONL: write one object per line, e.g. "
                     "pandas: pd.read_json(path).to_json('data.jsonl', orient='records', "
                     "lines=True)")
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise R1kitError(f"{p}:{n}: invalid JSON: {exc.msg}",
                                 array if n == 1 and line.lstrip().startswith("[") else None
                                 ) from exc
            if not isinstance(row, dict):
                whole = isinstance(row, list) and n == 1 and all(isinstance(r, dict) for r in row)
                raise R1kitError(f"{p}:{n}: expected a JSON object, got {type(row).__name__}",
                                 array if whole else "each line is one row, an object of named "
                                 "fields, e.g. {\"question\": \"What is 1 + 1?\", \"answer\": "
                                 "\"2\"}")
            rows.append((n, row))
    if not rows:
        raise R1kitError(f"{p}: no rows", "the file is empty")
    return rows


def _lines(fh, p: Path):
    """(line number, bytes) of an open file; a damaged gzip stream is an error naming it."""
    import gzip
    import zlib

    n = 0
    try:
        for n, raw in enumerate(fh, 1):
            yield n, raw
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise R1kitError(f"{p}:{n + 1}: the gzip-compressed file is damaged ({exc})",
                         "decompress it (gunzip) to see where, or fetch it again") from exc


def is_pattern(path: str | Path) -> bool:
    """Whether a data setting is a glob of shards ("data/train-*.parquet"): glob characters
    in a path that names no file (a file literally named "data[1].jsonl" is that file)."""
    return any(c in str(path) for c in "*?[") and not Path(path).exists()


def data_files(path: str | Path) -> list[Path]:
    """The files a data setting names: the file, or the files a glob matches in name order
    (a data set's shards, as a Hugging Face data set's data/train-*.parquet); a pattern that
    matches no file, or only directories, is an error."""
    if not is_pattern(path):
        return [Path(path)]
    import glob

    found = sorted(Path(f) for f in glob.glob(str(path), recursive=True) if Path(f).is_file())
    if not found:
        raise R1kitError(f"no file matches {str(path)!r}",
                         "a glob names the shards of one data set, e.g. data/train-*.parquet")
    return found


def check_output_outside(output: str | Path, data: str | Path, flag: str) -> None:
    """An R1kitError when `output` (a file a command writes) would be one of the shards the
    glob `data` reads, now or on the next run (it would read its own output back)."""
    if not is_pattern(data):
        return
    import fnmatch
    import os

    out = os.path.normpath(os.path.abspath(output))
    pattern = os.path.normpath(os.path.abspath(data))
    if fnmatch.fnmatch(out, pattern) or out in {str(f.resolve()) for f in data_files(data)}:
        raise R1kitError(f"--output {str(output)!r} matches the glob {flag} {str(data)!r}: a "
                         "later run would read it as one of its shards",
                         "write it outside the glob (another name or directory)")


def data_exists(path: str | Path) -> bool:
    """Whether a data setting names a file, or a glob that matches one."""
    if not is_pattern(path):
        return Path(path).is_file()
    try:
        return bool(data_files(path))
    except R1kitError:
        return False


def row_at(path: str | Path, n: int | str) -> str:
    """How messages name row `n` (read_rows' numbering) of the data setting `path`:
    FILE:LINE (a shard of a glob: the shard's own FILE:LINE)."""
    return n if isinstance(n, str) else f"{path}:{n}"


def _data_file(path: str | Path) -> Path:
    p = Path(path)
    if p.is_dir():
        shards = sorted(f.name for f in p.iterdir() if f.suffix.lower() in (".jsonl", ".parquet"))
        # its splits: a split's shards (train-00000-of-00002.parquet) or one file (test.jsonl);
        # the example names one split alone (a glob of them all would mix train and test)
        splits: dict[str, list[str]] = {}
        for f in shards:
            splits.setdefault(f.split("-")[0] if "-" in f else Path(f).stem, []).append(f)
        if splits:
            name, files = next(iter(splits.items()))
            example = p / (f"{name}-*{Path(files[0]).suffix}" if len(files) > 1 else files[0])
            others = (f" (one split at a time: it holds {', '.join(splits)})"
                      if len(splits) > 1 else "")
        raise R1kitError(f"{str(p)!r} is a directory, not a data file",
                         "give one .jsonl or .parquet file, or a glob of one data set's shards"
                         + (f", e.g. {example}{others}" if splits else ""))
    if not p.is_file():
        raise R1kitError(f"file {str(p)!r} not found{hub_note(str(path), dataset=True)}")
    return p


def read_rows(path: str | Path) -> list[tuple[int | str, dict]]:
    """(line or row number, row) of a JSONL or parquet file; no rows is an error. A glob
    (data_files) reads its shards one after the other, each row numbered "SHARD:LINE"
    (row_at names a row either way)."""
    if is_pattern(path):
        return [(f"{shard}:{n}", row) for shard in data_files(path)
                for n, row in read_rows(shard)]
    p = Path(path)
    if p.suffix.lower() != ".parquet":
        return read_jsonl(p)
    p = _data_file(p)
    try:
        import pyarrow
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise R1kitError(f"{p}: reading parquet needs pyarrow", "pip install pyarrow") from exc
    try:
        rows = pq.read_table(p).to_pylist()
    except (pyarrow.ArrowException, OSError) as exc:
        raise R1kitError(f"{p}: not a readable parquet file ({exc})",
                         "is it JSONL with a .parquet name? Name JSONL files .jsonl") from exc
    if not rows:
        raise R1kitError(f"{p}: no rows", "the file has no rows")
    return list(enumerate(rows, 1))


def write_parquet(path: Path, rows: list[dict]) -> None:
    """`rows` (JSON values) as a parquet file at `path`, its fields as columns in the order
    they first appear (a row without one holds null there, as does an object without a key
    another row's object of that column has), written under a temporary name and renamed
    into place: an R1kitError, with nothing written, where pyarrow is missing or the rows do
    not make columns (a field of numbers in one row and text in another, an empty object),
    which JSONL would hold."""
    import os

    try:
        import pyarrow
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise R1kitError(f"{path}: writing parquet needs pyarrow",
                         "pip install pyarrow, or name the output .jsonl") from exc
    names = dict.fromkeys(k for row in rows for k in row)
    tmp = Path(path).with_name(f".{Path(path).name}.tmp")
    try:
        pq.write_table(pyarrow.table({k: [row.get(k) for row in rows] for k in names}), tmp)
    except (pyarrow.ArrowException, OverflowError) as exc:  # (an empty object: a struct
        tmp.unlink(missing_ok=True)  # without fields, which parquet cannot hold)
        raise R1kitError(f"{path}: these rows cannot be written as parquet ({exc})",
                         "name the output .jsonl: JSONL holds any row") from exc
    os.replace(tmp, path)


def resolved(row: dict, *names: str) -> dict:
    """`row`, with the value at each dotted name of `names` that it lacks as a field of its
    own added under that name: "reward_model.ground_truth" is the `ground_truth` of the row's
    `reward_model` object (verl's layout). A name the row has as it is stays as it is."""
    found = {}
    for name in names:
        if not name or name in row or "." not in name:
            continue
        value, ok = row, True
        for part in name.split("."):
            if not isinstance(value, dict) or part not in value:
                ok = False
                break
            value = value[part]
        if ok:
            found[name] = value
    return {**row, **found} if found else row


def likely_field(row: dict, question: bool) -> str | None:
    """The row's field that looks like the question (or the answer), by the names other data
    sets give it, for a hint: a field of its own, else one inside an object field (verl's
    reward_model.ground_truth before extra_info.answer)."""
    likely = _LIKELY[question]
    return next((k for k in likely if k in row), None) or nested_name(
        row, likely if question else ("ground_truth", *likely))


def nested_name(row: dict, keys) -> str | None:
    """The dotted name of the first of `keys` that an object field of `row` holds
    ("reward_model.ground_truth"), for a hint; None where none does."""
    for key in keys:
        for field, value in row.items():
            if isinstance(value, dict) and key in value:
                return f"{field}.{key}"
    return None


def reference_text(value) -> str:
    """A reference answer from a data file as text that math-verify reads as the same number:
    floats without an exponent (str(0.00005) is '5e-05', which parses as e - 5); a GSM8K-style
    solution ('... #### 1,080') cut to what follows its last '####', without thousands
    separators; '' where there is no answer (None, NaN, blank)."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    text = format(Decimal(repr(value)), "f") if isinstance(value, float) else str(value).strip()
    if "####" in text:
        text = _THOUSANDS.sub("", text.rsplit("####", 1)[1].strip())
    return text


_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")


def kind_of(value) -> str:
    """How an error message names a JSON value that has the wrong type: 'null', 'a list'."""
    if value is None:
        return "null"
    name = {"str": "text", "dict": "object", "float": "number", "int": "integer"}.get(
        type(value).__name__, type(value).__name__)
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"


def checked_text(value, where: str, allow_empty: bool = False) -> str:
    """A prompt given as text: an R1kitError (naming `where`) when it is empty (unless
    `allow_empty`) or is chat messages written out as a JSON string (it would be trained on
    as literal JSON)."""
    text = str(value)
    if not text.strip() and not allow_empty:
        raise R1kitError(f"{where} is empty", "drop the rows without a prompt")
    if text.lstrip().startswith("[") and '"role"' in text:
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = None
        if isinstance(parsed, list) and parsed and all(isinstance(m, dict) and "role" in m
                                                       for m in parsed):
            raise R1kitError(f"{where} holds chat messages written as a JSON string",
                             "store them as a list of {\"role\", \"content\"} objects (e.g. "
                             "json.loads each one before writing the file), with template = "
                             "\"chat\"")
    return text


def row_question(row: dict, field: str, where: str, fields_hint: str):
    """A row's question (or prompt) under `field`: text (checked_text) or a conversation of
    chat messages (check_messages); a missing field, or a value of another type, is an
    R1kitError naming `where` (a missing field's hint lists the row's fields, then
    `fields_hint`)."""
    from r1kit.templates import check_messages

    row = resolved(row, field)
    if field not in row:
        raise R1kitError(f"{where}: no field {field!r}",
                         (f"its fields are {', '.join(map(str, row))}" if row else
                          "the row is empty") + f"; {fields_hint}")
    value = row[field]
    if isinstance(value, list):
        return check_messages(value, f"{where}: field {field!r}")
    if isinstance(value, str):
        return checked_text(value, f"{where}: field {field!r}")
    raise R1kitError(f"{where}: field {field!r} is {kind_of(value)}, not a question (text or "
                     "chat messages)")


# the names other data sets give a question and its answer (TRL's and open-r1's prompt and
# solution): named in the hint when a row lacks the field asked for
_LIKELY = {True: ("prompt", "problem", "question", "query", "input", "instruction"),
           False: ("solution", "answer", "final_answer", "ground_truth", "target", "gold")}


def read_examples(path, question_field: str, answer_field: str,
                  fields_hint: str = "set question_field / answer_field to the right names"
                  ) -> list[Example]:
    """The rows of a math data file as examples, checked: both fields present, the question
    text (or a conversation of chat messages, for template = "chat"), the answer text or a
    number, and a reference answer in every row."""
    from r1kit.templates import check_messages

    out = []
    for n, own in read_rows(path):
        row = resolved(own, question_field, answer_field)
        for field in (question_field, answer_field):
            if field not in row:
                # the rows before it have the field: this row lacks it, the names are right
                like = likely_field(row, field == question_field)
                raise R1kitError(f"{row_at(path, n)}: no field {field!r}", (
                    f"the rows before it have {field!r}: fill it in or drop this row" if out
                    else (f"its fields are {', '.join(map(str, row))}" if row else
                          "the row is empty") + (
                        f" ({like!r} looks like the "
                        f"{'question' if field == question_field else 'answer'})"
                        if like else "") + f"; {fields_hint}"))
            value = row[field]
            if field == question_field and isinstance(value, list):
                continue  # a conversation, checked below
            if not isinstance(value, (str, int, float)) or isinstance(value, bool):
                inner = (nested_name({field: value}, _LIKELY[field == question_field])
                         if isinstance(value, dict) else None)
                raise R1kitError(f"{row_at(path, n)}: field {field!r} is {kind_of(value)}, not text or "
                                 "a number", "fill it in or drop the rows without one"
                                 if value is None else
                                 f"its keys are {', '.join(map(str, value))}: name the one that "
                                 f"holds the {'question' if field == question_field else 'answer'}"
                                 f" with a dot, e.g. {_key_of(field, question_field)} = "
                                 f"\"{inner or field + '.' + next(iter(value), 'KEY')}\""
                                 if isinstance(value, dict) else "")
        if isinstance(row[question_field], (int, float)):
            # (an id or a count column: the model would be asked "8")
            raise R1kitError(f"{row_at(path, n)}: field {question_field!r} is a number "
                             f"({row[question_field]!r}), not a question",
                             "the rows before it have text there: fix this row or drop it"
                             if out else f"its fields are {', '.join(map(str, row))}; "
                             f"{fields_hint}")
        level = row.get("level")
        answer = reference_text(row[answer_field])
        if not answer:
            raise R1kitError(f"{row_at(path, n)}: field {answer_field!r} holds no answer "
                             f"({row[answer_field]!r})",
                             "every row needs a reference answer; drop the rows without one")
        question = row[question_field]
        where = f"{row_at(path, n)}: field {question_field!r}"
        question = (check_messages(question, where) if isinstance(question, list)
                    else checked_text(question, where))
        # the row's other fields, for reward functions of your own (passed by their names)
        # (the question's own field too, as TRL passes every column but "prompt")
        fields = {k: v for k, v in own.items() if k != "prompt"}
        out.append(Example(question=question, answer=answer, level=row_level(level),
                           meta={"fields": fields, "reference": row[answer_field]}))
    return out


def _key_of(field: str, question_field: str) -> str:
    """The setting that names `field` (for a hint)."""
    return "question_field" if field == question_field else "answer_field"


def row_level(value) -> int | None:
    """A row's difficulty level: an integer, or MATH's own text for one ("Level 5")."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    m = re.fullmatch(r"\s*(?:level\s*)?(\d+)\s*", value, re.IGNORECASE) \
        if isinstance(value, str) else None
    return int(m.group(1)) if m else None


def math_equal(answer: str, reference: str, timeout: float = 5.0) -> bool:
    """True when `answer` is equivalent to `reference` (math-verify, after normalisation).

    The check runs in the process-wide worker pool of r1kit.rewards.math, so an answer that
    sends sympy into a near-endless computation costs `timeout` seconds and scores False
    instead of hanging training or evaluation."""
    return verify_answers([answer], [reference], timeout)[0][0] == 1.0


def math_vote_key(answer: str) -> str:
    """cons@k's first grouping of math answers: their normalised form (r1kit.eval.core)."""
    from r1kit.rewards.math import normalize_answer

    return normalize_answer(answer)


class MathTask:
    # cons@k votes: answers grouped by their normalised form, groups merged where math-verify
    # finds them equal ("1/2", "0.5", "\\frac{1}{2}" vote together)
    vote_key = staticmethod(math_vote_key)
    vote_equal = staticmethod(math_equal)

    @property
    def checks_in_workers(self) -> bool:
        """math-verify in the verifier's worker processes, unless a subclass checks its own
        way (which may not work off the main thread: r1kit.rewards.overlap)."""
        return all(getattr(type(self), m) is getattr(MathTask, m)
                   for m in ("verify", "verify_batch", "verify_detailed"))

    def __init__(self, name: str, train_file, test_file=None, question_field: str = "question",
                 answer_field: str = "answer", test_fields: tuple[str, str] | None = None,
                 **hint):
        """`test_fields`: (question, answer) field names of the test file, when they differ."""
        self.name = name
        self._train = (read_examples(train_file, question_field, answer_field, **hint) if train_file
                       else [])
        tq, ta = test_fields or (question_field, answer_field)
        if test_fields is not None and not hint:  # the keys that name the test file's fields
            hint = {"fields_hint": "set test_question_field / test_answer_field (or "
                                   "question_field / answer_field, for both files) to the "
                                   "right names"}
        self._test = read_examples(test_file, tq, ta, **hint) if test_file else []

    def train_examples(self) -> list[Example]:
        return list(self._train)

    def test_examples(self, split: str = "main") -> list[Example]:
        return list(self._test)

    def verify(self, answer: str, example: Example) -> float:
        return 1.0 if math_equal(answer, example.answer) else 0.0

    def verify_batch(self, answers: list[str], examples: list[Example]) -> list[float]:
        """`verify` for many answers at once: one round trip to the worker pool."""
        return [v for v, _ in self.verify_detailed(answers, examples)]

    def verify_detailed(self, answers: list[str], examples: list[Example]
                        ) -> list[tuple[float, str]]:
        return verify_answers(answers, [e.answer for e in examples])


def verify_answers(answers: list[str], references: list[str], timeout: float = 5.0
                   ) -> list[tuple[float, str]]:
    """(score, status) per answer, checked with math-verify in the worker pool; status is "ok",
    "timeout" (the check ran past `timeout` seconds) or "error" (the check crashed)."""
    from r1kit.rewards.math import default_verifier

    results = default_verifier().verify_batch(list(zip(answers, references)), timeout)
    return [(1.0 if r.correct else 0.0,
             "timeout" if r.timed_out else "error" if r.error else "ok") for r in results]

"""Benchmark decontamination: find training rows that share a word n-gram with benchmarks.

The DeepSeek-R1 report filters its RL data by dropping every text that shares a 10-gram with
a test question or solution. `r1kit decontaminate` does the same check: texts are lowercased
and split into words on anything that is not a letter or digit (any script), the n-grams are
the tuples of n consecutive words, and a training row is contaminated when one of its
n-grams occurs in a benchmark's problems or solutions. A math benchmark's problem shorter
than n words (MATH-500 has 31) counts as one gram of its own length when it has at least
SHORT_MIN_WORDS words, so a training row that contains it word for word is caught too (not
code benchmarks' short problems and solutions, which are generic: "write a function to merge
two dictionaries", "return sorted(list(set(l)))"; nor a file of your own's, which may hold a
shared system message or instruction: the command says how many of its texts are too short
to check).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from r1kit.errors import R1kitError

NGram = tuple[str, ...]

_WORD = re.compile(r"[^\W_]+", re.UNICODE)
_SHOWN = 5  # contaminated rows listed in the report
SHORT_MIN_WORDS = 6  # a math problem of fewer words than this and than n is no evidence


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _ngram_list(text: str, n: int) -> list[NGram]:
    return _grams(_words(text), n)


def _grams(words: list[str], n: int) -> list[NGram]:
    return [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]


def _bench_grams(text: str, n: int, short: bool) -> list[NGram]:
    """A benchmark text's n-grams; with `short` (a math problem), a text shorter than n words
    (but of SHORT_MIN_WORDS or more) is one gram of its own length."""
    words = _words(text)
    if short and SHORT_MIN_WORDS <= len(words) < n:
        return [tuple(words)]
    return _grams(words, n)


def ngrams(text: str, n: int = 10) -> set[NGram]:
    """The word n-grams of `text`: lowercased, split on non-alphanumeric characters (unicode
    letters and digits are words), every run of n consecutive words as a tuple. A text of
    fewer than n words has none."""
    if n < 1:
        raise R1kitError(f"n-gram length must be at least 1, got {n}")
    return set(_ngram_list(text, n))


def _check_names(names: Iterable[str]) -> list[str]:
    from r1kit.eval.benchmarks import BENCHMARKS, bench_name, is_data_file
    from r1kit.models import cached_hub_data

    out: list[str] = []
    for name in names:
        name = bench_name(cached_hub_data(name.strip()) or name.strip())
        if not name or name in out:
            continue
        if name not in BENCHMARKS and not is_data_file(name):
            why = ("the tiny world is not a text benchmark" if name == "tiny"
                   else f"unknown benchmark {name!r}")
            raise R1kitError(f"cannot decontaminate against {name!r}: {why}",
                             f"use benchmarks among: {', '.join(BENCHMARKS)}, or a JSONL or "
                             "parquet file of your own")
        out.append(name)
    if not out:
        raise R1kitError("no benchmark given", f"name some of: {', '.join(BENCHMARKS)}")
    return out


def benchmark_ngrams(names: Iterable[str], n: int = 10, short: dict[str, int] | None = None
                     ) -> dict[str, set[NGram]]:
    """For each benchmark name, the n-grams of all its test problems and solutions (worked
    solutions, reference code; a math problem shorter than n words is one shorter gram, see
    _bench_grams); for a JSONL or parquet file of your own, of every text of its rows (as a
    training row's, _row_texts; texts shorter than n words give none: counted in `short`
    by file, where given). Unknown names and "tiny" are an R1kitError."""
    from r1kit.eval.benchmarks import BENCHMARKS, load_benchmark

    if n < 1:
        raise R1kitError(f"n-gram length must be at least 1, got {n}")
    out: dict[str, set[NGram]] = {}
    short = short if short is not None else {}
    from r1kit.tasks.math import read_rows, row_at

    for name in _check_names(names):
        grams: set[NGram] = set()
        if name not in BENCHMARKS:  # a file of your own: every text of its rows
            for line, row in read_rows(name):
                for text in _row_texts(row, None, row_at(name, line)):
                    grams.update(_bench_grams(text, n, False))
                    short[name] = short.get(name, 0) + (0 < len(_words(text)) < n)
            out[name] = grams
            continue
        for ex in load_benchmark(name).test_examples():
            for key in ("problem", "solution"):
                whole = key == "problem" and BENCHMARKS[name].kind == "math"
                grams.update(_bench_grams(str(ex.meta.get(key) or ""), n, whole))
        out[name] = grams
    return out


def _row_texts(row: dict, fields: Sequence[str] | None, where: str) -> list[str]:
    """The texts of a training row: the named fields (each must be a string), or by default
    every string value, the strings of a list, the "content" of dicts in a list (chat
    messages; ShareGPT's turns: "value") and the strings of an object's values but its labels
    (ARC's choices: {"text": [...], "label": [...]})."""
    if fields is not None:
        texts = []
        for field in fields:
            if field not in row:
                raise R1kitError(f"{where}: no field {field!r}",
                                 f"its fields are {', '.join(map(str, row))}; fix --fields")
            value = row[field]
            if isinstance(value, list) and all(isinstance(m, dict) and isinstance(
                    _turn_text(m), str) for m in value):  # chat messages: their texts
                texts.extend(_turn_text(m) for m in value)
                continue
            if not isinstance(value, str):
                raise R1kitError(f"{where}: field {field!r} is a {type(value).__name__}, "
                                 "not a string", "name text fields in --fields")
            texts.append(value)
        return texts
    texts = []
    for value in row.values():
        if isinstance(value, dict):  # ARC's choices {"text": [...], "label": [...]}
            value = [t for k, v in value.items() if k not in ("label", "labels")
                     for t in (v if isinstance(v, list) else [v])]
        if isinstance(value, str):
            texts.append(value)
        elif isinstance(value, list):
            for item in value:
                if isinstance(item, str):
                    texts.append(item)
                elif isinstance(item, dict) and isinstance(_turn_text(item), str):
                    texts.append(_turn_text(item))
    return texts


def _turn_text(message: dict):
    """A chat message's text: its "content", or a ShareGPT turn's "value"."""
    return message.get("content", message.get("value"))


def _grams_at(words: list[str], n: int, starts: dict[str, set[int]]):
    """The grams a text's words give, in text order: at each position its n-gram, and the
    grams of the lengths of the short benchmark texts that begin with the word there."""
    for i, word in enumerate(words):
        if i + n <= len(words):
            yield tuple(words[i:i + n])
        for length in sorted(starts.get(word, ())):
            if i + length <= len(words):
                yield tuple(words[i:i + length])


def _contamination(texts: list[str], bench_ngrams: dict[str, set[NGram]], n: int,
                   starts: dict[str, set[int]]) -> tuple[list[str], NGram | None]:
    """(benchmarks sharing a gram with the texts, first shared gram in text order);
    `starts`: the first word of each benchmark gram shorter than n, with its lengths."""
    hit: list[str] = []
    first: NGram | None = None
    for text in texts:
        for gram in _grams_at(_words(text), n, starts):
            for name, grams in bench_ngrams.items():
                if gram in grams:
                    if first is None:
                        first = gram
                    if name not in hit:
                        hit.append(name)
            if len(hit) == len(bench_ngrams):
                return [b for b in bench_ngrams if b in hit], first
    return [b for b in bench_ngrams if b in hit], first


def _find(rows: Sequence[dict], bench_ngrams: dict[str, set[NGram]],
          fields: Sequence[str] | None, n: int, where: Sequence[str]) -> list[dict[str, Any]]:
    if n < 1:
        raise R1kitError(f"n-gram length must be at least 1, got {n}")
    starts: dict[str, set[int]] = {}  # the short grams (math problems under n words)
    for grams in bench_ngrams.values():
        for g in grams:
            if 0 < len(g) < n:
                starts.setdefault(g[0], set()).add(len(g))
    found = []
    for i, row in enumerate(rows):
        benches, first = _contamination(_row_texts(row, fields, where[i]), bench_ngrams, n,
                                        starts)
        if benches:
            found.append({"index": i, "benchmarks": benches, "example": " ".join(first or ())})
    return found


def find_contaminated(rows: list[dict], bench_ngrams: dict[str, set[NGram]],
                      fields: Sequence[str] | None = None, n: int = 10) -> list[dict[str, Any]]:
    """One dict per row sharing an n-gram with a benchmark, in row order:
    {"index": position in `rows`, "benchmarks": names that match, "example": the first
    shared n-gram joined by spaces}. `fields` names the text fields (each must be a string
    in every row); None means every string value (see `_row_texts`). `n` must be the length
    `bench_ngrams` was built with."""
    return _find(rows, bench_ngrams, fields, n, [f"row {i}" for i in range(len(rows))])


def run_decontaminate_command(args) -> None:
    """`r1kit decontaminate`: report the training rows that share an n-gram with the chosen
    benchmarks and, with --output, write the other rows there (as JSONL, or parquet for a
    .parquet name)."""
    n = int(args.n)
    if n < 1:
        raise R1kitError(f"--n must be at least 1, got {n}")
    fields = None
    if args.fields is not None:
        fields = [f.strip() for f in str(args.fields).split(",") if f.strip()]
        if not fields:
            raise R1kitError("--fields names no field", "give comma-separated field names")
    names = _check_names(str(args.bench).split(","))

    from r1kit.tasks.math import check_output_outside, read_rows, row_at

    if args.output is not None:
        check_output_outside(args.output, args.train, "--train")
    numbered = read_rows(args.train)
    rows = [row for _, row in numbered]
    where = [row_at(args.train, line) for line, _ in numbered]
    for row, loc in zip(rows, where):  # check every row's fields before the slow part
        _row_texts(row, fields, loc)
    short: dict[str, int] = {}
    bench = benchmark_ngrams(names, n, short)
    found = _find(rows, bench, fields, n, where)

    print(f"{args.train}: {len(rows)} training rows, {n}-grams against {', '.join(names)}")
    for name in names:
        count = sum(name in hit["benchmarks"] for hit in found)
        print(f"  {name}: {count} contaminated row{'' if count == 1 else 's'}")
    print(f"  total: {len(found)} contaminated row{'' if len(found) == 1 else 's'}")
    for name, count in short.items():
        if count:
            print(f"  note: {count} text{'s' if count > 1 else ''} of {name} "
                  f"{'are' if count > 1 else 'is'} shorter than {n} words and not checked "
                  f"(a lower --n checks {'them' if count > 1 else 'it'})")
    for hit in found[:_SHOWN]:
        line = numbered[hit["index"]][0]
        print(f"  {'line ' if isinstance(line, int) else ''}{line} "
              f"[{', '.join(hit['benchmarks'])}]: \"{hit['example']}\"")
    if len(found) > _SHOWN:
        print(f"  ... and {len(found) - _SHOWN} more")

    if args.output is not None:
        dropped = {hit["index"] for hit in found}
        out = Path(args.output)
        lines = []
        for i, row in enumerate(rows):
            if i in dropped:
                continue
            try:
                lines.append(json.dumps(row, ensure_ascii=False) + "\n")
            except (TypeError, ValueError) as exc:
                raise R1kitError(f"{where[i]}: row cannot be written as JSON ({exc})") from exc
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.suffix.lower() == ".parquet":  # (the rows as JSON holds them, in columns)
            from r1kit.tasks.math import write_parquet

            write_parquet(out, list(map(json.loads, lines)))
        else:
            out.write_text("".join(lines), encoding="utf-8")
        print(f"wrote {len(lines)} clean rows to {out} (dropped {len(dropped)})")

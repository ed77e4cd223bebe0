"""r1kit decontaminate: word n-gram overlap between training rows and shipped benchmarks."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from r1kit.cli import main
from r1kit.decontaminate import benchmark_ngrams, find_contaminated, ngrams
from r1kit.errors import R1kitError
from r1kit.eval.benchmarks import load_benchmark

UNRELATED = ("The quick brown fox jumps over the lazy dog while seven purple zebras "
             "quietly compose a symphony about cloud computing in the rain.")


def _words(text: str) -> list[str]:
    return re.findall(r"[^\W_]+", text.lower())


@pytest.fixture(scope="module")
def gsm8k_problem() -> str:
    return load_benchmark("gsm8k").test_examples()[0].meta["problem"]


@pytest.fixture(scope="module")
def gsm8k_grams() -> dict[str, set]:
    return benchmark_ngrams(["gsm8k"])


def _rows(problem: str) -> list[dict]:
    words = problem.split()
    assert len(_words(problem)) >= 20
    copied = "Here is a fresh problem: " + " ".join(words[:14]) + " Solve it carefully."
    nine = " ".join(_words(problem)[3:12])
    assert len(nine.split()) == 9
    near = f"Zorblax quibbles: {nine} frobnicate wibble."
    return [{"prompt": copied, "id": 1}, {"prompt": UNRELATED, "id": 2},
            {"prompt": near, "id": 3}]


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                    encoding="utf-8")
    return path


def test_ngrams_normalise_case_and_punctuation():
    assert ngrams("Hello, WORLD! foo_bar x-y", n=2) == {
        ("hello", "world"), ("world", "foo"), ("foo", "bar"), ("bar", "x"), ("x", "y")}
    assert ngrams("Ünïcode Straße 42", n=3) == {("ünïcode", "straße", "42")}
    assert ngrams("a b c", n=1) == {("a",), ("b",), ("c",)}


def test_ngrams_short_text_has_none():
    assert ngrams("one two three four five six seven eight nine") == set()
    assert len(ngrams("one two three four five six seven eight nine ten")) == 1
    assert ngrams("") == set()
    with pytest.raises(R1kitError):
        ngrams("a b", n=0)


def test_only_the_copied_row_is_contaminated(gsm8k_problem, gsm8k_grams):
    found = find_contaminated(_rows(gsm8k_problem), gsm8k_grams)
    assert [hit["index"] for hit in found] == [0]
    assert found[0]["benchmarks"] == ["gsm8k"]
    example = found[0]["example"].split()
    assert len(example) == 10
    assert " ".join(example) in " ".join(_words(gsm8k_problem))


def test_nine_word_overlap_counts_with_n_9(gsm8k_problem):
    found = find_contaminated(_rows(gsm8k_problem), benchmark_ngrams(["gsm8k"], n=9), n=9)
    assert [hit["index"] for hit in found] == [0, 2]


def test_fields_and_chat_messages(gsm8k_problem, gsm8k_grams):
    rows = [{"prompt": UNRELATED, "response": gsm8k_problem},
            {"messages": [{"role": "user", "content": gsm8k_problem}]},
            {"tags": ["x", gsm8k_problem]},
            {"choices": {"text": ["a", gsm8k_problem], "label": ["A", "B"]}},  # ARC's options
            {"choices": {"text": ["a", "b"], "label": ["A", "B"]}}]
    assert [h["index"] for h in find_contaminated(rows, gsm8k_grams)] == [0, 1, 2, 3]
    assert find_contaminated(rows[:1], gsm8k_grams, fields=["prompt"]) == []
    with pytest.raises(R1kitError, match="prompt"):
        find_contaminated(rows[1:2], gsm8k_grams, fields=["prompt"])


def test_humaneval_solution_is_detected():
    ex = load_benchmark("humaneval").test_examples()[0]
    solution = ex.meta["solution"]
    assert ngrams(solution) and not ngrams(solution) & ngrams(ex.meta["problem"])
    rows = [{"text": UNRELATED}, {"text": "My answer:\n```python\n" + solution + "```"}]
    found = find_contaminated(rows, benchmark_ngrams(["humaneval", "gsm8k"]))
    assert [(h["index"], h["benchmarks"]) for h in found] == [(1, ["humaneval"])]


def test_cli_writes_the_clean_rows(tmp_path, gsm8k_problem, capsys):
    rows = _rows(gsm8k_problem)
    train = _write_jsonl(tmp_path / "train.jsonl", rows)
    out = tmp_path / "clean" / "train.jsonl"
    assert main(["decontaminate", "--train", str(train), "--bench", "gsm8k,math500",
                 "--output", str(out)]) == 0
    report = capsys.readouterr().out
    assert "3 training rows" in report
    assert "gsm8k: 1 contaminated" in report and "math500: 0 contaminated" in report
    assert "line 1 [gsm8k]" in report
    assert "wrote 2 clean rows" in report
    kept = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert kept == rows[1:]
    pq = pytest.importorskip("pyarrow.parquet")  # a .parquet output is parquet
    assert main(["decontaminate", "--train", str(train), "--bench", "gsm8k", "--output",
                 str(tmp_path / "clean.parquet")]) == 0
    assert pq.read_table(tmp_path / "clean.parquet").to_pylist() == rows[1:]


def test_cli_without_output_only_reports(tmp_path, gsm8k_problem, capsys):
    train = _write_jsonl(tmp_path / "train.jsonl", _rows(gsm8k_problem))
    assert main(["decontaminate", "--train", str(train), "--bench", "gsm8k",
                 "--fields", "prompt"]) == 0
    assert "total: 1 contaminated" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.jsonl"]


def test_cli_against_a_held_out_file_of_your_own(tmp_path, capsys):
    """--bench takes your own JSONL: a training row that copies ten words of any of its
    rows' texts is contaminated."""
    held_out = "A train leaves the station at noon and travels sixty miles per hour east"
    test = _write_jsonl(tmp_path / "test.jsonl", [{"problem": held_out, "solution": "60"}])
    train = _write_jsonl(tmp_path / "train.jsonl", [{"prompt": UNRELATED},
                                                    {"prompt": "Q: " + held_out.lower()}])
    assert main(["decontaminate", "--train", str(train), "--bench", f"gsm8k,{test}"]) == 0
    report = capsys.readouterr().out
    assert f"{test}: 1 contaminated" in report and "gsm8k: 0 contaminated" in report
    assert f"line 2 [{test}]" in report


def test_short_texts_of_your_own_file_are_counted_and_benchmark_spellings(tmp_path, capsys):
    """Texts of your own held-out file shorter than n words are not checked (they may be a
    system message every row shares), and the report says how many; a lower --n checks them.
    ShareGPT turns are read; shipped names as r1kit eval takes them (MATH-500)."""
    question = "How many eggs does Ann have left today?"
    test = _write_jsonl(tmp_path / "test.jsonl", [
        {"question": question, "answer": "Ann has 4"},
        {"system": "You are a helpful, respectful and honest assistant.", "question": UNRELATED}])
    train = _write_jsonl(tmp_path / "train.jsonl", [
        {"conversations": [{"from": "human", "value": f"Q: {question} A:"},
                           {"from": "gpt", "value": "4"}]},
        {"messages": [{"role": "system",
                       "content": "You are a helpful, respectful and honest assistant."},
                      {"role": "user", "content": "Hi"}]},
        {"prompt": "Ann has 4 cats and 2 dogs."}])
    assert main(["decontaminate", "--train", str(train), "--bench", f"MATH-500,{test}"]) == 0
    report = capsys.readouterr().out
    assert f"{test}: 0 contaminated rows" in report and "math500: 0 contaminated rows" in report
    assert f"note: 3 texts of {test} are shorter than 10 words and not checked" in report
    assert main(["decontaminate", "--train", str(train), "--bench", str(test), "--n", "8"]) == 0
    report = capsys.readouterr().out
    assert f"{test}: 2 contaminated rows" in report  # the question, and the system message
    assert "line 1 [" in report and "line 2 [" in report and "line 3" not in report


@pytest.mark.parametrize("bench", ["nosuch", "tiny", "gsm8k,nosuch"])
def test_cli_rejects_unknown_benchmarks(tmp_path, bench, capsys):
    train = _write_jsonl(tmp_path / "train.jsonl", [{"prompt": UNRELATED}])
    assert main(["decontaminate", "--train", str(train), "--bench", bench]) == 2
    err = capsys.readouterr().err
    assert "gsm8k" in err and "humaneval" in err


def test_cli_missing_field(tmp_path, capsys):
    train = _write_jsonl(tmp_path / "train.jsonl",
                         [{"prompt": UNRELATED}, {"question": UNRELATED}])
    assert main(["decontaminate", "--train", str(train), "--bench", "gsm8k",
                 "--fields", "prompt"]) == 2
    err = capsys.readouterr().err
    assert "'prompt'" in err and "train.jsonl:2" in err


def test_cli_bad_n_and_missing_file(tmp_path, capsys):
    train = _write_jsonl(tmp_path / "train.jsonl", [{"prompt": UNRELATED}])
    assert main(["decontaminate", "--train", str(train), "--bench", "gsm8k", "--n", "0"]) == 2
    assert main(["decontaminate", "--train", str(tmp_path / "nope.jsonl"),
                 "--bench", "gsm8k"]) == 2
    err = capsys.readouterr().err
    assert "--n" in err and "not found" in err


def test_short_benchmark_problem_copied_word_for_word_is_caught():
    # MATH-500 has problems of fewer than 10 words: they have no 10-gram, so such a problem
    # counts as one gram of its own length (SHORT_MIN_WORDS words or more)
    short = next(ex.meta["problem"] for ex in load_benchmark("math500").test_examples()
                 if 6 <= len(_words(ex.meta["problem"])) < 10)
    grams = benchmark_ngrams(["math500"])
    rows = [{"prompt": f"Practice problem. {short} Show your work."},
            {"prompt": " ".join(_words(short)[:-1]) + " zorblax"},  # not the whole problem
            {"prompt": UNRELATED}]
    found = find_contaminated(rows, grams)
    assert [(h["index"], h["benchmarks"]) for h in found] == [(0, ["math500"])]
    assert found[0]["example"] == " ".join(_words(short))


def test_short_code_solutions_and_problems_are_not_evidence():
    # code benchmarks' short texts are generic code and requests: not contamination
    rows = [{"code": "def unique(l):\n    return sorted(list(set(l)))\n"},
            {"code": "def f(n):\n    return sum(range(n + 1))\n"},
            {"prompt": "Write a function to merge two dictionaries."}]
    assert find_contaminated(rows, benchmark_ngrams(["humaneval", "mbpp"])) == []

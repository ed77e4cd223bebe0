"""Tests of `r1kit score` (r1kit.scoring): offline scoring of a JSONL file with a reward.

The contract checked here: one output row per input row, in order, input fields kept; every
reward name works; settings are typed and unknown ones rejected; and a bad input file is
refused with a message naming file, line and field, exit status 2, no traceback, before any
scoring starts and without touching the output file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from r1kit import scoring
from r1kit.cli import main
from r1kit.errors import R1kitError


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                    encoding="utf-8")
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def box(answer: str, think: str = "work") -> str:
    return f"<think>{think}</think><answer>\\boxed{{{answer}}}</answer>"


MATH_ROWS = [
    {"id": 0, "completion": box("\\frac{1}{2}"), "answer": "0.5", "meta": {"src": "a"}},
    {"id": 1, "completion": box("3"), "answer": "4"},
    {"id": 2, "completion": box("025"), "answer": 25},  # a numeric reference is fine
    {"id": 3, "completion": "<think>\\boxed{7}</think>", "answer": "7"},  # only in the think
    {"id": 4, "completion": box("2") + " \\boxed{5}", "answer": "5"},  # not in the answer tag
    {"id": 5, "completion": "<think>a</think><answer>\\boxed{5} or \\boxed{6}</answer>",
     "answer": "6"},
    {"id": 6, "completion": box("27.0"), "answer": "27", "reward": "old"},  # replaced
    # references read as the GRPO reward and evaluation read them (reference_text)
    {"id": 7, "completion": box("1080"), "answer": "so 1,000 + 80 #### 1,080"},
    {"id": 8, "completion": box("0.00005"), "answer": 0.00005},
]


def test_math_scores_in_order_with_fields_kept(tmp_path, capsys) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", MATH_ROWS)
    out = tmp_path / "out.jsonl"
    assert main(["score", "--reward", "math", "--input", str(src), "--output", str(out),
                 "--set", "workers=2"]) == 0
    rows = read_jsonl(out)
    assert [r["id"] for r in rows] == list(range(len(MATH_ROWS)))
    assert [r["reward"] for r in rows] == [1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0]
    for got, given in zip(rows, MATH_ROWS):
        assert {k: v for k, v in got.items() if k not in ("reward", "parts")} == {
            k: v for k, v in given.items() if k != "reward"}
        assert list(got)[:len(given)] == list(given)  # field order kept too
    assert rows[5]["parts"] == {"accuracy": 0.0, "timeout": 0.0, "hedged": 1.0, "error": 0.0}
    said = capsys.readouterr()
    assert said.out == ""  # everything went to the file
    assert "note:" not in said.err  # every completion has its tags
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask  # as any file it writes (not 0600)


def test_completions_without_reasoning_tags_are_counted(tmp_path, capsys) -> None:
    # a right answer with no <think>, </think> or <answer> scores 0 (no answer part): said
    src = write_jsonl(tmp_path / "bare.jsonl", [
        {"completion": "The answer is \\boxed{12}", "answer": "12"},
        {"completion": box("12"), "answer": "12"}])
    assert main(["score", "--reward", "math", "--input", str(src)]) == 0
    said = capsys.readouterr()
    assert [r["reward"] for r in map(json.loads, said.out.splitlines())] == [0.0, 1.0]
    assert "note: 1 of 2 completions have no <think>, </think> or <answer>: r1kit reads a " \
           "final answer only after the reasoning" in said.err
    # read whole, as open-r1 reads completions: the untagged right answer scores, no note;
    # a tagged response is read as before (an answer only inside <think> is none)
    inner = write_jsonl(tmp_path / "inner.jsonl", [
        {"completion": "The answer is \\boxed{12}", "answer": "12"},
        {"completion": "<think> \\boxed{12} </think> <answer> 13 </answer>", "answer": "12"},
        {"completion": "<think> still \\boxed{12}", "answer": "12"}])
    assert main(["score", "--reward", "math", "--input", str(inner),
                 "--set", "read_untagged=true"]) == 0
    said = capsys.readouterr()
    assert [r["reward"] for r in map(json.loads, said.out.splitlines())] == [1.0, 0.0, 0.0]
    assert "note:" not in said.err


def test_math_reference_under_another_field_name(tmp_path, capsys) -> None:
    """open-r1's data keeps the reference in `solution`: the missing `answer` is named with
    the setting that reads it, and `--set answer_field=solution` scores those rows."""
    rows = [{"completion": box("3"), "solution": "3"}, {"completion": box("4"), "solution": "5"}]
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    err = run_error(capsys, ["score", "--reward", "math", "--input", str(src)])
    assert "missing field 'answer'" in err and "--set answer_field=solution" in err
    out = tmp_path / "out.jsonl"
    assert main(["score", "--reward", "math", "--input", str(src), "--output", str(out),
                 "--set", "answer_field=solution", "--set", "workers=1"]) == 0
    assert [r["reward"] for r in read_jsonl(out)] == [1.0, 0.0]
    # a grpo stage's completions.jsonl: the data row's own fields in `fields` (its `answer`
    # is the reference as the stage read it)
    written = write_jsonl(tmp_path / "completions.jsonl", [
        {"completion": r["completion"], "answer": r["solution"], "fields": {"solution": s}}
        for r, s in zip(rows, ("3", "4"))])
    assert main(["score", "--reward", "math", "--input", str(written), "--output", str(out),
                 "--set", "answer_field=solution", "--set", "workers=1"]) == 0
    assert [r["reward"] for r in read_jsonl(out)] == [1.0, 1.0]


def test_math_timeout_setting_and_pathological_row(tmp_path, capsys) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", [
        {"completion": box("9^{9^{9^{9}}}"), "answer": "1"},
        {"completion": box("1"), "answer": "1"}])
    assert main(["score", "--reward", "math", "--input", str(src), "--set", "timeout=0.5",
                 "--set", "workers=1"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["reward"] for r in rows] == [0.0, 1.0]
    assert rows[0]["parts"]["timeout"] == 1.0


def test_format_reward(tmp_path, capsys) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", [
        {"completion": "<think>a</think><answer>b</answer>"},
        {"completion": "<think>a</think>"},
        {"completion": "Sure! <think>a</think><answer>b</answer>"}])
    assert main(["score", "--reward", "format", "--input", str(src)]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["reward"], r["parts"]) for r in rows] == [
        (1.0, {"format": 1.0}), (0.0, {"format": 0.0}), (0.0, {"format": 0.0})]
    # R1's own format, named as the recipes' setting (format) or as the reward's (style)
    summary = write_jsonl(tmp_path / "summary.jsonl", [{"completion": "<think>a</think> b"}])
    for key in ("style", "format"):
        assert main(["score", "--reward", "format", "--input", str(summary), "--set",
                     f"{key}=think"]) == 0
        assert json.loads(capsys.readouterr().out)["reward"] == 1.0
    assert main(["score", "--reward", "format", "--input", str(summary)]) == 0
    assert json.loads(capsys.readouterr().out)["reward"] == 0.0


def test_language_reward_targets(tmp_path, capsys) -> None:
    zh = "<think>8加2=10</think><answer>10</answer>"
    en = "<think>eight plus two</think><answer>10</answer>"
    src = write_jsonl(tmp_path / "in.jsonl", [
        {"completion": zh},
        {"completion": en},
        {"completion": zh, "target": "en"},  # a row's own target beats --set
        {"completion": zh, "target": "prompt", "prompt": "计算 8 加 2"},
        {"completion": en, "target": "prompt", "prompt": "计算 8 加 2"}])
    assert main(["score", "--reward", "language", "--input", str(src),
                 "--set", "target=zh"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["reward"] for r in rows] == [1.0, 0.0, 0.0, 1.0, 0.0]
    assert rows[0]["parts"] == {"language": 1.0, "target_words": 1.0, "words": 1.0}
    # the default target is English
    assert main(["score", "--reward", "language", "--input", str(src)]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["reward"] for r in rows][:2] == [0.0, 1.0]


def test_non_ascii_survives_the_round_trip(tmp_path) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", [{"completion": "<think>加</think>", "note": "é"}])
    out = tmp_path / "out.jsonl"
    assert main(["score", "--reward", "language", "--input", str(src), "--output",
                 str(out)]) == 0
    [row] = read_jsonl(out)
    assert row["completion"] == "<think>加</think>" and row["note"] == "é"


def test_code_reward_wiring(tmp_path, capsys, monkeypatch) -> None:
    # A stand-in for the sandbox's scoring: checks that rows, completions, pass_fraction and
    # the timeout (wall seconds, CPU half of it) reach it and that its scores come back in order.
    import r1kit.rewards.code as code_reward

    calls = []

    def score_code_rows(rows, completions, *, pass_fraction=False, limits=None):
        calls.append((rows, completions, pass_fraction, limits))
        return [(float(len(c)), {"passed": float(len(c))}) for c in completions]

    monkeypatch.setattr(code_reward, "score_code_rows", score_code_rows)
    src = write_jsonl(tmp_path / "in.jsonl", [
        {"completion": "a", "tests": ["assert f(1) == 2"], "setup": ""},
        {"completion": "bb", "test_list": ["assert f(1) == 2"], "test_setup_code": ""},
        {"completion": "ccc", "test": "def check(f):\n    assert f(1) == 2",
         "entry_point": "f"}])
    assert main(["score", "--reward", "code", "--input", str(src),
                 "--set", "pass_fraction=true", "--set", "timeout=3"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["reward"] for r in rows] == [1.0, 2.0, 3.0]
    [(given_rows, completions, pass_fraction, limits)] = calls
    assert completions == ["a", "bb", "ccc"] and pass_fraction is True
    assert given_rows[2]["entry_point"] == "f"
    assert (limits.wall_seconds, limits.cpu_seconds) == (3.0, 1.5)


def test_code_reward_real_module(tmp_path, capsys) -> None:
    pytest.importorskip("r1kit.rewards.code")
    good = "<think>add</think><answer>\n```python\ndef add(a, b):\n    return a + b\n```\n</answer>"
    bad = "<think>add</think><answer>\n```python\ndef add(a, b):\n    return a - b\n```\n</answer>"
    tests = ["assert add(1, 2) == 3", "assert add(2, 2) == 4"]
    src = write_jsonl(tmp_path / "in.jsonl", [{"completion": good, "test_list": tests},
                                              {"completion": bad, "test_list": tests}])
    assert main(["score", "--reward", "code", "--input", str(src)]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == 2 and rows[0]["reward"] > rows[1]["reward"]


# ----- errors ---------------------------------------------------------------------------------


def run_error(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("r1kit: error: ")
    assert "Traceback" not in captured.err and captured.out == ""
    return captured.err


GOOD = {"completion": box("1"), "answer": "1"}


@pytest.mark.parametrize(
    "lines,expected",
    [
        ([GOOD, GOOD, "{not json"], ["in.jsonl:3", "invalid JSON"]),
        ([GOOD, b"\xff\xfe{}"], ["in.jsonl:2", "UTF-8"]),
        ([GOOD, "[1, 2]"], ["in.jsonl:2", "expected a JSON object", "list",
                            "an object of named fields"]),
        # rows written as lists: what a row looks like, not how to convert a JSON array
        (['["What is 1 + 1?", "2"]'], ["in.jsonl:1", "an object of named fields"]),
        # a JSON array of rows (a .json export) on the first line: how to make JSONL of it
        (['[{"completion": "x", "answer": "1"}]'], ["in.jsonl:1", "is not JSONL"]),
        (["[", json.dumps(GOOD) + ",", "]"], ["in.jsonl:1", "invalid JSON", "is not JSONL"]),
        ([GOOD, GOOD, GOOD, {"completion": "x"}], ["in.jsonl:4", "'answer'"]),
        ([{"answer": "1"}], ["in.jsonl:1", "'completion'"]),
        ([GOOD, {"completion": 5, "answer": "1"}], ["in.jsonl:2", "'completion'", "string"]),
        # one assistant message, not in its list: says the form that works
        ([{"completion": {"role": "assistant", "content": "x"}, "answer": "1"}],
         ["in.jsonl:1", "holds an object", 'one assistant message in a list, [{"role"']),
        ([GOOD, {"completion": "x", "answer": [1]}], ["in.jsonl:2", "'answer'"]),
        ([GOOD, "", GOOD, "{"], ["in.jsonl:4"]),  # blank lines are skipped but still counted
    ],
)
def test_malformed_rows_are_refused_before_scoring(tmp_path, capsys, monkeypatch, lines,
                                                   expected) -> None:
    src = tmp_path / "in.jsonl"
    src.write_bytes(b"".join(
        (x if isinstance(x, bytes) else (x if isinstance(x, str) else json.dumps(x)).encode())
        + b"\n" for x in lines))
    out = tmp_path / "out.jsonl"
    out.write_text("previous results\n")

    def must_not_score(*args, **kwargs):
        raise AssertionError("scoring started before the input was checked")

    monkeypatch.setattr(scoring, "score_rows", must_not_score)
    err = run_error(capsys, ["score", "--reward", "math", "--input", str(src),
                             "--output", str(out)])
    for text in expected:
        assert text in err
    assert out.read_text() == "previous results\n"  # the old output is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl", "out.jsonl"]


@pytest.mark.parametrize(
    "reward,row,expected",
    [
        ("format", {"text": "x"}, "'completion'"),
        ("math", {"completion": "x", "answer": "see above ####"}, "holds no answer"),
        ("language", {"completion": "x", "target": "fr"}, "'target'"),
        ("language", {"completion": "x", "target": "prompt"}, "'prompt'"),
        ("code", {"completion": "x"}, "'tests'"),
        ("code", {"completion": "x", "test": "def check(f): pass"}, "'entry_point'"),
        ("code", {"completion": "x", "tests": "assert f() == 1"}, "list of strings"),
        ("code", {"completion": "x", "test_list": [1, 2]}, "list of strings"),
    ],
)
def test_missing_fields_per_reward(tmp_path, capsys, reward, row, expected) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", [row])
    err = run_error(capsys, ["score", "--reward", reward, "--input", str(src)])
    assert "in.jsonl:1" in err and expected in err


def test_no_output_file_when_scoring_fails(tmp_path, capsys, monkeypatch) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", [GOOD])
    out = tmp_path / "out.jsonl"

    def failing(*args, **kwargs):
        raise R1kitError("scorer broke")

    monkeypatch.setattr(scoring, "score_rows", failing)
    run_error(capsys, ["score", "--reward", "math", "--input", str(src), "--output", str(out)])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"]


def test_output_directories_are_made(tmp_path, capsys) -> None:
    """--output in directories that do not exist yet: made (as r1kit eval --out makes them),
    only once the rows are scored; a file where a directory should be is an error."""
    src = write_jsonl(tmp_path / "in.jsonl", [GOOD])
    out = tmp_path / "new" / "deeper" / "out.jsonl"
    assert main(["score", "--reward", "math", "--input", str(src), "--output", str(out)]) == 0
    assert json.loads(out.read_text())["reward"] == 1.0
    capsys.readouterr()
    err = run_error(capsys, ["score", "--reward", "math", "--input", str(src), "--output",
                             str(src / "out.jsonl")])
    assert "in.jsonl' is a file, not a directory" in err
    run_error(capsys, ["score", "--reward", "maths", "--input", str(src), "--output",
                       str(tmp_path / "other" / "out.jsonl")])
    assert not (tmp_path / "other").exists()


def test_unknown_reward_lists_valid_names(tmp_path, capsys) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", [GOOD])
    err = run_error(capsys, ["score", "--reward", "maths", "--input", str(src)])
    assert "'maths'" in err
    for name in ("math", "format", "language", "code"):
        assert name in err


def test_missing_input_file(tmp_path, capsys) -> None:
    err = run_error(capsys, ["score", "--reward", "math", "--input", str(tmp_path / "no.jsonl")])
    assert "no.jsonl" in err


# ----- settings -------------------------------------------------------------------------------


def test_parse_settings_types_and_defaults() -> None:
    assert scoring.parse_settings("math", ["timeout=2", "workers=3"]) == {
        "timeout": 2.0, "workers": 3, "answer_field": "answer", "read_untagged": False}
    assert scoring.parse_settings("math", [" timeout = 0.25 "])["timeout"] == 0.25
    assert scoring.parse_settings("math", [])["timeout"] == 5.0
    assert scoring.parse_settings("language", ["target=zh"]) == {"target": "zh"}
    assert scoring.parse_settings("language", ['target="prompt"']) == {"target": "prompt"}
    assert scoring.parse_settings("code", ["pass_fraction=true"]) == {"pass_fraction": True,
                                                                       "timeout": 10.0}
    assert scoring.parse_settings("format", []) == {"style": "answer"}
    assert scoring.parse_settings("format", ["style=think"]) == {"style": "think"}


@pytest.mark.parametrize(
    "reward,item,expected",
    [
        ("math", "tiemout=5", "tiemout"),  # unknown setting: named
        ("format", "target=en", "target"),
        ("math", "timeout=abc", "timeout"),
        ("math", "timeout=0", "> 0"),
        ("math", "timeout=nan", "> 0 and < 1e9"),  # (NaN turned the time limit off)
        ("math", "timeout=inf", "> 0 and < 1e9"),  # (a traceback from select)
        ("math", "workers=1.5", "workers"),
        ("language", "target=fr", "'fr'"),
        ("code", "pass_fraction=yes", "true or false"),
        ("code", "timeout=-1", "> 0"),
        ("math", "timeout", "key=value"),
    ],
)
def test_bad_settings(tmp_path, capsys, reward, item, expected) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", [GOOD])
    err = run_error(capsys, ["score", "--reward", reward, "--input", str(src), "--set", item])
    assert expected in err


def test_conversational_completions_are_scored_as_their_text(tmp_path, capsys) -> None:
    """TRL's conversational completions (one assistant message) score as their text; the
    output row keeps the field as it was given."""
    message = [{"role": "assistant", "content": box("4")}]
    src = write_jsonl(tmp_path / "in.jsonl", [{"completion": message, "answer": "4"},
                                              {"completion": box("4"), "answer": "4"}])
    out = tmp_path / "out.jsonl"
    assert main(["score", "--reward", "math", "--input", str(src), "--output", str(out)]) == 0
    rows = read_jsonl(out)
    assert [r["reward"] for r in rows] == [1.0, 1.0] and rows[0]["completion"] == message
    capsys.readouterr()
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"completion": [{"role": "user",
                                                                 "content": "x"}], "answer": "4"}])
    err = run_error(capsys, ["score", "--reward", "math", "--input", str(bad)])
    assert "bad.jsonl:1" in err and "one assistant message" in err


def test_your_own_reward_function(tmp_path, capsys) -> None:
    """--reward file.py:function scores with your function, called as in a GRPO stage: the
    rows' fields by name (open-r1's accuracy_reward(completions, solution, **kwargs)), None
    scoring 0; a parameter no row provides is refused before scoring."""
    fn = tmp_path / "mine.py"
    fn.write_text("def accuracy_reward(completions, solution, **kwargs):\n"
                  "    return [None if s is None else float(c.strip() == s)\n"
                  "            for c, s in zip(completions, solution)]\n"
                  "def needs_gold(completions, gold, **kwargs):\n"
                  "    return [0.0] * len(completions)\n"
                  "def by_ids(completions, completion_ids, **kwargs):\n"
                  "    return [0.0] * len(completions)\n")
    rows = [{"id": 0, "completion": "4", "solution": "4", "prompt": "2+2"},
            {"id": 1, "completion": [{"role": "assistant", "content": "5"}], "solution": "4"},
            {"id": 2, "completion": "4", "solution": None}]
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.jsonl"
    with pytest.warns(UserWarning, match=r"returned None \(or NaN\) for 1 of 3"):
        assert main(["score", "--reward", f"{fn}:accuracy_reward", "--input", str(src),
                     "--output", str(out)]) == 0
    scored = read_jsonl(out)
    assert [r["reward"] for r in scored] == [1.0, 0.0, 0.0]
    assert [r["parts"]["custom_none"] for r in scored] == [0.0, 0.0, 1.0]
    said = capsys.readouterr().err  # custom's mean over the rows it scored
    assert "custom 0.5 of 2 rows" in said and "custom_none 0.3333" in said
    assert main(["score", "--reward", f"{fn}:needs_gold", "--input", str(src)]) == 2
    assert "parameter 'gold' is not one of" in capsys.readouterr().err
    assert main(["score", "--reward", f"{fn}:by_ids", "--input", str(src)]) == 2
    assert "'completion_ids' comes only in a grpo stage" in capsys.readouterr().err
    assert main(["score", "--reward", "nonsense", "--input", str(src)]) == 2
    assert "file.py:function" in capsys.readouterr().err


def test_a_function_taking_the_reference_is_refused_rows_without_one(tmp_path, capsys):
    """open-r1's rows call the reference solution: a function that takes `answer` (or a verl
    compute_score its ground_truth) would get '' for every row and score them all 0, so the
    command stops and names the field; a function without a reference scores them."""
    fn = tmp_path / "mine.py"
    fn.write_text("def accuracy(completions, answer, **kwargs):\n"
                  "    return [float(c.strip() == a) for c, a in zip(completions, answer)]\n"
                  "def compute_score(data_source, solution_str, ground_truth, extra_info=None):\n"
                  "    return float(solution_str.strip() == ground_truth)\n"
                  "def short(completions, **kwargs):\n"
                  "    return [-len(c) for c in completions]\n")
    src = write_jsonl(tmp_path / "in.jsonl", [{"problem": "2+2", "solution": "4",
                                               "completion": "4"},
                                              {"problem": "2+3", "solution": "5",
                                               "completion": "6"}])
    for name, param in (("accuracy", "answer"), ("compute_score", "ground_truth")):
        err = run_error(capsys, ["score", "--reward", f"{fn}:{name}", "--input", str(src)])
        assert "no row has a field 'answer'" in err and f"({param})" in err, err
        assert "--set answer_field=solution" in err
        out = tmp_path / f"{name}.jsonl"
        assert main(["score", "--reward", f"{fn}:{name}", "--input", str(src), "--set",
                     "answer_field=solution", "--output", str(out)]) == 0
        assert [r["reward"] for r in read_jsonl(out)] == [1.0, 0.0]
        capsys.readouterr()
    out = tmp_path / "short.jsonl"
    assert main(["score", "--reward", f"{fn}:short", "--input", str(src), "--output",
                 str(out)]) == 0
    assert [r["reward"] for r in read_jsonl(out)] == [-1.0, -1.0]
    capsys.readouterr()
    bare = write_jsonl(tmp_path / "bare.jsonl", [{"completion": "4"}])  # (the hint ended
    err = run_error(capsys, ["score", "--reward", f"{fn}:accuracy", "--input", str(bare)])
    assert "the rows have no field but the completion" in err  # with an empty list)


def test_your_reward_function_gets_what_a_grpo_stage_gives_it(tmp_path) -> None:
    """The same arguments as in a GRPO stage on a math task: the reference answer read as the
    task reads it (a GSM8K solution cut to what follows '####', no thousands separators), and
    every field but "prompt" by its name, as TRL passes its data set's columns (a question
    field of another name, here 'question', too)."""
    fn = tmp_path / "exact.py"
    fn.write_text("def exact(completions, prompts, answer, **kwargs):\n"
                  "    assert kwargs['question'] == prompts\n"
                  "    return [float(c == a) for c, a in zip(completions, answer)]\n")
    rows = [{"completion": "72", "question": "Clips?", "answer": "48/2 = 24.\n#### 72"},
            {"completion": "1080", "question": "Sum?", "answer": "#### 1,080"},
            {"completion": "5", "question": "2+3?", "answer": 5}]
    out = tmp_path / "out.jsonl"
    assert main(["score", "--reward", f"{fn}:exact", "--input",
                 str(write_jsonl(tmp_path / "in.jsonl", rows)), "--output", str(out)]) == 0
    assert [r["reward"] for r in read_jsonl(out)] == [1.0, 1.0, 1.0]


def test_a_parquet_input(tmp_path, capsys) -> None:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    src = tmp_path / "in.parquet"
    pq.write_table(pa.Table.from_pylist([{"completion": box("2"), "answer": "2"},
                                         {"completion": box("3"), "answer": "2"}]), src)
    out = tmp_path / "out.jsonl"
    assert main(["score", "--reward", "math", "--input", str(src), "--output", str(out)]) == 0
    assert [r["reward"] for r in read_jsonl(out)] == [1.0, 0.0]
    # a .parquet output is parquet (verl's layout: chat messages and an object kept as such)
    verl = [{"prompt": [{"role": "user", "content": "1+1?"}], "completion": box("2"),
             "reward_model": {"ground_truth": "2"}},
            {"prompt": [{"role": "user", "content": "2+1?"}], "completion": box("4"),
             "reward_model": {"ground_truth": "3"}}]
    pq.write_table(pa.Table.from_pylist(verl), src)
    out = tmp_path / "out.parquet"
    assert main(["score", "--reward", "math", "--input", str(src), "--output", str(out), "--set",
                 "answer_field=reward_model.ground_truth"]) == 0
    scored = pq.read_table(out).to_pylist()
    assert [r["reward"] for r in scored] == [1.0, 0.0]
    assert [{k: r[k] for k in verl[0]} for r in scored] == verl
    mixed = write_jsonl(tmp_path / "mixed.jsonl", [{"completion": box("2"), "answer": "2",
                                                    "id": 1},
                                                   {"completion": box("2"), "answer": "2",
                                                    "id": "b"}])
    capsys.readouterr()
    err = run_error(capsys, ["score", "--reward", "math", "--input", str(mixed), "--output",
                             str(tmp_path / "mixed.parquet")])
    assert "cannot be written as parquet" in err and "name the output .jsonl" in err
    assert not (tmp_path / "mixed.parquet").exists()
    empty = write_jsonl(tmp_path / "empty.jsonl", [{"completion": box("2"), "answer": "2",
                                                    "extra_info": {}}])  # (verl's, often)
    err = run_error(capsys, ["score", "--reward", "math", "--input", str(empty), "--output",
                             str(tmp_path / "empty.parquet")])
    assert "cannot be written as parquet" in err
    assert [p.name for p in tmp_path.iterdir() if "empty" in p.name] == ["empty.jsonl"]


def test_completion_field_scores_a_sample_stages_rows(tmp_path, capsys) -> None:
    """A sample stage's data.jsonl holds each completion as 'response': the error says to
    give --completion-field response, which scores it; the rows are written as they came."""
    rows = [{"prompt": "1+1=", "response": box("2"), "answer": "2"},
            {"prompt": "2+2=", "response": box("5"), "answer": "4"}]
    src = write_jsonl(tmp_path / "data.jsonl", rows)
    err = run_error(capsys, ["score", "--reward", "math", "--input", str(src)])
    assert "missing field 'completion'" in err and "--completion-field response" in err
    out = tmp_path / "out.jsonl"
    assert main(["score", "--reward", "math", "--input", str(src), "--output", str(out),
                 "--completion-field", "response"]) == 0
    scored = read_jsonl(out)
    assert [r["reward"] for r in scored] == [1.0, 0.0]
    assert [{k: r[k] for k in rows[0]} for r in scored] == rows and "completion" not in scored[0]
    capsys.readouterr()
    err = run_error(capsys, ["score", "--reward", "math", "--input", str(src),
                             "--completion-field", "text"])
    assert "missing field 'text'" in err and "prompt, response, answer" in err
    mixed = write_jsonl(tmp_path / "mixed.jsonl", [rows[0], {"completion": box("4"),
                                                             "answer": "4"}])
    err = run_error(capsys, ["score", "--reward", "math", "--input", str(mixed),
                             "--completion-field", "response"])
    assert "mixed.jsonl:2: missing field 'response'" in err  # not its completion, silently
    assert "the row's fields are completion, answer" in err  # (as written: completion too)


def test_an_output_that_is_no_plain_file_is_written_into(tmp_path) -> None:
    """--output /dev/null or a named pipe: the rows go into it (the atomic rename that
    protects a file replaced /dev/null itself with a plain file, for every program after)."""
    import os
    import stat
    import threading

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_text()), daemon=True)
    reader.start()
    src = write_jsonl(tmp_path / "in.jsonl", [GOOD])
    assert main(["score", "--reward", "math", "--input", str(src), "--output", str(fifo)]) == 0
    reader.join(timeout=30)
    assert stat.S_ISFIFO(fifo.stat().st_mode)  # still the pipe
    assert [json.loads(x)["reward"] for x in got[0].splitlines()] == [1.0]


def test_what_a_reward_function_prints_stays_out_of_the_jsonl(tmp_path, capsys) -> None:
    """Scored rows written to stdout: a print() in your function goes to stderr instead of
    landing between them."""
    fn = tmp_path / "rw.py"
    fn.write_text("def noisy(completions, **kw):\n    print('DEBUG', completions)\n"
                  "    return [1.0] * len(completions)\n")
    src = write_jsonl(tmp_path / "in.jsonl", [{"completion": "a"}, {"completion": "b"}])
    assert main(["score", "--reward", f"{fn}:noisy", "--input", str(src)]) == 0
    out, err = capsys.readouterr()
    assert [json.loads(x)["reward"] for x in out.splitlines()] == [1.0, 1.0]
    assert "DEBUG" in err


def test_two_rewards_are_refused_not_the_last_one_taken(tmp_path, capsys) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", [{"completion": box("2"), "answer": "2"}])
    err = run_error(capsys, ["score", "--reward", "math", "--reward", "format",
                             "--input", str(src)])
    assert "--reward given 2 times" in err and "reward_function list sums them" in err

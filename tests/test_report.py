"""`r1kit report`: a synthetic run directory rendered into report.md and its plots (no model)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from r1kit.cli import main
from r1kit.errors import R1kitError
from r1kit.report import write_report

WORDS = ("wait", "mistake", "however", "but", "retry", "error", "verify", "wrong", "evaluate",
         "check")


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _metrics_row(step: int, reflect: bool) -> dict:
    row = {"stage": "zero", "step": step, "reward": 1.0 + 0.1 * step,
           "reward/accuracy": 0.1 * step, "reward/format": 1.0, "accuracy": 0.1 * step,
           "response_length": 20.0 + 2 * step, "kl": None if step == 1 else 0.01 * step,
           "entropy": 0.2}
    if reflect:
        counts = {w: 0.0 for w in WORDS}
        counts["wait"] = 0.1 * step
        counts["check"] = 0.05 * step
        row.update({f"reflect/{w}": v for w, v in counts.items()})
        row["reflect/total"] = sum(counts.values())
    return row


def make_run(root: Path, reflect: bool = True, eval_stage: bool = False) -> Path:
    """A run directory like `r1kit run` leaves: base (pretrain) then zero (grpo), 5 RL steps,
    two held-out evaluations with levels; optionally an eval stage with its stage table."""
    run_dir = root / "demo-run"
    stages = {"base": {"kind": "pretrain", "steps": 10}, "zero": {"kind": "grpo", "steps": 5}}
    if eval_stage:
        stages["table"] = {"kind": "eval", "models": ["base", "zero"]}
    run_dir.mkdir()
    (run_dir / "config.json").write_text(json.dumps({"run": {"seed": 0}, "stages": stages}))
    for name, seconds in (("base", 12.0), ("zero", 34.0)):
        (run_dir / name).mkdir()
        (run_dir / name / "stage.json").write_text(json.dumps(
            {"kind": stages[name]["kind"], "status": "done", "seconds": seconds,
             "summary": {}}))
    _write_jsonl(run_dir / "metrics.jsonl", [_metrics_row(s, reflect) for s in range(1, 6)])
    evals = [
        {"stage": "zero", "step": 0, "benchmark": "arithmetic/main", "pass@1": 0.40,
         "cons@4": 0.55, "k": 4, "mean_tokens": 18.5, "pass@1_ci95": [0.35, 0.45],
         "by_level": {"2": 0.5, "3": 0.4, "4": 0.3},
         "length_by_level": {"2": 15.0, "3": 18.0, "4": 22.0},
         "reflect": {"wait": 0.1, "total": 0.15}},
        {"stage": "zero", "step": 5, "benchmark": "arithmetic/main", "pass@1": 0.80,
         "cons@4": 0.90, "k": 4, "n": 200, "mean_tokens": 28.4, "pass@1_ci95": [0.76, 0.84],
         "by_level": {"2": 0.9, "3": 0.8, "4": 0.7},
         "length_by_level": {"2": 24.0, "3": 28.0, "4": 33.0},
         "reflect": {"wait": 0.5, "total": 0.75}},
    ]
    if eval_stage:
        (run_dir / "table").mkdir()
        (run_dir / "table" / "stage.json").write_text(json.dumps(
            {"kind": "eval", "status": "done", "seconds": 3.0, "summary": {}}))
        (run_dir / "table" / "stage_table.md").write_text(
            "| stage | reasoning pass@1 | cons@4 |\n|---|---:|---:|\n"
            "| base | 40.0% | 55.0% |\n| zero | 80.0% | 90.0% |\n")
        (run_dir / "table" / "stage_table.png").write_bytes(b"\x89PNG\r\n\x1a\n")
        for model, acc in (("base", 0.4), ("zero", 0.8)):
            evals.append({"stage": "table", "step": 0, "benchmark": "arithmetic/main",
                          "model": model, "pass@1": acc, "cons@4": acc, "k": 4,
                          "mean_tokens": 20.0, "by_level": {"2": acc, "3": acc}})
    _write_jsonl(run_dir / "eval.jsonl", evals)
    return run_dir


def _images(report: Path) -> list[Path]:
    text = report.read_text()
    links = [part.split(")", 1)[0] for part in text.split("](")[1:]]
    return [report.parent / link for link in links]


def test_report_renders_stages_curves_and_behaviour(tmp_path):
    run_dir = make_run(tmp_path)
    report = write_report(run_dir)
    assert report == run_dir / "report.md"
    text = report.read_text()
    assert text.startswith("# Run report: demo-run")
    assert "| base | pretrain | done | 12 |" in text
    assert "| zero | grpo | done | 34 |" in text

    # the reflective words: total 0.15 at step 1, 0.75 at step 5, five times as often
    assert "| stage | first step | total (first) | last step | total (last) | last / first |" \
        in text
    assert "| zero | 1 | 0.15 | 5 | 0.75 | 5.00× | wait 0.50, check 0.25 |" in text
    # accuracy and length by level, first and last evaluation
    assert "| stage | checkpoint | L2 acc | L3 acc | L4 acc | L2 tokens | L3 tokens | L4 tokens |" \
        in text
    assert "| zero | step 0 | 50.0% | 40.0% | 30.0% | 15.0 | 18.0 | 22.0 |" in text
    assert "| zero | step 5 | 90.0% | 80.0% | 70.0% | 24.0 | 28.0 | 33.0 |" in text
    # held-out table with its size (an older record without n: blank), the confidence
    # interval and cons@4
    assert "| zero | step 5 | arithmetic/main | 200 × 4 | 80.0% [76.0, 84.0] | 90.0% | 28.4 " \
           "| 0.75 |" in text
    assert "| zero | step 0 | arithmetic/main |  | 40.0% [35.0, 45.0] |" in text
    assert "cons@4" in text

    figures = run_dir / "report"
    for name in ("train_zero.png", "eval_pass1.png", "reflect_zero.png", "levels.png"):
        assert (figures / name).is_file() and (figures / name).stat().st_size > 1000, name
    images = _images(report)
    assert {p.name for p in images} >= {"train_zero.png", "eval_pass1.png", "reflect_zero.png",
                                        "levels.png"}
    assert all(p.is_file() for p in images)
    assert "](report/reflect_zero.png)" in text  # relative to report.md
    assert str(tmp_path) not in text


def test_report_cli(tmp_path, capsys):
    run_dir = make_run(tmp_path)
    assert main(["report", str(run_dir)]) == 0
    assert capsys.readouterr().out.strip() == str(run_dir / "report.md")
    assert (run_dir / "report.md").is_file()


def test_report_cli_rejects_empty_and_missing_dirs(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["report", str(empty)]) == 2
    err = capsys.readouterr().err
    assert "neither metrics.jsonl nor eval.jsonl nor a finished stage" in err and "fix:" in err
    assert not (empty / "report.md").exists()
    assert main(["report", str(tmp_path / "nowhere")]) == 2
    with pytest.raises(R1kitError):
        write_report(empty)
    # a stage's (or one of its checkpoints') directory: the run's is named
    (tmp_path / "r").mkdir()
    run_dir = make_run(tmp_path / "r")
    for inner in (run_dir / "zero", run_dir / "zero" / "adapter",
                  run_dir / "zero" / "checkpoints" / "step-2"):
        inner.mkdir(parents=True, exist_ok=True)
        capsys.readouterr()
        assert main(["report", str(inner)]) == 2
        assert f"fix: r1kit report {run_dir.resolve()}" in capsys.readouterr().err


def test_report_of_a_run_with_only_reward_model_stages(tmp_path, capsys):
    """A run of reward-model stages: the report lists them with their held-out accuracy, and
    draws each one's loss and training batch accuracy (not as an RL stage's reward)."""
    run_dir = tmp_path / "rm-run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text(json.dumps(
        {"run": {"seed": 0}, "stages": {"base": {"kind": "pretrain"},
                                        "helpful": {"kind": "reward_model"}}}))
    for name, kind, summary in (("base", "pretrain", {}),
                                ("helpful", "reward_model", {"pairwise_accuracy": 0.875})):
        (run_dir / name).mkdir()
        (run_dir / name / "stage.json").write_text(json.dumps(
            {"kind": kind, "status": "done", "seconds": 5.0, "summary": summary}))
    (run_dir / "metrics.jsonl").write_text("".join(
        json.dumps({"stage": "helpful", "step": i + 1, "loss": 0.7 - 0.1 * i,
                    "accuracy": 0.5 + 0.125 * i, "lr": 6e-6, "grad_norm": 1.0}) + "\n"
        for i in range(3)))
    assert main(["report", str(run_dir)]) == 0
    text = (run_dir / "report.md").read_text()
    assert "| helpful | reward_model | done | 5 | held-out pairwise accuracy 87.5% |" in text
    assert "### helpful (3 reward-model steps)" in text
    assert "loss 0.7000 → 0.5000, training batch accuracy 50.0% → 75.0% (step 1 → 3)." in text
    assert "reward —" not in text and "response length" not in text
    assert (run_dir / "report" / "train_helpful.png").is_file()


def test_report_without_reflect_keys(tmp_path):
    run_dir = make_run(tmp_path, reflect=False)
    text = write_report(run_dir).read_text()
    assert "No reflective-word counts" in text
    assert not (run_dir / "report" / "reflect_zero.png").exists()
    assert (run_dir / "report" / "train_zero.png").is_file()
    assert "| zero | step 5 | 90.0% | 80.0% | 70.0% |" in text  # levels still there
    assert all(p.is_file() for p in _images(run_dir / "report.md"))


def test_report_includes_stage_table_and_figure1(tmp_path):
    run_dir = make_run(tmp_path, eval_stage=True)
    (run_dir / "figure1.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    text = write_report(run_dir).read_text()
    table = (run_dir / "table" / "stage_table.md").read_text().strip()
    assert table in text
    assert "](table/stage_table.png)" in text
    assert "](figure1.png)" in text
    assert "| table | eval | done | 3 |" in text
    # every checkpoint of the eval stage is listed, by model name
    assert "| table | zero | arithmetic/main |  | 80.0% |" in text


def test_report_marks_stages_that_did_not_run(tmp_path):
    run_dir = make_run(tmp_path)
    (run_dir / "zero" / "stage.json").unlink()
    (run_dir / "eval.jsonl").unlink()
    logged = (run_dir / "metrics.jsonl").read_text()
    assert '"stage": "zero"' in logged
    (run_dir / "metrics.jsonl").write_text("")
    text = write_report(run_dir).read_text()
    assert "| zero | grpo | not run |  |" in text
    assert "No evaluations in eval.jsonl." in text
    # a stage that started: stopped or failed, or interrupted after a checkpoint (a rerun
    # resumes there); one that logged steps without writing a file of its own (an SFT stage
    # interrupted before a checkpoint) started too
    (run_dir / "metrics.jsonl").write_text(logged)
    assert "| zero | grpo | not finished (stopped or failed) |" in write_report(run_dir).read_text()
    (run_dir / "metrics.jsonl").write_text("")
    (run_dir / "zero" / "completions.jsonl").write_text("{}\n")
    assert "| zero | grpo | not finished (stopped or failed) |" in write_report(run_dir).read_text()
    for step in (5, 10):
        (run_dir / "zero" / "checkpoints" / f"step-{step}").mkdir(parents=True)
    text = write_report(run_dir).read_text()
    assert "| zero | grpo | not finished (checkpoint step-10) |" in text


def test_report_marks_a_cached_base_and_a_stage_taken_out_of_the_recipe(tmp_path):
    """A base model copied from the cache took no time in this run: the table says where it came
    from and how long it took to pretrain; a stage taken out of the recipe (config.json's
    dropped_stages) is not listed as one of the run's stages done."""
    run_dir = make_run(tmp_path)
    config = json.loads((run_dir / "config.json").read_text())
    config["dropped_stages"] = {"zero": config["stages"].pop("zero")}
    (run_dir / "config.json").write_text(json.dumps(config))
    (run_dir / "base" / "stage.json").write_text(json.dumps(
        {"kind": "pretrain", "status": "done", "seconds": 0.01,
         "summary": {"final_loss": 0.25, "seconds": 248.8, "cached": "/cache/tiny-base-x"}}))
    text = write_report(run_dir).read_text()
    assert ("| base | pretrain | done (from the cache) | 0 | final loss 0.25 (mean of its last "
            "steps); pretrained in 249 s |") in text
    assert "| zero | grpo | done; no longer in the recipe | 34 |" in text


def test_report_of_a_stage_with_its_own_reward_function(tmp_path):
    """A stage whose reward_function replaces the rule rewards logs no accuracy: its line
    leaves accuracy out instead of printing "accuracy  → "."""
    run_dir = make_run(tmp_path)
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    for r in rows:
        r.pop("accuracy", None)
    _write_jsonl(run_dir / "metrics.jsonl", rows)
    text = write_report(run_dir).read_text()
    line = next(x for x in text.splitlines() if x.startswith("reward "))
    assert "accuracy" not in line and "response length" in line
    (tmp_path / "b").mkdir()
    assert "accuracy 10.0% → 50.0%" in write_report(make_run(tmp_path / "b")).read_text()


def test_a_stage_with_general_prompts_shows_their_rewards(tmp_path):
    """Stage 2 of R1 (eq. 8-10): general prompts from a later step, scored by reward models:
    the stage's line gives their share and each model's reward from the step it starts."""
    run_dir = make_run(tmp_path)
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    for r in rows:
        r["general_frac"] = 0.25 if r["step"] >= 3 else 0.0
        if r["step"] >= 3:
            r.update({"reward/helpful": 0.1 * r["step"], "reward/safety": 0.9})
    _write_jsonl(run_dir / "metrics.jsonl", rows)
    text = write_report(run_dir).read_text()
    assert ("general prompts 25.0% of each step's questions from step 3: helpful reward "
            "0.300 → 0.500 (step 3 → 5), safety reward 0.900 → 0.900 (step 3 → 5).") in text
    (tmp_path / "b").mkdir()
    assert "general prompts" not in write_report(make_run(tmp_path / "b")).read_text()


def test_a_sample_stage_shows_what_it_kept():
    from r1kit.report import _stage_result

    assert _stage_result({"generated": 640, "correct": 600, "kept": 160, "rows": 160}) == \
        "kept 160 of 640 samples (600 right)"
    assert _stage_result({"final_loss": 0.5}) == "final loss 0.5 (mean of its last steps)"

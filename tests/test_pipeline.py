"""recipes/r1-tiny.toml at micro size: every stage kind, the stage table, and resume."""

from __future__ import annotations

import hashlib
import json

import pytest
from conftest import MICRO_BASE, REPO

from r1kit.cli import main

RECIPE = str(REPO / "recipes" / "r1-tiny.toml")

MICRO = [*MICRO_BASE, "--set", "run.progress=false"]
for _stage in ("helpful", "safety"):
    MICRO += ["--set", f"stages.{_stage}.train_rows=200", "--set", f"stages.{_stage}.test_rows=50",
              "--set", f"stages.{_stage}.epochs=1"]
for _stage in ("zero", "dev2", "r1"):
    MICRO += ["--set", f"stages.{_stage}.steps=2", "--set", f"stages.{_stage}.rollout_batch_size=64",
              "--set", f"stages.{_stage}.eval.every=0"]
MICRO += ["--set", "stages.r1.general_from_step=1",
          "--set", "stages.cold.prompts=60", "--set", "stages.rs.prompts=60",
          "--set", "stages.rs.general_rows=20", "--set", "stages.table.limit=20",
          "--set", "stages.table.general_prompts=20"]


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_r1_pipeline_runs_every_stage_and_resumes(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("R1KIT_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "run"
    import r1kit.stages.sft as sft

    real_run_sft = sft.run_sft

    def crash_on_dev3(cfg, model_path, data_path, stage_dir, *args, **kw):
        if stage_dir.name == "dev3":
            raise KeyboardInterrupt  # the user presses Ctrl-C during dev3
        return real_run_sft(cfg, model_path, data_path, stage_dir, *args, **kw)

    monkeypatch.setattr(sft, "run_sft", crash_on_dev3)
    assert main(["run", RECIPE, "--out", str(out), *MICRO]) != 0
    done = ["base", "helpful", "safety", "zero", "cold", "dev1", "dev2", "rs"]
    for name in done:
        assert json.loads((out / name / "stage.json").read_text())["status"] == "done", name
    assert not (out / "dev3" / "stage.json").exists()
    before = {p: _digest(p) for name in done for p in (out / name).rglob("*") if p.is_file()}

    # the rest of the pipeline, with the same command
    monkeypatch.setattr(sft, "run_sft", real_run_sft)
    capsys.readouterr()
    assert main(["run", RECIPE, "--out", str(out), *MICRO]) == 0
    printed = capsys.readouterr().out
    for name in done:
        assert f"[{name}] already done: skipping" in printed
    assert {p: _digest(p) for p in before} == before  # finished stages untouched

    # the data sets: cold start rewritten into English with a summary; rs mixes general
    cold = [json.loads(line) for line in (out / "cold" / "data.jsonl").read_text().splitlines()]
    assert cold and all("The answer is" in r["response"] and "加" not in r["response"]
                        for r in cold)
    stats = json.loads((out / "rs" / "sample.json").read_text())
    assert stats["general"] == 20 and stats["rows"] == stats["kept"] + 20
    assert stats["generated"] == 60 * 4
    assert stats["generated"] == stats["correct"] + stats.get("rejected/wrong", 0)
    # the final RL stage mixed general prompts in from step 1 on
    r1_rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()
               if json.loads(line)["stage"] == "r1"]
    assert [r["general_frac"] for r in r1_rows] == [0.0, 0.25]
    # the stage table: a row per checkpoint, every column
    table = (out / "table" / "stage_table.md").read_text().splitlines()
    assert len(table) == 2 + 6
    assert "reasoning pass@1" in table[0] and "safety accuracy" in table[0]
    assert "helpful RM score" in table[0] and "language consistency" in table[0]
    assert [line.split("|")[1].strip() for line in table[2:]] == \
        ["base", "zero", "dev1", "dev2", "dev3", "r1"]
    assert (out / "table" / "stage_table.png").is_file()


def test_sft_data_must_come_from_a_sample_stage(tmp_path):
    from r1kit.config import check_inputs, recipe_from_dict
    from r1kit.errors import R1kitError

    recipe = recipe_from_dict({"stages": {
        "base": {"kind": "pretrain"},
        "sft": {"kind": "sft", "model": "base", "data": "base"}}})
    with pytest.raises(R1kitError, match="writes no data set"):
        check_inputs(recipe)
    recipe = recipe_from_dict({"stages": {
        "base": {"kind": "pretrain"},
        "sft": {"kind": "sft", "model": "base", "data": str(tmp_path / "nope.jsonl")}}})
    with pytest.raises(R1kitError, match="neither an earlier sample stage nor a file"):
        check_inputs(recipe)

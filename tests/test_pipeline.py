"""recipes/r1-tiny.toml at micro size: every stage kind, the stage table, and resume."""

from __future__ import annotations

import hashlib
import json

import pytest
from conftest import MICRO_BASE, REPO, without_chat_template

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


def test_sft_sample_and_eval_stages_on_a_real_checkpoint(tmp_path, bpe_checkpoint):
    """The stage kinds serve any pipeline: a byte-level BPE checkpoint with a chat template,
    SFT on a JSONL file, evaluation on GSM8K, and a sample stage that keeps nothing from a
    random model stops with a message instead of writing an empty data set."""
    from r1kit.config import recipe_from_dict
    from r1kit.errors import R1kitError
    from r1kit.pipeline import run_recipe

    data = tmp_path / "sft.jsonl"
    data.write_text("".join(json.dumps({"question": f"What is {i} + 1?",
                                        "reply": f"<think>{i}+1</think> {i + 1}"}) + "\n"
                            for i in range(12)))
    recipe = recipe_from_dict({"run": {"progress": False, "tensorboard": False}, "stages": {
        "sft": {"kind": "sft", "model": str(bpe_checkpoint), "data": str(data),
                "prompt_field": "question", "response_field": "reply", "template": "chat",
                "epochs": 2, "batch_size": 4, "micro_batch_size": 2, "lr": 1e-3},
        "table": {"kind": "eval", "models": ["sft"], "task": "gsm8k", "template": "chat",
                  "limit": 3, "k": 2, "max_new_tokens": 8,
                  "benchmarks": ["MATH-500", "humaneval"]},
        # the default length (the paper's 32,768) stops at the model's last position, as
        # r1kit eval's does: tokens past the positions a model learned are noise
        "capped": {"kind": "eval", "models": ["sft"], "task": "gsm8k", "template": "chat",
                   "limit": 1, "k": 1, "temperature": 0.0},
        # a model trained with another template than the stage prompts with: said
        "plain": {"kind": "eval", "models": ["sft"], "task": "gsm8k", "template": "none",
                  "limit": 1, "k": 1, "temperature": 0.0, "max_new_tokens": 2}}})
    printed = []
    summaries = run_recipe(recipe, tmp_path / "run", print_fn=printed.append)
    notes = [line for line in printed if "was trained with template" in line]
    assert len(notes) == 1 and notes[0].startswith("[plain] note: sft was trained with "
                                                   "template 'chat', prefill ''"), notes
    # its responses have no reasoning tags (no prefill opens one): no answer read, said
    assert any(line.startswith("[plain] note: sft: 100.0% of the responses have no <think>, "
                               "</think> or <answer>: r1kit reads a final answer only after "
                               "the reasoning") for line in printed), printed
    capped = [line for line in printed if "up to the model's 1024 positions"
              in line]
    assert len(capped) == 1 and capped[0].startswith("[capped] sft: max_new_tokens ")
    assert 0 < int(capped[0].split("max_new_tokens ")[1].split(",")[0]) < 1024
    assert summaries["sft"]["rows"] == 12 and summaries["sft"]["steps"] == 6
    assert summaries["sft"]["final_loss"] < summaries["sft"]["first_loss"]
    # a row per optimizer step in metrics.jsonl (TensorBoard's source too), and the report
    # shows the loss curve
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text()
            .splitlines()]
    assert [r["step"] for r in rows if r["stage"] == "sft"] == [1, 2, 3, 4, 5, 6]
    assert rows[0]["loss"] == pytest.approx(summaries["sft"]["first_loss"])
    assert all(r["tokens"] > 0 and r["lr"] > 0 and r["grad_norm"] >= 0 for r in rows)
    from r1kit.report import write_report

    report = write_report(tmp_path / "run").read_text()
    assert "### sft (6 SFT steps)" in report and "SFT loss" in report
    (row,) = summaries["table"]["rows"]
    assert row["model"] == "sft" and row["n"] == 3 and 0.0 <= row["pass@1"] <= 1.0
    assert "helpful" not in row  # no reward models given: no general columns
    # the shipped benchmarks: a column each, and their records in eval.jsonl
    for bench in ("math500", "humaneval"):
        assert (row[bench]["n"], row[bench]["k"]) == (3, 2)
        assert 0.0 <= row[bench]["pass@1"] <= 1.0
    assert "| stage | reasoning pass@1 | cons@2 | language consistency | math500 pass@1 | " \
        "humaneval pass@1 | mean length (tokens) |" in \
        (tmp_path / "run" / "table" / "stage_table.md").read_text()
    said = [line for line in printed if line.startswith("[table] sft: reasoning pass@1")]
    assert len(said) == 1 and " cons@2 " in said[0]  # with its k, as the table
    logged = [json.loads(line) for line in (tmp_path / "run" / "eval.jsonl").read_text()
              .splitlines()]
    assert [(r["benchmark"], r["n"]) for r in logged if r["stage"] == "table"] == \
        [("math500", 3), ("humaneval", 3), ("gsm8k/main", 3)]
    assert "| table | sft | math500 | 3 × 2 |" in report
    assert "| table | sft (math500) |" in report  # its levels, named as MATH-500's

    recipe = recipe_from_dict({"run": {"progress": False, "tensorboard": False}, "stages": {
        "rs": {"kind": "sample", "model": str(bpe_checkpoint), "task": "gsm8k",
               "template": "chat", "prompts": 2, "samples_per_prompt": 2,
               "max_new_tokens": 4}}})
    with pytest.raises(R1kitError, match="kept no rows") as info:  # it says why
        run_recipe(recipe, tmp_path / "run2", print_fn=lambda *_: None)
    assert "(rejected: wrong 4)" in str(info.value) and "no sample was right" in info.value.hint
    assert "system_prompt" in info.value.hint  # (chat: a system turn the model never saw)
    shown = [json.loads(line) for line in
             (tmp_path / "run2" / "rs" / "rejected_samples.jsonl").read_text().splitlines()]
    assert len(shown) == 4 and all(r["rejected"] == "wrong" for r in shown)  # to look at
    assert "rejected_samples.jsonl" in str(info.value)


def test_chat_template_is_checked_before_any_stage(tmp_path, bpe_checkpoint):
    """template = "chat" on a model whose tokenizer has no chat template (a directory, a
    pretrain stage, or a stage that started from either) stops the run before any stage."""
    from r1kit.config import check_inputs, recipe_from_dict
    from r1kit.errors import R1kitError
    from r1kit.models import load_tokenizer

    plain = without_chat_template(bpe_checkpoint, tmp_path / "plain")
    assert not load_tokenizer(plain).chat_template

    data = tmp_path / "sft.jsonl"
    data.write_text('{"prompt": "What is 1 + 1?", "response": "2"}\n')
    sft = {"kind": "sft", "data": str(data), "template": "none"}
    cases = [
        ({"sft": {**sft, "model": str(plain), "template": "chat"}}, "stages.sft.template", "plain"),
        ({"sft": {**sft, "model": str(plain)},
          "zero": {"kind": "grpo", "model": "sft", "template": "chat", "task": "gsm8k"}},
         "stages.zero.template", "plain"),
        ({"base": {"kind": "pretrain"},
          "table": {"kind": "eval", "models": ["base"], "template": "chat"}},
         "stages.table.template", "tiny world"),
    ]
    for stages, where, named in cases:
        with pytest.raises(R1kitError, match="chat template") as info:
            check_inputs(recipe_from_dict({"stages": stages}))
        assert where in str(info.value) and named in str(info.value)
    # the same chain from a checkpoint that has one passes
    check_inputs(recipe_from_dict({"stages": {
        "sft": {**sft, "model": str(bpe_checkpoint)},
        "zero": {"kind": "grpo", "model": "sft", "template": "chat", "task": "gsm8k"}}}))


def test_settings_keys_belong_to_stages_whose_names_hold_dots():
    from r1kit.pipeline import stage_of

    names = ["table", "table.v2", "zero"]
    assert stage_of("stages.table.v2.k", names) == "table.v2"
    assert stage_of("stages.table.k", names) == "table"
    assert stage_of("stages.zero", names) == "zero"
    assert stage_of("run.seed", names) is None


def test_a_finished_stage_whose_input_changed_is_not_reused(tmp_path, capsys, monkeypatch):
    """A rerun skips finished stages; if a file one of them read (here an sft stage's data)
    has changed since, the command stops before any stage, naming the stage, the file and
    --from; a file only touched (same content) is not a change."""
    import os

    from r1kit.cli import main

    monkeypatch.setenv("R1KIT_CACHE", str(tmp_path / "cache"))
    data = tmp_path / "sft.jsonl"
    data.write_text('{"prompt": "1+1=", "response": "2"}\n' * 4)
    recipe = tmp_path / "r.toml"
    recipe.write_text('[run]\nprogress = false\ntensorboard = false\n'
                      '[stages.base]\nkind = "pretrain"\nsteps = 2\ncorpus_docs = 50\n'
                      'general_docs = 10\nhidden_size = 16\nnum_layers = 1\nnum_heads = 2\n'
                      'intermediate_size = 32\n'
                      f'[stages.sft]\nkind = "sft"\nmodel = "base"\ndata = "{data}"\n'
                      'epochs = 1\nbatch_size = 2\nmicro_batch_size = 2\n')
    out = tmp_path / "run"
    assert main(["run", str(recipe), "--out", str(out)]) == 0
    meta = json.loads((out / "sft" / "stage.json").read_text())
    assert str(data.resolve()) in meta["inputs"]
    os.utime(data, ns=(1, 1))  # touched, the same content: still the run's
    assert main(["run", str(recipe), "--out", str(out)]) == 0
    assert "[sft] already done" in capsys.readouterr().out
    data.write_text('{"prompt": "1+1=", "response": "3"}\n' * 4)
    assert main(["run", str(recipe), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "stage 'sft' is done, but" in err and str(data.resolve()) in err
    assert "--from sft" in err
    assert main(["run", str(recipe), "--out", str(out), "--from", "sft"]) == 0
    assert main(["run", str(recipe), "--out", str(out)]) == 0  # the new file's results now


def test_a_checkpoint_directory_copied_or_touched_is_the_same_input(tmp_path, monkeypatch):
    """A checkpoint directory a stage read is "changed" when its model files differ: a file
    only touched (a copy without its times, the same bytes) is not a change where its
    sha256 was kept (files up to HASHED_UP_TO); other bytes, sizes or files are."""
    import os

    from r1kit import pipeline

    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "llama"}')
    (model / "model.safetensors").write_bytes(b"\0" * 1000)
    saved = json.loads(json.dumps(pipeline._fingerprint(model)))  # as stage.json keeps it
    assert not pipeline._input_changed(str(model), saved)
    os.utime(model / "model.safetensors", ns=(1, 1))
    assert not pipeline._input_changed(str(model), saved)
    (model / "model.safetensors").write_bytes(b"\1" * 1000)  # same size, other weights
    assert pipeline._input_changed(str(model), saved)
    (model / "model.safetensors").write_bytes(b"\0" * 1000)
    assert not pipeline._input_changed(str(model), saved)
    (model / "tokenizer.json").write_text("{}")  # a file more
    assert pipeline._input_changed(str(model), saved)
    (model / "tokenizer.json").unlink()
    # a file over HASHED_UP_TO (no sha256 kept), or a fingerprint of an older r1kit (size
    # and time only): its time decides
    monkeypatch.setattr(pipeline, "HASHED_UP_TO", 10)
    big = json.loads(json.dumps(pipeline._fingerprint(model)))
    assert big["model.safetensors"][2] is None and not pipeline._input_changed(str(model), big)
    old = {name: fp[:2] for name, fp in saved.items()}
    os.utime(model / "model.safetensors", ns=(2, 2))
    assert pipeline._input_changed(str(model), big) and pipeline._input_changed(str(model), old)


def test_a_relative_data_path_from_another_directory_is_another_input(tmp_path, monkeypatch):
    """A stage's inputs are compared with what it would read now: the same relative train
    file seen from another working directory is another file (a resume or a skipped stage
    there would mix the two), even though the file it read is unchanged."""
    from r1kit.config import SFTConfig, recipe_from_dict
    from r1kit.pipeline import _changed_inputs, stage_inputs

    for d, response in (("a", "2"), ("b", "3")):
        (tmp_path / d).mkdir()
        (tmp_path / d / "sft.jsonl").write_text(json.dumps({"prompt": "1+1=",
                                                            "response": response}) + "\n")
    recipe = recipe_from_dict({"stages": {"sft": {"kind": "sft", "model": "/m",
                                                  "data": "sft.jsonl"}}})
    cfg = recipe.stages["sft"]
    assert isinstance(cfg, SFTConfig)
    monkeypatch.chdir(tmp_path / "a")
    saved = json.loads(json.dumps(stage_inputs(cfg, recipe)))
    assert _changed_inputs(saved, stage_inputs(cfg, recipe)) == []
    monkeypatch.chdir(tmp_path / "b")
    assert _changed_inputs(saved, stage_inputs(cfg, recipe)) == [str(tmp_path / "b" / "sft.jsonl")]


def test_a_reward_modules_file_is_an_input_of_its_stage(tmp_path, monkeypatch):
    """reward_function = "module:function" fingerprints the module's source file, as
    "file.py:function" does the file, so that a finished stage whose reward changed is not
    reused; r1kit's own modules are not inputs."""
    from r1kit.config import GRPOConfig, Recipe, RunConfig
    from r1kit.pipeline import stage_inputs

    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "myrewards.py").write_text("def acc(completions, **kw):\n"
                                                   "    return [0.0] * len(completions)\n")
    (tmp_path / "flat.py").write_text("def acc(completions, **kw):\n    return [1.0]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = GRPOConfig(model="base", reward_function=["pkg.myrewards:acc", "flat:acc",
                                                    f"{tmp_path / 'flat.py'}:acc",
                                                    "r1kit.rewards.length:overlong_penalty"])
    inputs = stage_inputs(cfg, Recipe(run=RunConfig(), stages={"base": None}))
    assert sorted(inputs) == sorted({str((tmp_path / "pkg" / "myrewards.py").resolve()),
                                     str((tmp_path / "flat.py").resolve())})

"""A GRPO or SFT stage interrupted mid-run resumes from its last checkpoint to the same result."""

from __future__ import annotations

import pytest
import torch
from conftest import (
    MICRO_BASE,
    MICRO_RECIPE_HEAD,
    MICRO_SAMPLE_STAGE,
    REPO,
    count_parts,
    interrupt_at_call,
    rows_without_timings,
)
from safetensors.torch import load_file

import r1kit.stages.grpo as grpo
from r1kit.cli import main
from r1kit.errors import R1kitError

ARGS = [str(REPO / "recipes" / "zero-tiny.toml"), *MICRO_BASE, "--set", "run.progress=false",
        "--set", "stages.zero.steps=4", "--set", "stages.zero.save_every=1",
        "--set", "stages.zero.rollout_batch_size=32", "--set", "stages.zero.eval.every=2",
        "--set", "stages.zero.eval.limit=16",
        # the reference is reset to the policy after step 2, so the checkpoint the resumed
        # run starts from holds a reference that differs from the stage's input model
        "--set", "stages.zero.ref_refresh_every=2"]


LORA = ["--set", "stages.zero.lora_rank=4", "--set", "stages.zero.lr=1e-2",
        "--set", 'stages.zero.lora_target_modules=["q_proj", "v_proj"]']


# DAPO's dynamic sampling: the resumed run must go on drawing questions where the
# interrupted one was, which is past the step's own when steps sampled more than once
DYNAMIC = ["--set", "stages.zero.dynamic_sampling=true"]


# bf16 weights at the paper's learning rate: the updates live in AdamW's float32 master
# copies (r1kit.optim), which the checkpoint must hold; resumed from the rounded bf16 weights
# alone, the run would go another way
BF16 = ["--set", "run.dtype=bfloat16", "--set", "stages.zero.lr=3e-6"]


@pytest.mark.parametrize("variant", ["full", "lora", "dynamic", "bf16"])
def test_interrupted_grpo_resumes_exactly(tmp_path, monkeypatch, capsys, variant):
    lora = variant == "lora"
    if lora:
        pytest.importorskip("peft")
    args = ARGS + {"full": [], "lora": LORA, "dynamic": DYNAMIC, "bf16": BF16}[variant]
    monkeypatch.setenv("R1KIT_CACHE", str(tmp_path / "cache"))
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    assert main(["run", *args, "--out", str(whole)]) == 0

    real = interrupt_at_call(monkeypatch, grpo, "update_policy", 3)  # in step three
    assert main(["run", *args, "--out", str(resumed)]) != 0
    ckpts = sorted(p.name for p in (resumed / "zero" / "checkpoints").iterdir())
    assert ckpts == ["step-1", "step-2"]  # keep_checkpoints = 2
    if lora:  # a peft adapter directory, not a second copy of the model
        saved = {p.name for p in (resumed / "zero" / "checkpoints" / "step-2").iterdir()}
        assert {"adapter_config.json", "adapter_model.safetensors"} <= saved
        assert "model.safetensors" not in saved
        adapters = load_file(resumed / "zero" / "checkpoints" / "step-2"
                             / "adapter_model.safetensors")
        assert adapters and all("lora_" in k for k in adapters)
    monkeypatch.setattr(grpo, "update_policy", real)
    capsys.readouterr()
    assert main(["run", *args, "--out", str(resumed)]) == 0
    said = capsys.readouterr().out
    assert "resuming from" in said and "note: resumes in" not in said  # (the same dtype)

    # every logged number (timings aside) and the final weights are the uninterrupted run's
    for name in ("metrics.jsonl", "eval.jsonl", "zero/completions.jsonl"):
        assert rows_without_timings(resumed / name) == rows_without_timings(whole / name), name
    samples = rows_without_timings(whole / "zero" / "completions.jsonl")
    assert [r["step"] for r in samples] == [s for s in (1, 2, 3, 4) for _ in range(4)]
    assert all(isinstance(r["completion"], str) and 0 <= r["accuracy"] <= 1 for r in samples)
    a = load_file(whole / "zero" / "model.safetensors")
    b = load_file(resumed / "zero" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    base = load_file(whole / "base" / "model.safetensors")
    assert any(not torch.equal(base[k], a[k]) for k in a)  # the run did train
    if variant == "bf16":
        assert {v.dtype for v in a.values()} == {torch.bfloat16}
        state = torch.load(resumed / "zero" / "checkpoints" / "step-2" / grpo.STATE_FILE,
                           weights_only=False)["optimizer"]["state"]
        assert state and all(s["master"].dtype == torch.float32 for s in state.values())
    if variant == "dynamic":  # the checkpoint of step 2 came after extra rounds
        rows = [r for r in rows_without_timings(whole / "metrics.jsonl") if r["stage"] == "zero"]
        assert sum(r["sampling_rounds"] for r in rows[:2]) > 2


def test_a_stage_resumed_in_another_dtype_says_so(tmp_path, monkeypatch, capsys):
    """run.dtype = "auto" resolves by the machine: a stage begun on a CPU (float32) and
    resumed on a GPU goes on in bf16. The resume says so (it was silent)."""
    import r1kit.pipeline as pipeline

    monkeypatch.setenv("R1KIT_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "run"
    real = interrupt_at_call(monkeypatch, grpo, "update_policy", 3)  # in step three
    assert main(["run", *ARGS, "--out", str(out)]) != 0
    monkeypatch.setattr(grpo, "update_policy", real)
    capsys.readouterr()  # the interrupted stage is no model yet: its checkpoints are named
    assert main(["eval", "--model", str(out / "zero"), "--bench", "tiny"]) == 2
    err = capsys.readouterr().err
    assert "is a stage that has not finished" in err and str(out / "zero/checkpoints/step-2") \
        in err
    resolved = pipeline.resolve_dtype
    monkeypatch.setattr(pipeline, "resolve_dtype", lambda name, device: torch.bfloat16
                        if name == "auto" else resolved(name, device))  # (auto on a GPU)
    capsys.readouterr()
    assert main(["run", *ARGS, "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert "[zero] note: resumes in bfloat16 on cpu; its steps so far ran in float32 on cpu" \
        in said
    assert {v.dtype for v in load_file(out / "zero" / "model.safetensors").values()} == \
        {torch.bfloat16}


def test_interrupted_sft_resumes_exactly(tmp_path, monkeypatch, capsys, bpe_checkpoint):
    """An SFT stage with save_every, interrupted in its fifth optimizer step, resumes from
    checkpoint step-4 (data order, optimizer, random state) to the weights and logged losses
    of an uninterrupted run. The model has dropout on, so the random state matters."""
    import json
    import shutil

    import r1kit.stages.sft as sft
    from r1kit.config import recipe_from_dict
    from r1kit.pipeline import run_recipe

    config = json.loads((bpe_checkpoint / "config.json").read_text())
    model_dir = tmp_path / "model"
    shutil.copytree(bpe_checkpoint, model_dir)
    config["attention_dropout"] = 0.2  # dropout on in training: the resume must restore RNG
    (model_dir / "config.json").write_text(json.dumps(config))
    data = tmp_path / "sft.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"What is {i} + 2?",
                                        "response": f"<think>{i}+2</think> {i + 2}"}) + "\n"
                            for i in range(10)))

    def recipe(save_every=2, **more):
        return recipe_from_dict({"run": {"progress": False, "tensorboard": False}, "stages": {
            "sft": {"kind": "sft", "model": str(model_dir), "data": str(data), "epochs": 3,
                    "batch_size": 4, "micro_batch_size": 2, "lr": 1e-3,
                    "save_every": save_every, "template": "none", **more}}})

    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    run_recipe(recipe(), whole, print_fn=lambda *_: None)
    real = interrupt_at_call(monkeypatch, sft, "sft_loss", 9)  # step five: 2 micro-batches a step
    with pytest.raises(KeyboardInterrupt):
        run_recipe(recipe(), resumed, print_fn=lambda *_: None)
    assert sorted(p.name for p in (resumed / "sft" / "checkpoints").iterdir()) == \
        ["step-2", "step-4"]
    monkeypatch.setattr(sft, "sft_loss", real)
    # its data file replaced meanwhile: no resume onto other data (restored: it resumes)
    kept = data.read_bytes()
    data.write_text(kept.decode()[:len(kept) // 2].rsplit("\n", 1)[0] + "\n")
    with pytest.raises(R1kitError, match="stage 'sft' was interrupted after a checkpoint, but "
                                         ".*sft.jsonl is not what the stage read") as e:
        run_recipe(recipe(), resumed, print_fn=lambda *_: None)
    assert "--from sft starts the stage over" in e.value.hint
    data.write_bytes(kept)
    printed = []
    run_recipe(recipe(), resumed, print_fn=printed.append)
    assert any("resuming from" in line and "step-4" in line for line in printed)
    assert rows_without_timings(resumed / "metrics.jsonl") == \
        rows_without_timings(whole / "metrics.jsonl")
    # save_every at or past the stage's 8 steps writes no checkpoint, a warm-up as long
    # never reaches lr: said at the start
    printed = []
    run_recipe(recipe(save_every=8, warmup_steps=9), tmp_path / "never", print_fn=printed.append)
    assert any("save_every = 8 is not below its 8 optimizer steps" in line for line in printed)
    assert any("warmup_steps = 9 is not below its 8 optimizer steps: the learning rate never "
               "reaches lr = 0.001" in line for line in printed)
    assert not (tmp_path / "never" / "sft" / "checkpoints").exists()
    assert len(rows_without_timings(whole / "metrics.jsonl")) == 8  # ceil(3 * 10 / 4) steps
    a = load_file(whole / "sft" / "model.safetensors")
    b = load_file(resumed / "sft" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    base = load_file(model_dir / "model.safetensors")
    assert any(not torch.equal(base[k], a[k]) for k in a)  # the run did train


def test_an_sft_checkpoint_of_the_old_step_count_ends_on_its_schedule(tmp_path, monkeypatch,
                                                                      bpe_checkpoint):
    """A stage of fewer rows than batch_size takes `epochs` steps; a checkpoint written
    before that rule (no step count in it) ends after the steps it started with, said."""
    import json

    import torch

    import r1kit.stages.sft as sft
    from r1kit.checkpoints import STATE_FILE
    from r1kit.config import recipe_from_dict
    from r1kit.pipeline import run_recipe

    data = tmp_path / "sft.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"{i}+2=", "response": str(i + 2)}) + "\n"
                            for i in range(3)))
    recipe = recipe_from_dict({"run": {"progress": False, "tensorboard": False}, "stages": {
        "sft": {"kind": "sft", "model": str(bpe_checkpoint), "data": str(data), "epochs": 8,
                "batch_size": 4, "lr": 1e-3, "save_every": 1, "template": "none"}}})
    out = tmp_path / "run"
    real = interrupt_at_call(monkeypatch, sft, "sft_loss", 3)  # (one micro-batch a step)
    with pytest.raises(KeyboardInterrupt):
        run_recipe(recipe, out, print_fn=lambda *_: None)
    monkeypatch.setattr(sft, "sft_loss", real)
    state_file = out / "sft" / "checkpoints" / "step-2" / STATE_FILE
    state = torch.load(state_file, weights_only=True)
    assert state["steps"] == 8  # (epochs steps, each on all 3 rows)
    del state["steps"]  # as written before the rule, which took ceil(8 x 3 / 4) = 6 steps
    torch.save(state, state_file)
    printed = []
    run_recipe(recipe, out, print_fn=printed.append)
    assert any("it ends after 6" in line for line in printed)
    summary = json.loads((out / "sft" / "sft.json").read_text())
    assert summary["steps"] == 6
    losses = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in losses if r.get("stage") == "sft" and "loss" in r] == \
        list(range(1, 7))


@pytest.mark.parametrize("variant", ["full", "lora"])
def test_interrupted_reward_model_resumes_exactly(tmp_path, monkeypatch, bpe_checkpoint,
                                                  variant):
    """A reward_model stage with save_every, interrupted in its fifth optimizer step, resumes
    from checkpoint step-4 (weights, or the adapters and the scalar head with LoRA; the
    optimizer; the random state: the model has dropout on) to the weights, logged losses and
    held-out accuracy of an uninterrupted run."""
    import json
    import shutil

    import r1kit.stages.reward_model as reward_model
    from r1kit.config import recipe_from_dict
    from r1kit.pipeline import run_recipe

    config = json.loads((bpe_checkpoint / "config.json").read_text())
    model_dir = tmp_path / "model"
    shutil.copytree(bpe_checkpoint, model_dir)
    config["attention_dropout"] = 0.2
    (model_dir / "config.json").write_text(json.dumps(config))
    # (LoRA: the paper's constant lr; whole weights: warm-up, then cosine decay)
    lora = {"lora_rank": 4, "lora_target_modules": ["q_proj", "v_proj"]} \
        if variant == "lora" else {"warmup_steps": 2, "final_lr_ratio": 0.1}

    def recipe(**more):
        return recipe_from_dict({"run": {"progress": False, "tensorboard": False}, "stages": {
            "helpful": {"kind": "reward_model", "model": str(model_dir), "train_rows": 24,
                        "test_rows": 8, "batch_size": 4, "micro_batch_size": 2, "lr": 1e-2,
                        "save_every": 2, **lora, **more}}})

    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    run_recipe(recipe(), whole, print_fn=lambda *_: None)
    # step five: 2 micro-batches a step
    real = interrupt_at_call(monkeypatch, reward_model, "_loss_and_correct", 9)
    with pytest.raises(KeyboardInterrupt):
        run_recipe(recipe(), resumed, print_fn=lambda *_: None)
    assert sorted(p.name for p in (resumed / "helpful" / "checkpoints").iterdir()) == \
        ["step-2", "step-4"]
    monkeypatch.setattr(reward_model, "_loss_and_correct", real)
    printed = []
    run_recipe(recipe(), resumed, print_fn=printed.append)
    assert any("resuming from" in line and "step-4" in line for line in printed)
    rows = rows_without_timings(resumed / "metrics.jsonl")
    assert rows == rows_without_timings(whole / "metrics.jsonl")
    assert [r["step"] for r in rows] == list(range(1, 7))  # ceil(24 / 4) steps
    assert all(0 <= r["accuracy"] <= 1 and r["grad_norm"] > 0 for r in rows)
    lrs = [r["lr"] for r in rows]
    if variant == "lora":
        assert lrs == [1e-2] * 6
    else:  # 5e-3, 1e-2 in the warm-up, then the cosine from 1e-2 towards 1e-3
        assert lrs[:3] == [5e-3, 1e-2, 1e-2] and lrs[2] > lrs[3] > lrs[4] > lrs[5] > 1e-3
    summaries = [json.loads((d / "helpful" / "stage.json").read_text())["summary"]
                 for d in (whole, resumed)]
    assert summaries[0]["pairwise_accuracy"] == summaries[1]["pairwise_accuracy"]
    a = load_file(whole / "helpful" / "model.safetensors")
    b = load_file(resumed / "helpful" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    base = load_file(model_dir / "model.safetensors")
    moved = [k for k in base if k in a and not torch.equal(base[k], a[k])]
    assert moved and (variant == "full" or all("q_proj" in k or "v_proj" in k for k in moved))


SAMPLE_RECIPE = MICRO_RECIPE_HEAD + MICRO_SAMPLE_STAGE


def test_an_interrupted_sample_stage_resumes_after_its_last_part(tmp_path, monkeypatch, capsys):
    """A sample stage with save_every = 15 samples, judges and filters 41 questions in parts
    of 15, each written as checkpoints/step-N; interrupted in its third part and run again,
    it goes on after question 30. Its data.jsonl and counts are those of one pass seeded per
    question (save_every seeds each question on its own), and the parts are removed at the
    end."""
    import json

    import r1kit.sampling as sampling

    monkeypatch.setenv("R1KIT_CACHE", str(tmp_path / "cache"))
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(SAMPLE_RECIPE)
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    assert main(["run", str(recipe), "--out", str(whole),
                 "--set", 'stages.data.seeding="question"']) == 0
    real = interrupt_at_call(monkeypatch, sampling, "_sample_part", 3)
    assert main(["run", str(recipe), "--out", str(parts),
                 "--set", "stages.data.save_every=15"]) == 130  # (interrupted)
    assert sorted(p.name for p in (parts / "data" / "checkpoints").iterdir()) == \
        ["step-15", "step-30"]
    monkeypatch.setattr(sampling, "_sample_part", real)
    capsys.readouterr()
    assert main(["run", str(recipe), "--out", str(parts),
                 "--set", "stages.data.save_every=15"]) == 0
    assert "[data] resuming after question 30 of 41 (2 parts" in capsys.readouterr().out
    rows = (whole / "data" / "data.jsonl").read_text()
    assert rows and (parts / "data" / "data.jsonl").read_text() == rows
    counts = [{k: v for k, v in json.loads((d / "data" / "sample.json").read_text()).items()
               if k != "seconds"} for d in (whole, parts)]
    assert counts[0] == counts[1] and counts[0]["generated"] == 41 * 4
    assert counts[0]["judged"] > 0 and counts[0]["kept"] > counts[0]["questions_with_rows"]
    assert not (parts / "data" / "checkpoints").exists()


def test_an_interrupted_eval_stage_goes_on_after_the_models_it_evaluated(tmp_path, monkeypatch,
                                                                         capsys, bpe_checkpoint):
    """An eval stage of two models writes checkpoints/step-1 after the first; interrupted in
    the second and run again, it evaluates the second alone: the same eval.json, table and
    eval.jsonl records as an uninterrupted run, and the checkpoint removed at the end."""
    import json

    import r1kit.stages.evaluate as evaluate

    monkeypatch.setenv("R1KIT_CACHE", str(tmp_path / "cache"))
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(MICRO_RECIPE_HEAD + f"""
[stages.table]
kind = "eval"
models = ["base", "{bpe_checkpoint}"]
k = 2
limit = 4
max_new_tokens = 12
""")
    whole, again = tmp_path / "whole", tmp_path / "again"
    assert main(["run", str(recipe), "--out", str(whole)]) == 0
    real = interrupt_at_call(monkeypatch, evaluate, "_evaluate_on", 2)
    assert main(["run", str(recipe), "--out", str(again)]) == 130
    assert [p.name for p in (again / "table" / "checkpoints").iterdir()] == ["step-1"]
    calls = []

    def counted(*args, **kw):
        calls.append(1)
        return real(*args, **kw)
    monkeypatch.setattr(evaluate, "_evaluate_on", counted)
    capsys.readouterr()
    assert main(["run", str(recipe), "--out", str(again)]) == 0
    assert "[table] resuming after base (evaluated by the interrupted run" in \
        capsys.readouterr().out
    assert len(calls) == 1

    def without_seconds(rows):
        return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]
    for d in (whole, again):
        assert not (d / "table" / "checkpoints").exists()
    tables = [without_seconds(json.loads((d / "table" / "eval.json").read_text()))
              for d in (whole, again)]
    assert tables[0] == tables[1] and [r["model"] for r in tables[0]] == \
        ["base", str(bpe_checkpoint)]
    assert rows_without_timings(again / "eval.jsonl") == rows_without_timings(whole / "eval.jsonl")
    assert (again / "table" / "stage_table.md").read_text() == \
        (whole / "table" / "stage_table.md").read_text()


def test_an_eval_stage_with_save_every_goes_on_after_the_problems_it_saved(
        tmp_path, monkeypatch, capsys, bpe_checkpoint):
    """An eval stage with save_every = 2 checkpoints every 2 problems of each evaluation (the
    held-out set, a benchmark); interrupted in the second model's held-out set and run again,
    it evaluates that model's problems after the saved ones and its benchmark: the same
    eval.json, table and eval.jsonl records as an uninterrupted stage seeding per question."""
    import json

    import r1kit.stages.evaluate as evaluate

    monkeypatch.setenv("R1KIT_CACHE", str(tmp_path / "cache"))
    recipe = tmp_path / "recipe.toml"
    stage = f"""
[stages.table]
kind = "eval"
models = ["base", "{bpe_checkpoint}"]
k = 2
limit = 5
max_new_tokens = 16
benchmarks = ["gsm8k"]
"""
    recipe.write_text(MICRO_RECIPE_HEAD + stage + 'seeding = "question"\n')
    whole, again = tmp_path / "whole", tmp_path / "again"
    assert main(["run", str(recipe), "--out", str(whole)]) == 0
    recipe.write_text(MICRO_RECIPE_HEAD + stage + "save_every = 2\n")
    # (each model: the held-out set's parts of 2, 2 and 1, then gsm8k's: 6 calls)
    real = interrupt_at_call(monkeypatch, evaluate, "evaluate_questions", 8)
    assert main(["run", str(recipe), "--out", str(again)]) == 130
    held = json.loads(next((again / "table" / "checkpoints").iterdir()).joinpath(
        "current.json").read_text())
    assert [len(v) for v in held["parts"].values()] == [2]
    calls = count_parts(monkeypatch, evaluate, "evaluate_questions", real)
    capsys.readouterr()
    assert main(["run", str(recipe), "--out", str(again)]) == 0
    assert "resuming its evaluations after the problems" in capsys.readouterr().out
    assert calls == [2, 1, 2, 2, 1]
    assert not (again / "table" / "checkpoints").exists()

    def without_seconds(rows):
        return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]
    tables = [without_seconds(json.loads((d / "table" / "eval.json").read_text()))
              for d in (whole, again)]
    assert tables[0] == tables[1] and tables[0][0]["gsm8k"]["n"] == 5
    assert rows_without_timings(again / "eval.jsonl") == rows_without_timings(whole / "eval.jsonl")
    assert (again / "table" / "stage_table.md").read_text() == \
        (whole / "table" / "stage_table.md").read_text()


def test_a_sample_stage_removes_its_parts_the_last_first(tmp_path, monkeypatch):
    """The parts are removed the last first, so that a stage killed meanwhile goes on after
    those left (removed in the directory's order, a gap could send it back to question 0)."""
    import shutil

    import r1kit.sampling as sampling
    from r1kit.checkpoints import STATE_FILE

    for first, last in ((0, 5), (5, 10), (10, 15)):
        part = tmp_path / "checkpoints" / f"step-{last}"
        part.mkdir(parents=True)
        torch.save({"first": first, "counts": {}}, part / STATE_FILE)
    assert [p[:2] for p in sampling.parts_done(tmp_path)] == [(0, 5), (5, 10), (10, 15)]
    removed = []

    def killed_on_the_second(path, *args, **kw):
        if len(removed) == 1:
            raise KeyboardInterrupt
        removed.append(path)
        real(path, *args, **kw)
    real = shutil.rmtree
    monkeypatch.setattr(sampling.shutil, "rmtree", killed_on_the_second)
    with pytest.raises(KeyboardInterrupt):
        sampling._remove_parts(tmp_path)
    monkeypatch.setattr(sampling.shutil, "rmtree", real)
    assert [p[:2] for p in sampling.parts_done(tmp_path)] == [(0, 5), (5, 10)]


def test_a_sample_stage_in_parts_that_kept_nothing_takes_new_settings(tmp_path, monkeypatch,
                                                                       capsys):
    """A stage in parts that kept no row stops with the reasons and removes its parts, so
    that, run again with what its hint suggests, it is not refused as a run with other
    settings (a stage without parts holds no results either)."""
    monkeypatch.setenv("R1KIT_CACHE", str(tmp_path / "cache"))
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(SAMPLE_RECIPE)
    out = tmp_path / "run"
    command = ["run", str(recipe), "--out", str(out), "--set", "stages.data.save_every=15",
               "--set", 'stages.data.judge_model=""']
    assert main([*command, "--set", "stages.data.max_new_tokens=2"]) == 2
    assert "sample stage kept no rows out of 164 samples" in capsys.readouterr().err
    assert not (out / "data" / "checkpoints").exists()
    assert (out / "data" / "rejected_samples.jsonl").is_file()
    assert main(command) == 0
    assert "taking the new settings (stages.data.max_new_tokens)" in capsys.readouterr().out


def test_a_sample_stage_frees_the_policy_while_its_judge_runs(tmp_path, monkeypatch):
    """With a judge_model, no copy of the policy is alive while the judge runs (one model in
    memory at a time), in each of the stage's parts."""
    import gc
    import weakref

    import r1kit.sampling as sampling

    monkeypatch.setenv("R1KIT_CACHE", str(tmp_path / "cache"))
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(SAMPLE_RECIPE)
    loaded, alive = [], []
    real_load, real_judge = sampling.load_model, sampling._judge

    def load(*args, **kw):
        model = real_load(*args, **kw)
        loaded.append(weakref.ref(model))
        return model

    def judge(*args, **kw):
        gc.collect()
        alive.append(sum(ref() is not None for ref in loaded))
        return real_judge(*args, **kw)
    monkeypatch.setattr(sampling, "load_model", load)
    monkeypatch.setattr(sampling, "_judge", judge)
    assert main(["run", str(recipe), "--out", str(tmp_path / "run"),
                 "--set", "stages.data.save_every=15"]) == 0
    assert len(loaded) == 3 and alive == [0, 0, 0]


def test_an_interrupted_eval_command_goes_on_after_the_problems_it_saved(tmp_path, monkeypatch,
                                                                         capsys):
    """`r1kit eval --out FILE --save-every 3` writes FILE after every 3 problems too;
    interrupted in a benchmark's third part and run again, it evaluates that benchmark's
    problems after the saved ones (each seeded by its index): the same results, samples
    included, as one uninterrupted run seeding per problem. Another part size resumes too;
    another k starts the benchmark over."""
    import json

    import r1kit.eval.cli as cli

    monkeypatch.setenv("R1KIT_CACHE", str(tmp_path / "cache"))
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(MICRO_RECIPE_HEAD)
    assert main(["run", str(recipe), "--out", str(tmp_path / "run")]) == 0
    mine = tmp_path / "mine.jsonl"
    mine.write_text("".join(json.dumps({"question": f"What is {i} + {i + 3}?",
                                        "answer": str(2 * i + 3)}) + "\n" for i in range(11)))
    command = ["eval", "--model", str(tmp_path / "run" / "base"), "--bench", f"tiny,{mine}",
               "--limit", "11", "--k", "3", "--max-new-tokens", "24"]
    whole, out = tmp_path / "whole.json", tmp_path / "out.json"
    assert main([*command, "--seeding", "question", "--out", str(whole)]) == 0
    real = interrupt_at_call(monkeypatch, cli, "evaluate_questions", 7)  # (mine's 3rd part)
    assert main([*command, "--save-every", "3", "--out", str(out)]) == 130
    held = json.loads(out.read_text())
    assert [r["benchmark"] for r in held["results"]] == ["tiny"]
    assert held["resume"]["partial"]["benchmark"] == str(mine)
    assert len(held["resume"]["partial"]["questions"]) == 6
    calls = count_parts(monkeypatch, cli, "evaluate_questions", real)
    capsys.readouterr()
    assert main([*command, "--save-every", "3", "--out", str(out)]) == 0
    assert f"{mine}: resuming after problem 6 of 11" in capsys.readouterr().out
    assert calls == [3, 2]

    def without_seconds(path):
        data = json.loads(path.read_text())
        return {**data, "results": [{k: v for k, v in r.items() if k != "seconds"}
                                    for r in data["results"]]}
    results = without_seconds(whole)
    assert without_seconds(out) == results  # (and no "resume" left)
    assert 0 < results["results"][0]["pass@1"] < 1 and results["results"][0]["by_level"]
    # interrupted in tiny's second part; resumed in parts of 4, then with another k
    for size, k, expected in (("4", "3", [4, 4, 4, 4, 3]), ("3", "2", [3, 3, 3, 2] * 2)):
        monkeypatch.setattr(cli, "evaluate_questions", real)
        interrupt_at_call(monkeypatch, cli, "evaluate_questions", 2)
        assert main([*command, "--save-every", "3", "--out", str(out)]) == 130
        calls = count_parts(monkeypatch, cli, "evaluate_questions", real)
        other = [*command[:-3], k, *command[-2:]]
        assert main([*other, "--save-every", size, "--out", str(out)]) == 0
        assert calls == expected
    assert without_seconds(out)["results"][0]["k"] == 2

"""A GRPO stage interrupted mid-run resumes from its last checkpoint to the same result."""

from __future__ import annotations

import pytest
import torch
from conftest import MICRO_BASE, REPO, rows_without_timings
from safetensors.torch import load_file

import r1kit.stages.grpo as grpo
from r1kit.cli import main

ARGS = [str(REPO / "recipes" / "zero-tiny.toml"), *MICRO_BASE, "--set", "run.progress=false",
        "--set", "stages.zero.steps=4", "--set", "stages.zero.save_every=1",
        "--set", "stages.zero.rollout_batch_size=32", "--set", "stages.zero.eval.every=2",
        "--set", "stages.zero.eval.limit=16",
        # the reference is reset to the policy after step 2, so the checkpoint the resumed
        # run starts from holds a reference that differs from the stage's input model
        "--set", "stages.zero.ref_refresh_every=2"]


LORA = ["--set", "stages.zero.lora_rank=4", "--set", "stages.zero.lr=1e-2",
        "--set", 'stages.zero.lora_target_modules=["q_proj", "v_proj"]']


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_interrupted_grpo_resumes_exactly(tmp_path, monkeypatch, capsys, lora):
    if lora:
        pytest.importorskip("peft")
    args = ARGS + (LORA if lora else [])
    monkeypatch.setenv("R1KIT_CACHE", str(tmp_path / "cache"))
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    assert main(["run", *args, "--out", str(whole)]) == 0

    real = grpo.update_policy
    calls = []

    def crash_in_step_three(*args, **kw):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kw)

    monkeypatch.setattr(grpo, "update_policy", crash_in_step_three)
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
    assert "resuming from" in capsys.readouterr().out

    # every logged number (timings aside) and the final weights are the uninterrupted run's
    for name in ("metrics.jsonl", "eval.jsonl"):
        assert rows_without_timings(resumed / name) == rows_without_timings(whole / name), name
    a = load_file(whole / "zero" / "model.safetensors")
    b = load_file(resumed / "zero" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    base = load_file(whole / "base" / "model.safetensors")
    assert any(not torch.equal(base[k], a[k]) for k in a)  # the run did train

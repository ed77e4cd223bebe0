"""LoRA (peft) in the grpo stage: only the adapters train, the stage saves merged weights."""

from __future__ import annotations

import pytest
import torch
from conftest import MICRO_BASE, REPO
from safetensors.torch import load_file

from r1kit.cli import main

pytest.importorskip("peft")


def test_lora_grpo_trains_adapters_and_saves_a_plain_merged_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setenv("R1KIT_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "run"
    assert main(["run", str(REPO / "recipes" / "zero-tiny.toml"), "--out", str(out), *MICRO_BASE,
                 "--set", "run.progress=false", "--set", "stages.zero.steps=3",
                 "--set", "stages.zero.rollout_batch_size=32", "--set", "stages.zero.eval.every=0",
                 "--set", "stages.zero.lora_rank=4", "--set", "stages.zero.lr=1e-2",
                 "--set", 'stages.zero.lora_target_modules=["q_proj", "v_proj"]']) == 0
    base = load_file(out / "base" / "model.safetensors")
    tuned = load_file(out / "zero" / "model.safetensors")
    assert tuned.keys() == base.keys()  # a plain checkpoint: no adapter weights left
    changed = {k for k in base if not torch.equal(base[k], tuned[k])}
    assert changed and all(k.endswith(("q_proj.weight", "v_proj.weight")) for k in changed)


def test_lora_config_errors(tmp_path, capsys):
    recipe = str(REPO / "recipes" / "zero-tiny.toml")
    assert main(["run", recipe, "--out", str(tmp_path / "a"), "--set", "stages.zero.lora_rank=4",
                 "--set", "stages.zero.save_every=10"]) == 2
    assert "not supported with LoRA" in capsys.readouterr().err

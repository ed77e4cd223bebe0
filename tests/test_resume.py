"""A GRPO stage interrupted mid-run resumes from its last checkpoint to the same result."""

from __future__ import annotations

import torch
from conftest import MICRO_BASE, REPO, rows_without_timings
from safetensors.torch import load_file

import r1kit.stages.grpo as grpo
from r1kit.cli import main

ARGS = [str(REPO / "recipes" / "zero-tiny.toml"), *MICRO_BASE, "--set", "run.progress=false",
        "--set", "stages.zero.steps=4", "--set", "stages.zero.save_every=1",
        "--set", "stages.zero.rollout_batch_size=32", "--set", "stages.zero.eval.every=2",
        "--set", "stages.zero.eval.limit=16"]


def test_interrupted_grpo_resumes_exactly(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("R1KIT_CACHE", str(tmp_path / "cache"))
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    assert main(["run", *ARGS, "--out", str(whole)]) == 0

    real = grpo.update_policy
    calls = []

    def crash_in_step_three(*args, **kw):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kw)

    monkeypatch.setattr(grpo, "update_policy", crash_in_step_three)
    assert main(["run", *ARGS, "--out", str(resumed)]) != 0
    ckpts = sorted(p.name for p in (resumed / "zero" / "checkpoints").iterdir())
    assert ckpts == ["step-1", "step-2"]  # keep_checkpoints = 2
    monkeypatch.setattr(grpo, "update_policy", real)
    capsys.readouterr()
    assert main(["run", *ARGS, "--out", str(resumed)]) == 0
    assert "resuming from" in capsys.readouterr().out

    # every logged number (timings aside) and the final weights are the uninterrupted run's
    for name in ("metrics.jsonl", "eval.jsonl"):
        assert rows_without_timings(resumed / name) == rows_without_timings(whole / name), name
    a = load_file(whole / "zero" / "model.safetensors")
    b = load_file(resumed / "zero" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

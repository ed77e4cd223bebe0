"""Runs a recipe's stages in order, each in its own directory of the run.

A stage hands over through its directory: a Hugging Face checkpoint plus `stage.json`
(kind, status, seconds, summary). A later stage names an earlier one (`model = "base"`) and
loads that directory. A stage whose `stage.json` says "done" is skipped when the same command
runs again; `--from STAGE` reruns from that stage on.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import torch

from r1kit.config import (
    EvalStageConfig,
    GRPOConfig,
    PretrainConfig,
    Recipe,
    RewardModelConfig,
    SampleConfig,
    SFTConfig,
    check_inputs,
    to_dict,
)
from r1kit.errors import R1kitError
from r1kit.models import check_model_dir, resolve_device, resolve_dtype
from r1kit.runlog import RunLog


def default_run_dir(recipe: Recipe) -> Path:
    return Path("runs") / Path(recipe.source).stem


def _write_json(path: Path, data) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    os.replace(tmp, path)


def run_recipe(recipe: Recipe, run_dir: Path | None = None, from_stage: str | None = None,
               print_fn=print) -> dict:
    run_dir = Path(run_dir or default_run_dir(recipe))
    check_inputs(recipe)
    if from_stage is not None and from_stage not in recipe.stages:
        raise R1kitError(f"--from {from_stage!r}: no such stage",
                         f"stages of this recipe: {', '.join(recipe.stages)}")
    resolved = {"run": to_dict(recipe.run), "stages": to_dict(recipe.stages)}
    saved = run_dir / "config.json"
    if saved.is_file() and from_stage is None:
        previous = json.loads(saved.read_text())
        if previous != json.loads(json.dumps(resolved, default=str)):
            raise R1kitError(
                f"{run_dir} holds a run with different settings",
                "use --out with a new directory, or --from STAGE to rerun stages with the new settings")
    run_dir.mkdir(parents=True, exist_ok=True)
    _write_json(saved, resolved)

    run = recipe.run
    if run.threads:
        torch.set_num_threads(run.threads)
    device = resolve_device(run.device)
    dtype = resolve_dtype(run.dtype, device)
    log = RunLog(run_dir, tensorboard=run.tensorboard)
    summaries: dict[str, dict] = {}
    rerun = from_stage is not None
    names = list(recipe.stages)
    try:
        for name, cfg in recipe.stages.items():
            stage_dir = run_dir / name
            meta_path = stage_dir / "stage.json"
            if rerun and name == from_stage:
                rerun = False
                for later in names[names.index(name):]:
                    if (run_dir / later).exists():
                        shutil.rmtree(run_dir / later)
            if meta_path.is_file() and json.loads(meta_path.read_text()).get("status") == "done":
                print_fn(f"[{name}] already done: skipping ({stage_dir})")
                summaries[name] = json.loads(meta_path.read_text()).get("summary", {})
                continue
            stage_dir.mkdir(parents=True, exist_ok=True)
            print_fn(f"[{name}] {cfg.kind} stage -> {stage_dir}")
            t0 = time.time()
            if not isinstance(cfg, GRPOConfig):  # a grpo stage may resume and drops its own
                log.drop(name)
            summary = _run_stage(name, cfg, recipe, run_dir, stage_dir, device, dtype, log, print_fn)
            meta = {"kind": cfg.kind, "status": "done", "seconds": time.time() - t0,
                    "summary": summary}
            _write_json(meta_path, meta)
            summaries[name] = summary
            print_fn(f"[{name}] done in {meta['seconds']:.0f}s")
    finally:
        log.close()
    from r1kit.plots import plot_figure1

    figure = plot_figure1(run_dir)
    if figure:
        print_fn(f"figure: {figure}")
    from r1kit.report import write_report

    try:
        print_fn(f"report: {write_report(run_dir)}")
    except R1kitError:  # nothing to report yet (e.g. a recipe with no RL or eval stage)
        pass
    return summaries


def _model_path(ref: str, recipe: Recipe, run_dir: Path, kind: str = "causal") -> Path:
    return check_model_dir(run_dir / ref if ref in recipe.stages else ref, kind)


def _run_stage(name, cfg, recipe, run_dir, stage_dir, device, dtype, log, print_fn) -> dict:
    seed = recipe.run.seed
    if isinstance(cfg, PretrainConfig):
        from r1kit.stages.pretrain import run_pretrain

        return run_pretrain(cfg, stage_dir, seed, log=print_fn)
    if isinstance(cfg, GRPOConfig):
        from r1kit.stages.grpo import StageContext, run_grpo

        ctx = StageContext(name=name, stage_dir=stage_dir, run_dir=run_dir, seed=seed,
                           device=device, dtype=dtype, log=log, progress=recipe.run.progress,
                           print=print_fn)
        reward_models = {kind: _model_path(ref, recipe, run_dir, "reward")
                         for kind, ref in (("helpful", cfg.helpful_model),
                                           ("safety", cfg.safety_model)) if ref}
        return run_grpo(cfg, _model_path(cfg.model, recipe, run_dir), ctx, reward_models)
    if isinstance(cfg, RewardModelConfig):
        from r1kit.stages.reward_model import run_reward_model

        return run_reward_model(cfg, _model_path(cfg.model, recipe, run_dir), stage_dir, seed,
                                device, dtype, log=print_fn)
    if isinstance(cfg, SFTConfig):
        from r1kit.stages.sft import run_sft

        data = run_dir / cfg.data / "data.jsonl" if cfg.data in recipe.stages else Path(cfg.data)
        return run_sft(cfg, _model_path(cfg.model, recipe, run_dir), data, stage_dir, seed,
                       device, dtype, log=print_fn)
    if isinstance(cfg, SampleConfig):
        from r1kit.sampling import run_sample

        return run_sample(cfg, _model_path(cfg.model, recipe, run_dir), stage_dir, seed, device,
                          dtype, log=print_fn)
    if isinstance(cfg, EvalStageConfig):
        from r1kit.stages.evaluate import run_eval_stage

        models = {ref: _model_path(ref, recipe, run_dir) for ref in cfg.models}
        reward_models = {kind: _model_path(ref, recipe, run_dir, "reward")
                         for kind, ref in (("helpful", cfg.helpful_model),
                                           ("safety", cfg.safety_model)) if ref}
        return run_eval_stage(cfg, models, reward_models, stage_dir, name, seed, device, dtype,
                              log, print_fn)
    raise R1kitError(f"stage {name!r}: kind {cfg.kind!r} has no runner")

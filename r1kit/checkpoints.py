"""Resumable checkpoints of a training stage: `checkpoints/step-N` directories, each written
under a temporary name and renamed when complete, so that a crash mid-write leaves no half
checkpoint; `trainer_state.pt` in a directory marks it complete."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

from r1kit.errors import failed_write

STATE_FILE = "trainer_state.pt"


def staged_shards(stage_dir: Path, step: int, name: str,
                  save: Callable[[Path], dict]) -> tuple[dict, Path]:
    """A sharded state (`name`: a sharded model's optimizer state, its reference model) for
    checkpoint `step`: every rank writes its own shard (`save(directory)`, a collective that
    returns the marker for trainer_state.pt) into a staging directory beside the checkpoints,
    so no rank gathers the whole state; the checkpoint's `write` moves it into place
    (os.replace(staging, tmp / name)). Returns the marker and the staging directory."""
    from r1kit import distributed

    staging = Path(stage_dir) / "checkpoints" / f".{name}-step-{step}.tmp"
    if distributed.current().is_main:
        for old in staging.parent.glob(f".{name}-step-*.tmp"):  # (left by a run that
            shutil.rmtree(old)  # stopped while writing one)
        staging.mkdir(parents=True)
    distributed.wait_for_main()
    marker = save(staging)
    distributed.wait_for_main()  # (every shard written before rank 0 moves them)
    return marker, staging


def latest_checkpoint(stage_dir: Path) -> Path | None:
    """The newest complete checkpoint (checkpoints/step-N with its trainer state), if any."""
    found = []
    for d in (Path(stage_dir) / "checkpoints").glob("step-*"):
        if (d / STATE_FILE).is_file() and d.name[5:].isdigit():
            found.append((int(d.name[5:]), d))
    return max(found)[1] if found else None


def write_checkpoint(stage_dir: Path, step: int, keep: int, write: Callable[[Path], None]) -> Path:
    """checkpoints/step-`step`: `write(directory)` fills a fresh temporary directory (it must
    write STATE_FILE last), which is then renamed into place; only the newest `keep`
    checkpoints are kept (0 = all). A write that fails (a full disk) removes its temporary
    directory; those of a run killed while writing one are removed by the next write."""
    root = Path(stage_dir) / "checkpoints"
    final, tmp = root / f"step-{step}", root / f".step-{step}.tmp"
    for d in (*root.glob(".step-*.tmp"), final):
        if d.exists():
            shutil.rmtree(d)
    tmp.mkdir(parents=True)
    try:
        write(tmp)
    except BaseException as exc:
        said = failed_write(exc, tmp)  # (torch's and safetensors' own words for a full disk)
        shutil.rmtree(tmp, ignore_errors=True)  # (the space a half checkpoint took)
        if said is not None:
            raise said from exc
        raise
    os.replace(tmp, final)
    old = sorted((int(d.name[5:]), d) for d in root.glob("step-*") if d.name[5:].isdigit())
    for _, d in old[:-keep] if keep > 0 else []:
        shutil.rmtree(d)
    return final


def save_trained(stage_dir: Path, step: int, keep: int, model, opt, tokenizer, lora,
                 state: dict) -> None:
    """checkpoints/step-`step` of a stage that trains `model` with `opt` (sft, reward_model):
    the weights as a Hugging Face checkpoint (with LoRA the adapters alone, a peft directory
    on the stage's input model), the optimizer's state, every rank's random state, and the
    stage's own `state` (its step, data order, ...) in trainer_state.pt. Every rank calls it:
    gathering sharded weights is a collective; under FSDP2 (without LoRA) each rank writes its
    own shard of the optimizer's state. restore_trained reads it back."""
    import torch

    from r1kit import distributed
    from r1kit.lora import gathered_adapters, save_adapters
    from r1kit.models import quiet_loading, save_model

    sharded = distributed.is_sharded(model)
    adapters = gathered_adapters(model) if sharded and lora is not None else None
    weights = distributed.full_state(model) if sharded and lora is None else None
    optim, staging = (staged_shards(stage_dir, step, distributed.SHARDED_OPTIMIZER,
                                    lambda d: distributed.save_sharded_optimizer(model, opt, d))
                      if sharded and lora is None
                      else (distributed.optimizer_state(model, opt), None))
    rngs = distributed.gather_lists([torch.get_rng_state()])
    cuda_rngs = distributed.gather_lists([torch.cuda.get_rng_state()
                                          if torch.cuda.is_available() else None])

    def write(tmp: Path) -> None:
        if staging is not None:
            os.replace(staging, tmp / distributed.SHARDED_OPTIMIZER)
        if lora is not None:
            save_adapters(lora, tmp, adapters)
            with quiet_loading():
                tokenizer.save_pretrained(tmp)
        else:
            save_model(model, tokenizer, tmp, state_dict=weights)
        torch.save({**state, "optimizer": optim, "rng": rngs, "cuda_rng": cuda_rngs},
                   tmp / STATE_FILE)
    if distributed.current().is_main:
        write_checkpoint(stage_dir, step, keep, write)
    distributed.wait_for_main()


def restore_trained(checkpoint: Path, model, opt) -> dict:
    """The trainer state of a checkpoint save_trained wrote, with the optimizer's state
    loaded into `opt` and this rank's random state restored (written by another number of
    processes: not restored, each rank keeps its seed's). The weights are the caller's to
    load (the model directory, or the adapters onto the input model)."""
    import torch

    from r1kit import distributed

    world = distributed.current()
    state = torch.load(checkpoint / STATE_FILE, map_location="cpu", weights_only=True)
    if distributed.sharded_entry(state["optimizer"], distributed.SHARDED_OPTIMIZER):
        distributed.load_sharded_optimizer(model, opt, checkpoint / distributed.SHARDED_OPTIMIZER)
    else:
        distributed.load_optimizer_state(model, opt, state["optimizer"])
    rngs, cuda_rngs = state["rng"], state.get("cuda_rng")  # one per rank (dropout)
    if len(rngs) == world.world_size:
        torch.set_rng_state(rngs[world.rank])
        if cuda_rngs and cuda_rngs[world.rank] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state(cuda_rngs[world.rank])
    return state

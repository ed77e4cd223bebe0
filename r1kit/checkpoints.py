"""Resumable checkpoints of a training stage: `checkpoints/step-N` directories, each written
under a temporary name and renamed when complete, so that a crash mid-write leaves no half
checkpoint; `trainer_state.pt` in a directory marks it complete."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

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
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # (the space a half checkpoint took)
        raise
    os.replace(tmp, final)
    old = sorted((int(d.name[5:]), d) for d in root.glob("step-*") if d.name[5:].isdigit())
    for _, d in old[:-keep] if keep > 0 else []:
        shutil.rmtree(d)
    return final

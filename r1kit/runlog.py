"""What a run writes as it goes: metrics.jsonl, eval.jsonl, TensorBoard events, and (with
`run.wandb`) the same numbers in a Weights & Biases run."""

from __future__ import annotations

import json
import math
import os
import uuid
from pathlib import Path

from r1kit.errors import R1kitError


def _clean(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN; a null is visible and parses everywhere
    return value


def wandb_module():
    """The wandb package, or an R1kitError saying how to get it."""
    try:
        import wandb
    except ImportError:
        raise R1kitError("run.wandb is set but the wandb package is not installed",
                         "pip install wandb (or leave run.wandb empty)") from None
    return wandb


class RunLog:
    """Appends one JSON object per line; mirrors numbers to TensorBoard when it is installed,
    and to a Weights & Biases run in project `wandb` when that is given.

    W&B: one run per run directory (its id is kept in wandb.json there, so that the same
    command after an interruption continues the same W&B run), the recipe as its config, and
    per stage the series `STAGE/train/KEY` and `STAGE/eval/BENCHMARK/KEY`, each against its
    own step axis `STAGE/step` (stages each count their steps from 1)."""

    def __init__(self, run_dir: Path, tensorboard: bool = True, wandb: str = "",
                 config: dict | None = None):
        self.run_dir = Path(run_dir)
        self._tb = None
        self._wandb = None
        self._stages: set[str] = set()
        if wandb:
            self._wandb = _start_wandb(wandb_module(), wandb, self.run_dir, config or {})
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is optional
                SummaryWriter = None
            if SummaryWriter is not None:
                self._tb = SummaryWriter(str(self.run_dir / "tensorboard"))

    def _append(self, name: str, record: dict) -> None:
        append_line(self.run_dir / name, json.dumps({k: _clean(v) for k, v in record.items()})
                    + "\n")

    def drop(self, stage: str, after_step: int = -1, keep=None) -> None:
        """Forget the rows a stage wrote after `after_step` (all of them with -1; with `keep`,
        those for which keep(row) is false): a stage that reruns, or resumes from a
        checkpoint, does not log its steps twice."""
        for name in ("metrics.jsonl", "eval.jsonl"):
            path = self.run_dir / name
            rows = read_jsonl(path)
            kept = [r for r in rows if r.get("stage") != stage or (
                keep(r) if keep is not None else r.get("step", 0) <= after_step)]
            if len(kept) != len(rows):
                tmp = path.with_name(name + ".tmp")
                tmp.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
                os.replace(tmp, path)

    def metrics(self, record: dict) -> None:
        self._append("metrics.jsonl", record)
        self._scalars("train", record)

    def eval(self, record: dict) -> None:
        self._append("eval.jsonl", record)
        self._scalars(f"eval/{record.get('benchmark', 'heldout')}", record)

    def _scalars(self, prefix: str, record: dict) -> None:
        step, stage = record.get("step", 0), record.get("stage", "")
        numbers = {key: value for key, value in record.items()
                   if isinstance(value, (int, float)) and not isinstance(value, bool)
                   and key != "step"}
        if self._tb is not None:
            for key, value in numbers.items():
                self._tb.add_scalar(f"{stage}/{prefix}/{key}", value, step)
            self._tb.flush()
        if self._wandb is not None:
            if stage not in self._stages:  # this stage's series against its own step
                self._stages.add(stage)
                self._wandb.define_metric(f"{stage}/step")
                self._wandb.define_metric(f"{stage}/*", step_metric=f"{stage}/step")
            self._wandb.log({f"{stage}/step": step,
                             **{f"{stage}/{prefix}/{k}": v for k, v in numbers.items()}})

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None


def _start_wandb(wandb, project: str, run_dir: Path, config: dict):
    """A W&B run for this run directory: the one started there before, if any (resumed)."""
    ids = run_dir / "wandb.json"
    previous = json.loads(ids.read_text()).get("id") if ids.is_file() else None
    run_id = previous or uuid.uuid4().hex[:12]
    try:
        run = wandb.init(project=project, id=run_id, resume="allow", name=run_dir.name,
                         dir=str(run_dir), config=config)
    except Exception as exc:  # no login, no network, a bad project name: say so, no traceback
        raise R1kitError(f"run.wandb: W&B did not start a run: {type(exc).__name__}: {exc}",
                         "log in with `wandb login`, set WANDB_MODE=offline to log without a "
                         "network, or leave run.wandb empty") from exc
    ids.write_text(json.dumps({"project": project, "id": run_id}) + "\n")
    return run


def read_jsonl(path: Path) -> list[dict]:
    """The rows of a log r1kit appends to. A last line without its newline is a write that
    was cut short (the process killed, the disk full) and is left out; a broken line before
    it is an R1kitError naming it."""
    if not Path(path).is_file():
        return []
    text = Path(path).read_text(encoding="utf-8", errors="replace")
    lines = text.split("\n")  # the last is "" when the file ends with its newline
    rows = []
    for number, line in enumerate(lines[:-1], 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except ValueError as exc:
            raise R1kitError(f"{path}:{number}: a line is not JSON ({exc})",
                             "remove the broken line (an interrupted write?)") from exc
    return rows


def append_line(path: Path, text: str) -> None:
    """Append one line (`text` ends with its newline) to a log that read_jsonl reads; a last
    line cut short by an earlier interrupted write is dropped first, so the new line does not
    join it."""
    path = Path(path)
    with open(path, "a+b") as fh:
        end = fh.seek(0, os.SEEK_END)
        if end:
            fh.seek(end - 1)
            if fh.read(1) != b"\n":  # the file does not end with a whole line: cut it back
                fh.seek(0)
                data = fh.read()
                fh.truncate(data.rfind(b"\n") + 1)
        fh.write(text.encode("utf-8"))

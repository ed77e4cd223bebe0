"""What a run writes as it goes: metrics.jsonl, eval.jsonl, TensorBoard events."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path


def _clean(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN; a null is visible and parses everywhere
    return value


class RunLog:
    """Appends one JSON object per line; mirrors numbers to TensorBoard when it is installed."""

    def __init__(self, run_dir: Path, tensorboard: bool = True):
        self.run_dir = Path(run_dir)
        self._tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is optional
                SummaryWriter = None
            if SummaryWriter is not None:
                self._tb = SummaryWriter(str(self.run_dir / "tensorboard"))

    def _append(self, name: str, record: dict) -> None:
        with open(self.run_dir / name, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({k: _clean(v) for k, v in record.items()}) + "\n")

    def drop(self, stage: str, after_step: int = -1) -> None:
        """Forget the rows a stage wrote after `after_step` (all of them with -1): a stage that
        reruns, or resumes from a checkpoint, does not log its steps twice."""
        for name in ("metrics.jsonl", "eval.jsonl"):
            path = self.run_dir / name
            rows = read_jsonl(path)
            kept = [r for r in rows if r.get("stage") != stage or r.get("step", 0) <= after_step]
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
        if self._tb is None:
            return
        step, stage = record.get("step", 0), record.get("stage", "")
        for key, value in record.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "step":
                self._tb.add_scalar(f"{stage}/{prefix}/{key}", value, step)
        self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def read_jsonl(path: Path) -> list[dict]:
    if not Path(path).is_file():
        return []
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]

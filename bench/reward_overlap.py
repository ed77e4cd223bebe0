#!/usr/bin/env python3
"""Rewards scored while the rollout decodes (`overlap_rewards`) against scored after it.

    python bench/reward_overlap.py [--steps 15] [--runs 1] [--out R.json]

The tiny world's R1-Zero recipe (recipes/zero-tiny.toml, its base pretrained once and cached),
with its training questions written to a JSONL file and read as `task = "math"`, so that every
answer is checked by math-verify in the verifier's worker processes (the tiny world's own task
checks in-process and is never overlapped). The GRPO stage runs with `overlap_rewards = "on"`
and `"off"` in turn (on whatever device r1kit picks: CUDA when there is one), no evaluations;
printed per mode: the sums over the steps of decoding (`gen_seconds`), of waiting for rewards
after the rollout (`reward_seconds`) and of training, the whole steps, and whether the two
runs' rewards were equal.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=15)
    ap.add_argument("--runs", type=int, default=1, help="alternating on/off pairs")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)

    from r1kit.cli import main as r1kit_main
    from r1kit.tasks.arithmetic import ArithmeticTask

    work = Path(tempfile.mkdtemp(prefix="reward-overlap-"))
    data = work / "train.jsonl"
    data.write_text("".join(json.dumps({"question": e.question, "answer": e.answer}) + "\n"
                            for e in ArithmeticTask(seed=0).train_examples()[:5000]))
    results: dict = {"steps": args.steps, "runs": []}
    for run in range(args.runs):
        pair = {}
        for mode in ("on", "off"):
            out = work / f"{mode}-{run}"
            code = r1kit_main(["run", str(REPO / "recipes" / "zero-tiny.toml"), "--out", str(out),
                               "--set", "run.progress=false", "--set", "run.tensorboard=false",
                               "--set", 'stages.zero.task="math"',
                               "--set", f'stages.zero.train_file="{data}"',
                               "--set", "stages.zero.eval.every=0",
                               "--set", f"stages.zero.steps={args.steps}",
                               "--set", f'stages.zero.overlap_rewards="{mode}"'])
            if code != 0:
                return code
            rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
            rows = [r for r in rows if r.get("stage") == "zero"]
            pair[mode] = {k: sum(r[k] for r in rows) for k in
                          ("gen_seconds", "reward_seconds", "train_seconds", "step_seconds")}
            pair[mode]["rewards"] = [r["reward"] for r in rows]
            p = pair[mode]
            print(f"run {run + 1} overlap {mode:3s}: decoding {p['gen_seconds']:6.2f} s, waiting "
                  f"for rewards {p['reward_seconds']:5.2f} s, training {p['train_seconds']:6.2f} s,"
                  f" steps {p['step_seconds']:6.2f} s ({len(rows)} steps)")
        pair["same_rewards"] = pair["on"]["rewards"] == pair["off"]["rewards"]
        print(f"run {run + 1}: the same rewards: {pair['same_rewards']}")
        results["runs"].append(pair)
    import torch

    results["device"] = (torch.cuda.get_device_name(0) if torch.cuda.is_available()
                         else f"cpu ({os.cpu_count()} cores)")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

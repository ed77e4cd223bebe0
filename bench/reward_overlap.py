#!/usr/bin/env python3
"""Rewards scored while the rollout decodes (`overlap_rewards`) against scored after it.

    python bench/reward_overlap.py [--steps 15] [--runs 1] [--out R.json]
    python bench/reward_overlap.py --proxy [--wait-ms 3] [--runs 2]

The tiny world's R1-Zero recipe (recipes/zero-tiny.toml, its base pretrained once and cached),
with its training questions written to a JSONL file and read as `task = "math"`, so that every
answer is checked by math-verify in the verifier's worker processes (the tiny world's own task
checks in-process and is never overlapped). The GRPO stage runs with `overlap_rewards = "on"`
and `"off"` in turn (on whatever device r1kit picks: CUDA when there is one), no evaluations;
printed per mode: the sums over the steps of decoding (`gen_seconds`), of waiting for rewards
after the rollout (`reward_seconds`) and of training, the whole steps, and whether the two
runs' rewards were equal.

--proxy stands in for a rollout on a GPU, where the decoding thread mostly waits for the
device: 256 decode steps, each a few small tensor operations and then --wait-ms of sleep (the
interpreter released, as while waiting for a GPU), during which 256 math completions of ~2,000
characters finish, 8 at a time, and are handed to r1kit.rewards.overlap.OverlappedRewards
(with the math task's CombinedReward: answers checked by math-verify in the worker processes).
Printed per mode: the decoding loop's seconds, the wait for rewards after it, and their sum.
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
    ap.add_argument("--proxy", action="store_true", help="the GPU stand-in described above")
    ap.add_argument("--wait-ms", type=float, default=3.0)
    args = ap.parse_args(argv)
    if args.proxy:
        return proxy(args)

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


def proxy(args) -> int:
    import random
    import time

    import torch

    from r1kit.rewards.combined import CombinedReward
    from r1kit.rewards.overlap import OverlappedRewards
    from r1kit.tasks.base import Example
    from r1kit.tasks.math import MathTask

    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="reward-overlap-"))
    (work / "t.jsonl").write_text(json.dumps({"question": "q", "answer": "1"}) + "\n")
    reward = CombinedReward(MathTask("t", work / "t.jsonl"))
    rng = random.Random(0)
    n, steps = 256, 256
    refs = ["\\frac{3}{4}", "12", "2\\sqrt{3}", "x^2+1", "(1,2)", "\\pi/2", "0.25", "17"]
    words = ["so", "we", "get", "the", "value", "wait", "check", "then"]
    texts, examples = [], []
    for i in range(n):
        ref = refs[i % len(refs)]
        answer = rng.choice([ref, "\\frac{6}{8}", "13", "\\sqrt{12}", "1+x^2", "3/4"])
        cot = " ".join(rng.choice(words) for _ in range(400))
        texts.append(f"{cot}</think> <answer>The answer is \\boxed{{{answer}}}</answer>")
        examples.append(Example(question="q", answer=ref))
    finish = sorted(rng.sample(range(steps), n // 8) * 8)  # 8 rows finish at each of 32 steps
    x = torch.randn(256, 1000)
    reward.score(texts[:8], examples[:8])  # the verifier's workers start

    def decode(scoring):
        t, row = time.perf_counter(), 0
        for s in range(steps):
            y = x
            for _ in range(15):
                y = torch.add(y, 1.0)
            time.sleep(args.wait_ms / 1000)  # the device decodes
            done = [r for r in range(row, n) if finish[r] <= s]
            if scoring is not None and done:
                scoring.finished(done, [[r] for r in done])
            row += len(done)
        return time.perf_counter() - t

    results = {"proxy": True, "wait_ms": args.wait_ms, "runs": []}
    for run in range(args.runs):
        pair = {}
        for mode in ("off", "on"):
            with OverlappedRewards(reward, lambda ids: texts[ids[0]], examples,
                                   enabled=mode == "on") as scoring:
                t_dec = decode(scoring if mode == "on" else None)
                t = time.perf_counter()
                scored = scoring.results(texts)
                t_wait = time.perf_counter() - t
            pair[mode] = {"decode_s": t_dec, "wait_s": t_wait, "rewards": [s for s, _ in scored]}
            print(f"run {run + 1} overlap {mode:3s}: decoding loop {t_dec:.3f} s, waiting for "
                  f"rewards after it {t_wait:.3f} s, together {t_dec + t_wait:.3f} s")
        pair["same_rewards"] = pair["on"]["rewards"] == pair["off"]["rewards"]
        results["runs"].append(pair)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

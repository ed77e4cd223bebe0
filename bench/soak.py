"""Soak test: many tiny GRPO steps in one process, resident memory sampled every step.

    python bench/soak.py --steps 1000

Runs recipes/zero-tiny.toml with a micro base (seconds to pretrain) and small rollouts
(32 completions of up to 48 tokens), checkpointing every 50 steps, and reports resident memory
(RSS from /proc/self/status) at the start, the end, and the slope of a least-squares line over
the second half of the steps, in MiB per 100 steps. A leak shows as a slope that stays positive
however long the run; flat memory is a slope near 0.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def rss_mib() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def slope_per_100(xs: list[float], ys: list[float]) -> float:
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    return 100 * sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx else 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1000)
    args = ap.parse_args()
    sys.path.insert(0, str(REPO))
    import r1kit.runlog as runlog
    from r1kit.cli import main as r1kit_main

    samples: list[tuple[int, float]] = []
    original = runlog.RunLog.metrics

    def metrics_with_rss(self, record):
        samples.append((record["step"], rss_mib()))
        return original(self, record)

    runlog.RunLog.metrics = metrics_with_rss
    work = Path(tempfile.mkdtemp(prefix="r1kit-soak-"))
    os.environ.setdefault("R1KIT_CACHE", str(work / "cache"))
    micro = ["stages.base.steps=200", "stages.base.corpus_docs=3000", "stages.base.hidden_size=48",
             "stages.base.intermediate_size=96", "stages.base.num_layers=1", "stages.base.lr=1e-2",
             "stages.base.general_docs=600", f"stages.zero.steps={args.steps}",
             "stages.zero.rollout_batch_size=32", "stages.zero.max_new_tokens=48",
             "stages.zero.eval.every=0", "stages.zero.save_every=50", "run.progress=false",
             "run.tensorboard=false"]
    t0 = time.time()
    code = r1kit_main(["run", str(REPO / "recipes" / "zero-tiny.toml"), "--out",
                       str(work / "run"), *[a for kv in micro for a in ("--set", kv)]])
    if code != 0:
        raise SystemExit(code)
    half = samples[len(samples) // 2:]
    slope = slope_per_100([s for s, _ in half], [m for _, m in half])
    print(f"{len(samples)} GRPO steps in {time.time() - t0:.0f} s")
    print(f"RSS: step 1 {samples[0][1]:.1f} MiB, step {len(samples) // 2} "
          f"{samples[len(samples) // 2][1]:.1f} MiB, step {samples[-1][0]} {samples[-1][1]:.1f} MiB, "
          f"max {max(m for _, m in samples):.1f} MiB")
    print(f"slope over the second half: {slope:+.3f} MiB per 100 steps")


if __name__ == "__main__":
    main()

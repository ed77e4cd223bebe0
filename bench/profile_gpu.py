#!/usr/bin/env python3
"""Where the time and memory of a GRPO step go: kernel tables for decoding and for the update.

    python bench/profile_gpu.py [--out DIR] [--new 256] [--steps 2] [--graphs]

Builds the random Qwen2.5-0.5B-shaped model of bench/vs_trl.py's gpu preset and runs its r1kit
side (16 prompts x 16 completions x --new tokens) for --steps steps; the last step's rollout
(CUDA graphs off, or with --graphs on: the kernels inside their replays) and its update are profiled with
torch.profiler. Prints, per phase: wall seconds, the sum of device kernel time (their ratio is
how busy the GPU was), peak memory, and the kernels that took the most time. VS_TRL_SMALL=1
makes a CPU dry run of the same code.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

for _k, _v in {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
               "TOKENIZERS_PARALLELISM": "false"}.items():
    os.environ.setdefault(_k, _v)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=None)
    ap.add_argument("--new", type=int, default=256)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--rows", type=int, default=40)
    ap.add_argument("--phases", default="generate,update_policy",
                    help="which phases of the last step to profile")
    ap.add_argument("--graphs", action="store_true",
                    help="profile the rollout with its CUDA graphs (the kernels inside replays)")
    args = ap.parse_args(argv)

    import torch
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    import r1kit.stages.grpo as grpo
    import vs_trl

    cuda = torch.cuda.is_available()
    vs_trl.PRESETS["gpu"].update(new=args.new, steps=args.steps)
    if not cuda and os.environ.get("VS_TRL_SMALL") != "1":
        print("no GPU: set VS_TRL_SMALL=1 for a CPU dry run")
        return 2
    model_dir = Path(tempfile.mkdtemp(prefix="profile-model-"))
    vs_trl.build_gpu_model(model_dir)
    out_dir = Path(args.out) if args.out else None
    if out_dir:
        out_dir.mkdir(parents=True, exist_ok=True)
    report: dict = {"device": torch.cuda.get_device_name(0) if cuda else "cpu",
                    "torch": torch.__version__, "new": args.new, "phases": {}}
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    calls = {"generate": 0, "update_policy": 0}

    def sync():
        if cuda:
            torch.cuda.synchronize()

    def phase(name, fn, *a, **kw):
        calls[name] += 1
        if calls[name] < args.steps or name not in args.phases.split(","):
            return fn(*a, **kw)
        if name == "generate" and not args.graphs:
            kw["cuda_graphs"] = False
        sync()
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated() if cuda else 0
        with profile(activities=acts) as prof:
            t = time.perf_counter()
            res = fn(*a, **kw)
            sync()
            wall = time.perf_counter() - t
        events = prof.key_averages()

        def dev_self(e):
            return getattr(e, "self_device_time_total", None) or getattr(
                e, "self_cuda_time_total", 0)

        # device time of the kernels themselves (an operator's row repeats its kernels' time)
        kernels = [e for e in events if getattr(e, "device_type", None) == DeviceType.CUDA]
        kernel_us = sum(dev_self(e) for e in kernels)
        rows = sorted(kernels or events, key=dev_self, reverse=True)[:args.rows]
        info = {"wall_s": wall, "device_kernel_s": kernel_us / 1e6,
                "busy": kernel_us / 1e6 / wall if wall else 0.0,
                "allocated_before_mib": base / 2**20,
                "peak_mib": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
                "top": [{"name": e.key[:120], "calls": e.count,
                         "device_ms": dev_self(e) / 1e3,
                         "cpu_ms": e.self_cpu_time_total / 1e3} for e in rows],
                # where the host's time went (launches, waits for the device, Python-side ops)
                "top_cpu": [{"name": e.key[:120], "calls": e.count,
                             "cpu_ms": e.self_cpu_time_total / 1e3}
                            for e in sorted(events, key=lambda e: e.self_cpu_time_total,
                                            reverse=True)[:args.rows // 2]]}
        report["phases"][name] = info
        print(f"\n== {name}: wall {wall:.3f} s, device kernels {kernel_us / 1e6:.3f} s "
              f"({100 * info['busy']:.0f}% busy), memory before {info['allocated_before_mib']:.0f}"
              f" MiB, peak {info['peak_mib'] or 0:.0f} MiB")
        for r in info["top"]:
            print(f"{r['device_ms']:10.2f} ms {r['calls']:7d}x  cpu {r['cpu_ms']:9.2f} ms  "
                  f"{r['name']}")
        print(f"-- {name}: host time by operation (self)")
        for r in info["top_cpu"]:
            print(f"  cpu {r['cpu_ms']:9.2f} ms {r['calls']:7d}x  {r['name']}")
        return res

    real_gen, real_upd = grpo.generate, grpo.update_policy
    grpo.generate = lambda *a, **kw: phase("generate", real_gen, *a, **kw)
    grpo.update_policy = lambda *a, **kw: phase("update_policy", real_upd, *a, **kw)
    res = vs_trl.run_r1kit("gpu", model_dir, args.steps)
    report["step_seconds"] = res["step_seconds"]
    report["gen_seconds"], report["train_seconds"] = res["gen_seconds"], res["train_seconds"]
    print("\ngen_seconds", [round(x, 3) for x in res["gen_seconds"]],
          "train_seconds", [round(x, 3) for x in res["train_seconds"]])
    if out_dir:
        (out_dir / "profile.json").write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

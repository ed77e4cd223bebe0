"""Throughput of the code reward: N short correct programs scored through the sandbox pool.

    python bench/code_throughput.py                 # 200 programs, one worker per CPU
    python bench/code_throughput.py -n 500 --workers 4 --isolation limits
    python bench/code_throughput.py --io            # input/output problems, 3 cases each
    python bench/code_throughput.py --calls         # function-call problems, 3 cases each

Each program is a small MBPP-style solution with three asserts, run by the full test harness
(r1kit/sandbox/harness.py) in the sandbox, exactly as score_code_rows runs it during RL.
With --io, each problem is instead three input/output cases (stdin → stdout, as APPS or
Codeforces give them), each run as its own sandboxed process (r1kit/rewards/code_io.py);
with --calls, three function-call cases (APPS' fn_name), each its own process that calls the
function on the case's arguments.
Prints programs/second and which isolation was active; the target on a 2-core machine is at
least 10 programs/second. Exits 1 if any correct program was not scored 1.0 (a broken sandbox
must not look fast).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from r1kit.rewards.code import score_code_rows
from r1kit.sandbox import SandboxPool, sandbox_info


def rows(n: int) -> list[dict]:
    """n distinct small problems, each with a correct fenced solution as its completion."""
    out = []
    for i in range(n):
        k = i % 17 + 1
        solution = (f"def scale_{i}(xs):\n"
                    f"    return [x * {k} for x in xs]\n")
        out.append({
            "tests": [f"assert scale_{i}([1, 2]) == [{k}, {2 * k}]",
                      f"assert scale_{i}([]) == []",
                      f"assert scale_{i}([-3]) == [{-3 * k}]"],
            "completion": f"<think>multiply</think><answer>\n```python\n{solution}```\n</answer>",
        })
    return out


def io_rows(n: int) -> list[dict]:
    """n distinct small input/output problems of three cases, each with a correct program."""
    out = []
    for i in range(n):
        k = i % 17 + 1
        program = f"xs = list(map(int, input().split()))\nprint(*[x * {k} for x in xs])\n"
        cases = [{"input": " ".join(map(str, xs)) + "\n",
                  "output": " ".join(str(x * k) for x in xs)}
                 for xs in ([1, 2], [5], [-3, 0, 7])]
        out.append({"test_cases": cases,
                    "completion": f"<think>multiply</think><answer>\n```python\n{program}```\n"
                                  "</answer>"})
    return out


def call_rows(n: int) -> list[dict]:
    """n distinct small function-call problems of three cases, each with a correct function."""
    out = []
    for i in range(n):
        k = i % 17 + 1
        program = f"def scale(xs):\n    return [x * {k} for x in xs]\n"
        cases = [([1, 2],), ([5],), ([-3, 0, 7],)]
        out.append({"input_output": {"fn_name": "scale", "inputs": [list(c) for c in cases],
                                     "outputs": [[[x * k for x in c[0]]] for c in cases]},
                    "completion": f"<think>multiply</think><answer>\n```python\n{program}```\n"
                                  "</answer>"})
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=200, help="programs to score (200)")
    parser.add_argument("--workers", type=int, default=None,
                        help="programs at once (default: one per CPU)")
    parser.add_argument("--isolation", default=None,
                        help="auto (default, or $R1KIT_SANDBOX), bubblewrap or limits")
    parser.add_argument("--io", action="store_true",
                        help="input/output problems (three cases each, a process per case)")
    parser.add_argument("--calls", action="store_true",
                        help="function-call problems (three cases each, a process per case)")
    args = parser.parse_args(argv)

    data = call_rows(args.n) if args.calls else io_rows(args.n) if args.io else rows(args.n)
    info = sandbox_info(args.isolation)
    with SandboxPool(args.workers, isolation=args.isolation) as pool:
        score_code_rows(data[:2], pool=pool)  # warm-up: page cache, first fork
        start = time.perf_counter()
        scored = score_code_rows(data, pool=pool)
        seconds = time.perf_counter() - start
        workers = pool.workers
    bad = [i for i, (score, _) in enumerate(scored) if score != 1.0]
    rate = args.n / seconds
    print(f"isolation: {info['isolation']} (uid {info['uid']}, processes bounded: "
          f"{info['processes_bounded']})")
    print(f"{args.n} programs in {seconds:.2f} s with {workers} workers on {os.cpu_count()} "
          f"CPUs: {rate:.1f} programs/second (target >= 10)"
          + (f", {3 * rate:.1f} input/output cases/second" if args.io else "")
          + (f", {3 * rate:.1f} function-call cases/second" if args.calls else ""))
    if bad:
        print(f"FAILED: {len(bad)} correct programs did not score 1.0, e.g. row {bad[0]}: "
              f"{scored[bad[0]][1]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

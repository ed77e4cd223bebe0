"""A sandbox for untrusted Python programs (model-written code is hostile input).

    from r1kit.sandbox import run_program, run_many, Limits, isolation_level
    result = run_program("print(input()[::-1])", stdin="abc", limits=Limits(wall_seconds=2))
    result.status, result.stdout        # ("ok", "cba\\n")

- runner.py: one run (private temp dir, minimal environment, limits, output caps, wall
  clock, killing every process the program started).
- _child.py: the launcher on the far side of the boundary (rlimits, uid switch, supervision).
- isolation.py: bubblewrap when it works here, else limits-only (one warning), and what each
  enforces; `isolation_level()` says which is active.
- pool.py: many runs in parallel.
- harness.py: running tests against candidate code so that a candidate cannot fake a pass.

What the sandbox enforces (details in isolation.py):

- both levels: CPU time, address space (memory), file size, open files, no core dumps, the
  wall clock and output caps; a fresh temporary directory, a minimal environment, the
  caller's interpreter in isolated mode; every process the program started is killed
  when it ends.
- bubblewrap adds: new PID, network, IPC and UTS namespaces (the program cannot see or
  signal the caller's processes, and has only a private loopback), of the file system only
  the system's and the interpreter's directories, read-only (not the caller's data files,
  home or working directory), nothing writable except its own directory (a size-capped
  tmpfs: Limits.disk_bytes), and as root a switch
  to an unprivileged uid, which also makes Limits.max_processes hold.
- limits-only is not an isolation boundary: the program shares network, file system and
  process table with the caller. A launcher process stands between it and the caller (it
  is what os.getppid() returns); processes are bounded by RLIMIT_NPROC when not root, or
  by a per-run pids cgroup as root when one can be made, and otherwise not at all.
"""

from r1kit.sandbox.harness import TestOutcome, TestSpec, run_tests, run_tests_many
from r1kit.sandbox.isolation import get_config, isolation_level, sandbox_info
from r1kit.sandbox.limits import Limits, RunResult
from r1kit.sandbox.pool import SandboxPool, run_many
from r1kit.sandbox.runner import run_program

__all__ = ["Limits", "RunResult", "SandboxPool", "TestOutcome", "TestSpec", "get_config",
           "isolation_level", "run_many", "run_program", "run_tests", "run_tests_many",
           "sandbox_info"]

"""What a sandboxed run may use (`Limits`) and what came out of it (`RunResult`).

Kept apart from the runner so that callers (rewards, benchmarks, tests) can build limits and
read results without importing the process machinery.
"""

from __future__ import annotations

from dataclasses import dataclass

# RunResult.status values, most specific first: a program that hit the output cap and was
# killed for it is "output_limit", not "killed".
STATUSES = ("ok", "error", "timeout", "memory", "output_limit", "killed", "sandbox_error")


@dataclass(frozen=True)
class Limits:
    """Resource limits for one program.

    wall_seconds is enforced by the parent (it kills the whole process tree); the others are
    `setrlimit` limits set inside the sandbox before any untrusted code runs, so they hold for
    every process the program starts (each child gets its own CPU budget, but not more
    processes than `max_processes`: see r1kit.sandbox for when that one is enforced).
    """

    wall_seconds: float = 10.0  # parent-side deadline for the whole run
    cpu_seconds: float = 5.0  # RLIMIT_CPU (rounded up to whole seconds): SIGXCPU, then SIGKILL
    memory_bytes: int = 1 << 30  # RLIMIT_AS: address space, so a memory bomb gets MemoryError
    file_bytes: int = 16 << 20  # RLIMIT_FSIZE: the largest file the program may write
    # All files together: the program's directory is a tmpfs of this size under bubblewrap
    # (not enforced in limits-only mode, where only file_bytes and the clock bound writes).
    disk_bytes: int = 64 << 20
    max_processes: int = 32  # new processes beyond the ones already running (RLIMIT_NPROC)
    max_open_files: int = 256  # RLIMIT_NOFILE
    # stdout and stderr are each cut here, and the run killed (unless output_drain_bytes)
    max_output_bytes: int = 256 << 10
    # 0 (none), or the bytes a stream may write in all (taken as at least max_output_bytes):
    # what it writes past max_output_bytes is read and dropped, not a reason to kill the run,
    # up to this (a program whose output is not what is judged, as under the test harness,
    # may print a lot); a stream past it ends the run, status "output_limit"
    output_drain_bytes: int = 0
    # stdout is the program's answer (input/output cases): it is not drained, whatever
    # output_drain_bytes says (stderr still is)
    stdout_judged: bool = False

    def __post_init__(self) -> None:
        for name in ("wall_seconds", "cpu_seconds", "memory_bytes", "file_bytes", "disk_bytes",
                     "max_processes", "max_open_files", "max_output_bytes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ValueError(f"Limits.{name} must be a number > 0, got {value!r}")
        value = self.output_drain_bytes
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"Limits.output_drain_bytes must be an int >= 0, got {value!r}")


@dataclass(frozen=True)
class RunResult:
    """The outcome of one sandboxed program.

    returncode follows `subprocess`: negative for a program killed by a signal. stdout and
    stderr are decoded as UTF-8 (invalid bytes replaced) and cut at Limits.max_output_bytes.
    status summarises why the program ended: "ok" (exit 0), "error" (non-zero exit),
    "timeout" (wall clock or CPU limit), "memory" (died of MemoryError under RLIMIT_AS),
    "output_limit" (printed more than the cap, or than Limits.output_drain_bytes where that
    is set: killed, or found past it once it had ended), "killed" (any other signal),
    "sandbox_error" (the sandbox itself failed to start the program).
    """

    returncode: int
    stdout: str
    stderr: str
    timed_out: bool
    output_truncated: bool  # stdout or stderr was cut at Limits.max_output_bytes
    wall_seconds: float
    status: str
    isolation: str = ""  # "bubblewrap" or "limits-only": the isolation this run had
    side_output: str = ""  # what the program wrote to the side channel (fd 4), if one was open

    @property
    def ok(self) -> bool:
        return self.status == "ok"

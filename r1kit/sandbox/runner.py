"""Run one untrusted Python program and supervise it: `run_program`.

Per run: a fresh private directory (the program's cwd, HOME and TMPDIR; deleted afterwards),
a minimal environment (nothing of the caller's leaks: PATH, LANG, HOME, TMPDIR and a few
thread-count caps only), the caller's interpreter (`sys.executable -I -S`: isolated mode,
with site-packages put on sys.path by the launcher), a new session
(`start_new_session`), the launcher of r1kit/sandbox/_child.py on the far side (limits, uid
switch, and in limits-only mode a supervising parent), and bubblewrap around it all when
available (r1kit/sandbox/isolation.py).

The parent enforces the wall clock and the output caps. It reads stdout and stderr
incrementally through a selector, keeps at most Limits.max_output_bytes of each and kills the
run as soon as either goes over, so a program printing gigabytes costs the parent nothing.
It notices the end of the run through a pidfd without reaping it, so the session id stays
reserved while it kills what is left (no pid-reuse race), then drains the pipes and reaps.

What "kill what is left" means:
- bubblewrap: when the program's main process ends, or bwrap is killed, its PID namespace
  ends (--die-with-parent), and the kernel kills everything in it: nothing started inside
  survives, setsid() or not.
- limits-only: the launcher SIGKILLs all its descendants (it is a child subreaper, so
  double-forked daemons are re-parented to it); the parent then kills the process group and
  every process still in the session, and, when there is a per-run pids cgroup, every
  process in it. Residual risk without a cgroup: a program that calls setsid() and then
  kills the launcher (possible only when it runs as the same uid as the launcher, i.e. root
  without a uid switch) can leave a process behind.

A side channel, used by the test harness (r1kit/sandbox/harness.py): with `side_input`, the
program finds a pipe on fd 3 holding exactly those bytes (then EOF) and a pipe on fd 4 whose
contents come back as RunResult.side_output (capped like stdout).
"""

from __future__ import annotations

import errno
import functools
import json
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from r1kit.sandbox import _child
from r1kit.sandbox.isolation import BUBBLEWRAP, SYSTEM_PATHS, SandboxConfig, get_config
from r1kit.sandbox.limits import Limits, RunResult

_CHILD_SOURCE = Path(_child.__file__).read_text(encoding="utf-8")
_READ_CHUNK = 1 << 16
_SIDE_CAP = 1 << 16
_DRAIN_SECONDS = 0.5  # after the end: how long to wait for pipes held by stragglers
# a stream past its cap is read again only after this pause, a pipe's worth at a time (the
# program waits on the full pipe), so that a loop printing a line at a time past the cap
# does not wake the parent for every line
_PAST_CAP_PAUSE = 0.005
_LAUNCHER_GRACE = 0.5  # limits-only: how long the launcher gets to kill its tree itself
_cgroup_counter = 0
_cgroup_lock = threading.Lock()


def run_program(source: str, *, stdin: str = "", limits: Limits | None = None,
                isolation: str | None = None) -> RunResult:
    """Run `source` as a Python program in the sandbox and return what happened.

    isolation: "auto" (default: $R1KIT_SANDBOX, else bubblewrap when it works), "bubblewrap"
    or "limits" (see r1kit.sandbox.isolation). Never raises for anything the program does.
    """
    return execute(get_config(isolation), source, stdin=stdin, limits=limits)


def minimal_env(workdir: str) -> dict[str, str]:
    """The whole environment of a sandboxed program."""
    return {
        "PATH": "/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "HOME": workdir,
        "TMPDIR": workdir,
        "PYTHONDONTWRITEBYTECODE": "1",  # for child interpreters; -I ignores PYTHON* vars
        # Numeric libraries start a thread per core and reserve address space per thread:
        # one each keeps them inside RLIMIT_AS and leaves the other cores to other runs.
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }


@functools.lru_cache(maxsize=1)
def _site_dirs() -> list[str]:
    """The site-packages directories of this interpreter (its virtual environment's, in one),
    for the sandboxed interpreter's sys.path."""
    import site

    return [d for d in site.getsitepackages() if os.path.isdir(d)]


def _count_processes_of(uid: int) -> int:
    """Processes whose real uid is `uid` (what RLIMIT_NPROC counts)."""
    n = 0
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/status", "rb") as fh:
                for line in fh:
                    if line.startswith(b"Uid:"):
                        n += int(line.split()[1]) == uid
                        break
        except (OSError, ValueError, IndexError):
            continue
    return n


def _nproc_limit(config: SandboxConfig, limits: Limits) -> int | None:
    """RLIMIT_NPROC counts every process of the uid on the machine, not just this run's:
    so the limit is what that uid runs now plus this run's allowance. Root is exempt from
    it, so it is not set when the program stays root."""
    if config.uid is not None:
        uid = config.uid
    elif os.geteuid() != 0:
        uid = os.getuid()
    else:
        return None
    return _count_processes_of(uid) + int(limits.max_processes) + 1


def _make_cgroup(config: SandboxConfig, limits: Limits) -> str | None:
    global _cgroup_counter
    if config.cgroup_parent is None:
        return None
    with _cgroup_lock:
        _cgroup_counter += 1
        name = f"r1kit-{os.getpid()}-{_cgroup_counter}"
    path = os.path.join(config.cgroup_parent, name)
    try:
        os.mkdir(path)
        with open(os.path.join(path, "pids.max"), "w") as fh:
            fh.write(str(int(limits.max_processes) + 2))  # + the launcher and the program
    except OSError:
        _remove_cgroup(path)
        return None
    return path


def _kill_cgroup(path: str, budget_seconds: float = 2.0) -> None:
    deadline = time.monotonic() + budget_seconds
    while time.monotonic() < deadline:
        try:
            with open(os.path.join(path, "cgroup.procs")) as fh:
                pids = [int(x) for x in fh.read().split()]
        except OSError:
            return
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.002)


def _remove_cgroup(path: str) -> None:
    for _ in range(50):
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError:
            _kill_cgroup(path, 0.1)
            time.sleep(0.01)


def _bwrap_argv(config: SandboxConfig, workdir: str, script: str, limits: Limits) -> list[str]:
    argv = [config.bwrap or "bwrap", "--die-with-parent", "--new-session"]
    if config.unshare_user:
        argv.append("--unshare-all")  # user, pid, net, ipc, uts, cgroup
    else:
        # Root: no user namespace, so that the launcher can switch to a real unprivileged
        # uid (inside a user namespace mapping only root, that uid would not exist).
        argv += ["--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts",
                 "--unshare-cgroup-try"]
    made: set[str] = {"/"}

    def parents(path: str) -> None:
        # bwrap would create the directories on the way to a mount point mode 0700, which the
        # unprivileged uid could not enter
        parts = path.strip("/").split("/")[:-1]
        for i in range(1, len(parts) + 1):
            step = "/" + "/".join(parts[:i])
            if step not in made:
                made.add(step)
                argv.extend(["--perms", "0755", "--dir", step])

    if config.visible is None:
        argv += ["--ro-bind", "/", "/"]
    else:  # an empty root with the system's and the interpreter's directories in it
        for path in SYSTEM_PATHS:
            if os.path.islink(path):
                argv += ["--symlink", os.readlink(path), path]
            elif os.path.isdir(path):
                argv += ["--ro-bind", path, path]
            made.add(path)
        for path in config.visible:
            parents(path)
            argv += ["--ro-bind", path, path]
            made.add(path)
        parents(workdir)
    argv += ["--dev", "/dev", "--proc", "/proc"]
    for directory, binds in config.masks:
        argv += ["--perms", "0755", "--tmpfs", directory]
        made = {directory}
        for path in binds:
            # bwrap would create the directories between the tmpfs and the bind mode 0700,
            # which the unprivileged uid could not enter again.
            parts = path[len(directory):].strip("/").split("/")[:-1]
            for i in range(1, len(parts) + 1):
                step = directory + "/" + "/".join(parts[:i])
                if step not in made:
                    made.add(step)
                    argv += ["--perms", "0755", "--dir", step]
            argv += ["--ro-bind", path, path]
    if config.tmpfs_size:
        # The program's directory is a fresh tmpfs of bounded size (the script bound in,
        # read-only): all it writes together cannot exceed Limits.disk_bytes, and it is gone
        # with the namespace.
        argv += ["--perms", "1777", "--size", str(int(limits.disk_bytes)), "--tmpfs", workdir,
                 "--ro-bind", script, script]
    else:
        argv += ["--bind", workdir, workdir]
    for path in config.hidden:  # (r1kit's own package: the benchmarks' answers)
        argv += ["--perms", "0555", "--tmpfs", path, "--remount-ro", path]
    if config.tmpfs_size:
        # shared memory is the program's to write, but no more than its directory
        argv += ["--perms", "1777", "--size", str(int(limits.disk_bytes)), "--tmpfs", "/dev/shm"]
    # nothing else is writable: bwrap's own root and /dev are tmpfs the program would own in
    # a user namespace, with no size limit
    argv += ["--remount-ro", "/dev"]
    if config.visible is not None:
        argv += ["--remount-ro", "/"]
    argv += ["--chdir", workdir]
    if config.cap_drop:
        argv += ["--cap-drop", "ALL"]
    return argv + ["--"]


def _has_exited(pid: int) -> bool:
    """Whether `pid` (our child) has ended, without reaping it."""
    try:
        info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return True
    return info is not None


def _kill_session(sid: int) -> None:
    """SIGKILL the process group `sid` and every process whose session is `sid`: what is
    left of a limits-only run once its launcher is gone. Must run before the launcher is
    reaped, so that the id cannot have been reused."""
    try:
        os.killpg(sid, signal.SIGKILL)
    except OSError:
        pass
    for _ in range(3):
        victims = [pid for pid, (_, s, state) in _child.proc_table().items()
                   if s == sid and state != "Z"]
        if not victims:
            return
        for pid in victims:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.002)


def _kill_leftovers(proc: subprocess.Popen, config: SandboxConfig, cgroup: str | None) -> None:
    """After the launcher (or bwrap) ended, and before it is reaped: everything else."""
    if config.mode != BUBBLEWRAP:
        _kill_session(proc.pid)
    if cgroup is not None:
        _kill_cgroup(cgroup)


class _Supervisor:
    """Feeds stdin, collects capped output, and watches the clock for one process."""

    def __init__(self, proc: subprocess.Popen, limits: Limits, stdin: bytes,
                 side_fd: int | None):
        self.proc = proc
        self.limits = limits
        self.sel = selectors.DefaultSelector()
        self.bufs: dict[str, bytearray] = {"stdout": bytearray(), "stderr": bytearray(),
                                           "side": bytearray()}
        self.caps = {"stdout": limits.max_output_bytes, "stderr": limits.max_output_bytes,
                     "side": _SIDE_CAP}
        # what a stream may write in all before the run is killed (past its cap: dropped)
        drain = max(limits.output_drain_bytes, limits.max_output_bytes)
        self.kill_at = {"stdout": limits.max_output_bytes if limits.stdout_judged else drain,
                        "stderr": drain, "side": _SIDE_CAP}
        self.written = {"stdout": 0, "stderr": 0, "side": 0}
        self.over_cap = False  # a stream wrote past kill_at: the run is killed
        self.truncated = False  # a stream wrote past its cap
        self.paused: dict[int, tuple[str, float]] = {}  # fd: (stream, when to read it again)
        self.stdin = stdin
        self.stdin_pos = 0
        for name, pipe in (("stdout", proc.stdout), ("stderr", proc.stderr)):
            os.set_blocking(pipe.fileno(), False)
            self.sel.register(pipe.fileno(), selectors.EVENT_READ, name)
        if side_fd is not None:
            os.set_blocking(side_fd, False)
            self.sel.register(side_fd, selectors.EVENT_READ, "side")
        if stdin:
            os.set_blocking(proc.stdin.fileno(), False)
            self.sel.register(proc.stdin.fileno(), selectors.EVENT_WRITE, "stdin")
        else:
            self._close_stdin()
        self.pidfd: int | None = None
        try:
            self.pidfd = os.pidfd_open(proc.pid)
            self.sel.register(self.pidfd, selectors.EVENT_READ, "exit")
        except (AttributeError, OSError):
            self.pidfd = None  # old kernel: poll with waitid instead

    def _close_stdin(self) -> None:
        try:
            self.sel.unregister(self.proc.stdin.fileno())
        except (KeyError, ValueError):
            pass
        try:
            self.proc.stdin.close()
        except OSError:
            pass

    def _read(self, fd: int, name: str) -> None:
        try:
            chunk = os.read(fd, _READ_CHUNK)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            self.sel.unregister(fd)
            return
        buf = self.bufs[name]
        room = self.caps[name] - len(buf)
        buf += chunk[:max(room, 0)]
        self.written[name] += len(chunk)
        if len(chunk) > room:
            self.truncated = True
        if self.written[name] > self.kill_at[name]:
            self.over_cap = True
        elif len(chunk) > room:  # past the cap, not yet killed: read it again after a pause
            self.sel.unregister(fd)
            self.paused[fd] = (name, time.monotonic() + _PAST_CAP_PAUSE)

    def _resume(self, now: float | None = None) -> None:
        """Read again the paused streams whose pause is over (all of them: now=None)."""
        for fd, (name, when) in list(self.paused.items()):
            if now is None or when <= now:
                del self.paused[fd]
                self.sel.register(fd, selectors.EVENT_READ, name)

    def _wait(self, remaining: float) -> float:
        """How long to wait for events: until the deadline, or the first pause's end."""
        if self.pidfd is None:
            remaining = min(remaining, 0.01)
        if self.paused:
            remaining = min(remaining, max(0.0, min(w for _, w in self.paused.values())
                                                - time.monotonic()))
        return remaining

    def _write_stdin(self, fd: int) -> None:
        try:
            n = os.write(fd, self.stdin[self.stdin_pos:self.stdin_pos + _READ_CHUNK])
        except BlockingIOError:
            return
        except OSError:  # the program closed its stdin (EPIPE): it does not want the rest
            self._close_stdin()
            return
        self.stdin_pos += n
        if self.stdin_pos >= len(self.stdin):
            self._close_stdin()

    def _readers_left(self) -> bool:
        return bool(self.paused) or any(key.data in self.bufs
                                        for key in self.sel.get_map().values())

    def watch(self, deadline: float) -> tuple[bool, bool]:
        """Until the process ends, the deadline passes or an output cap is exceeded.
        Returns (exited, timed_out)."""
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return _has_exited(self.proc.pid), True
            for key, _ in self.sel.select(self._wait(remaining)):
                if key.data == "exit":
                    self.sel.unregister(key.fd)
                    return True, False
                if key.data == "stdin":
                    self._write_stdin(key.fd)
                else:
                    self._read(key.fd, key.data)
                if self.over_cap:
                    return False, False
            self._resume(time.monotonic())
            if self.pidfd is None and _has_exited(self.proc.pid):
                return True, False

    def drain(self, seconds: float) -> None:
        """Read what the pipes still hold once every writer is gone (bounded: a straggler
        that escaped the kill could hold a pipe open forever)."""
        self._close_stdin()
        deadline = time.monotonic() + seconds
        while self._readers_left() and not self.over_cap:
            self._resume()  # (the writers are gone: no pause needed)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            for key, _ in self.sel.select(remaining):
                if key.data in self.bufs:
                    self._read(key.fd, key.data)

    def close(self) -> None:
        self.sel.close()
        if self.pidfd is not None:
            os.close(self.pidfd)
        for pipe in (self.proc.stdout, self.proc.stderr):
            try:
                pipe.close()
            except OSError:
                pass

    def text(self, name: str) -> str:
        return bytes(self.bufs[name]).decode("utf-8", errors="replace")


def _terminate(proc: subprocess.Popen, config: SandboxConfig) -> None:
    """Stop a run that is still going (deadline or output cap)."""
    if config.mode != BUBBLEWRAP:
        # Ask the launcher first: it can find double-forked daemons (it is their subreaper).
        try:
            os.kill(proc.pid, signal.SIGTERM)
        except OSError:
            pass
        deadline = time.monotonic() + _LAUNCHER_GRACE
        while time.monotonic() < deadline and not _has_exited(proc.pid):
            time.sleep(0.005)
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # bwrap: its namespace dies with it
    except OSError:
        pass


def _status(config: SandboxConfig, rc: int, stderr: str, timed_out: bool,
            over_cap: bool) -> tuple[int, str, bool]:
    """(returncode, status, timed_out), with bwrap's 128+N for 'killed by signal N' turned
    into -N as subprocess reports it."""
    if config.mode == BUBBLEWRAP and 128 < rc < 128 + 65:
        rc = -(rc - 128)
    if over_cap:
        return rc, "output_limit", timed_out
    if timed_out:
        return rc, "timeout", True
    if rc == 0:
        return rc, "ok", False
    if rc == -signal.SIGXCPU:
        return rc, "timeout", True
    if rc < 0:
        return rc, "killed", False
    if config.mode == BUBBLEWRAP and rc == 1 and stderr.startswith("bwrap:"):
        return rc, "sandbox_error", False
    tail = stderr.rstrip().rsplit("\n", 3)[-3:]
    if any(line.startswith("MemoryError") for line in tail):
        return rc, "memory", False
    return rc, "error", False


def _remove_tree(path: str) -> None:
    def retry(func, target, exc_info):  # a program may chmod 000 a directory it made
        try:
            os.chmod(os.path.dirname(target), 0o700)
            os.chmod(target, 0o700)
            func(target)
        except OSError:
            pass

    shutil.rmtree(path, onerror=retry)


def execute(config: SandboxConfig, source: str, *, stdin: str = "",
            limits: Limits | None = None, side_input: bytes | None = None) -> RunResult:
    """Run `source` under an explicit configuration (run_program resolves one for you).
    limits default to Limits()."""
    limits = limits or Limits()
    start = time.monotonic()
    workdir = tempfile.mkdtemp(prefix="r1kit-sbx-")
    cgroup = None
    fds_to_close: list[int] = []
    try:
        script = os.path.join(workdir, "main.py")
        with open(script, "w", encoding="utf-8") as fh:
            fh.write(source)
        if config.uid is not None:
            os.chown(workdir, config.uid, config.gid)
            os.chown(script, config.uid, config.gid)
        cgroup = _make_cgroup(config, limits) if config.mode != BUBBLEWRAP else None
        cfg: dict = {
            "script": script, "workdir": workdir, "fork": config.mode != BUBBLEWRAP,
            "uid": config.uid, "gid": config.gid, "cgroup": cgroup,
            "nproc": _nproc_limit(config, limits),
            "limits": {"cpu_seconds": limits.cpu_seconds, "memory_bytes": limits.memory_bytes,
                       "file_bytes": limits.file_bytes, "max_open_files": limits.max_open_files},
        }
        pass_fds: tuple[int, ...] = ()
        side_read = None
        if side_input is not None:
            if len(side_input) > 60000:
                raise ValueError("side_input must fit in a pipe buffer")
            to_child_r, to_child_w = os.pipe()
            from_child_r, from_child_w = os.pipe()
            fds_to_close += [to_child_r, from_child_w, from_child_r]
            # The bytes go in before the program starts and the write end closes at once: the
            # program can read exactly these bytes, and nothing can be added later.
            os.write(to_child_w, side_input)
            os.close(to_child_w)
            pass_fds = (to_child_r, from_child_w)
            cfg["side_fds"] = [to_child_r, from_child_w]
            side_read = from_child_r
        cfg["site_dirs"] = _site_dirs()
        stdin_bytes = stdin.encode("utf-8", errors="surrogateescape")
        argv = [sys.executable, "-I", "-S", "-c", _CHILD_SOURCE, json.dumps(cfg)]
        if config.mode == BUBBLEWRAP:
            argv = _bwrap_argv(config, workdir, script, limits) + argv
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, env=minimal_env(workdir),
                                    cwd=workdir, start_new_session=True, close_fds=True,
                                    pass_fds=pass_fds)
        except OSError as exc:
            return RunResult(returncode=-1, stdout="", stderr=f"sandbox: cannot start: {exc}",
                             timed_out=False, output_truncated=False,
                             wall_seconds=time.monotonic() - start, status="sandbox_error",
                             isolation=config.mode)
        for fd in pass_fds:  # the child has its copies; ours would keep the pipes open
            os.close(fd)
            fds_to_close.remove(fd)
        sup = None
        try:
            sup = _Supervisor(proc, limits, stdin_bytes, side_read)
            exited, timed_out = sup.watch(start + limits.wall_seconds)
            if not exited:
                _terminate(proc, config)
            _kill_leftovers(proc, config, cgroup)
            sup.drain(_DRAIN_SECONDS)
            proc.wait()
        except BaseException:
            # Whatever went wrong here (even KeyboardInterrupt), the program must not outlive
            # the call.
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except OSError:
                pass
            _kill_leftovers(proc, config, cgroup)
            proc.wait()
            raise
        finally:
            if sup is not None:
                sup.close()
        wall = time.monotonic() - start
        stderr = sup.text("stderr")
        rc, status, timed_out = _status(config, proc.returncode, stderr, timed_out,
                                        sup.over_cap)
        return RunResult(returncode=rc, stdout=sup.text("stdout"), stderr=stderr,
                         timed_out=timed_out, output_truncated=sup.truncated, wall_seconds=wall,
                         status=status, isolation=config.mode, side_output=sup.text("side"))
    finally:
        for fd in fds_to_close:
            try:
                os.close(fd)
            except OSError as exc:
                if exc.errno != errno.EBADF:
                    raise
        if cgroup is not None:
            _remove_cgroup(cgroup)
        _remove_tree(workdir)

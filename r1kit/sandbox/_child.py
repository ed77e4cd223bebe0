"""The sandbox launcher: the first code that runs on the far side of the sandbox boundary.

The parent never imports this file to run it: it passes the file's text to
`python -I -S -c <text> <json config>`, so the launcher needs no path that the sandboxed user
could read or replace, and it runs in a fresh interpreter that has seen none of the parent's
state. (The parent does import it for `proc_table` and `kill_tree`, which it shares.)

What it does, in order, before a single line of untrusted code runs:

1. limits-only mode: join the run's pids cgroup when there is one (bounds fork bombs and
   catches every process the program starts, even one that calls setsid()); then fork. The
   launcher stays behind as the program's parent: it is what os.getppid() returns to the
   program, so a program that kills its parent kills the launcher, never the caller. It is
   a child subreaper, so daemons that double-fork are re-parented to it; when the program
   ends (or the caller sends SIGTERM) it SIGKILLs every descendant, then exits with the
   program's status (re-raising the signal that killed it, so the caller sees -SIGNUM).
   Under bubblewrap there is no fork: the PID namespace's init is the parent, and the whole
   namespace dies with it.
2. chdir into the run's private directory; move the side channel (when the caller opened
   one) to fds 3 (read) and 4 (write).
3. setrlimit: no core dumps, CPU, file size, open files, process count, address space.
4. When started as root with a sandbox uid: drop to it (groups, gid, uid, for good). After
   that the program cannot signal the caller's processes, RLIMIT_NPROC applies to it (the
   kernel exempts root), and the process is not dumpable, so no other process of that uid
   can read its memory.
5. Put the site-packages directories on sys.path (without processing .pth files: see
   _add_site), read the program and exec it as `__main__` in this same interpreter: one
   interpreter start per run, which is most of a short run's cost.
"""

import json
import os
import resource
import signal
import sys
import time

SIDE_READ_FD, SIDE_WRITE_FD = 3, 4
PR_SET_CHILD_SUBREAPER = 36


def proc_table() -> dict[int, tuple[int, int, str]]:
    """pid -> (parent pid, session id, state letter) for every process this /proc shows."""
    table = {}
    try:
        names = os.listdir("/proc")
    except OSError:  # no /proc: nothing to find (the caller's other backstops still apply)
        return table
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                data = fh.read()
        except OSError:
            continue  # it exited while we looked
        # The command name (field 2) may contain spaces and parentheses: parse after the last ")".
        fields = data[data.rindex(b")") + 2:].split()
        table[int(name)] = (int(fields[1]), int(fields[3]), fields[0].decode())
    return table


def descendants(root: int, table: dict[int, tuple[int, int, str]]) -> list[int]:
    """Live (non-zombie) processes below `root` in the parent tree, nearest first."""
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    out, todo = [], list(children.get(root, ()))
    while todo:
        pid = todo.pop()
        if table[pid][2] != "Z":
            out.append(pid)
        todo.extend(children.get(pid, ()))
    return out


def _reap() -> None:
    """Collect every exited child without blocking (orphans land on a subreaper)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def kill_tree(root: int, budget_seconds: float = 2.0) -> None:
    """SIGKILL every descendant of `root` until none is left (or the time budget runs out:
    a fork bomb without a process limit could outrun us, so the caller has backstops)."""
    deadline = time.monotonic() + budget_seconds
    while time.monotonic() < deadline:
        if root == os.getpid():
            _reap()
        victims = descendants(root, proc_table())
        if not victims:
            return
        for pid in victims:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.002)  # let the kernel finish them before the next look


def _set_limit(which: int, value: int) -> None:
    # Never ask for more than the current hard limit: an unprivileged caller cannot raise it.
    _, hard = resource.getrlimit(which)
    if hard != resource.RLIM_INFINITY:
        value = min(value, hard)
    resource.setrlimit(which, (value, value))


def _set_limits(cfg: dict) -> None:
    lim = cfg["limits"]
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    cpu = max(1, int(-(-lim["cpu_seconds"] // 1)))
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    # Soft limit sends SIGXCPU; the hard limit one second later is the SIGKILL backstop for a
    # program that catches SIGXCPU.
    cpu_hard = cpu + 1 if hard == resource.RLIM_INFINITY else min(cpu + 1, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (min(cpu, cpu_hard), cpu_hard))
    _set_limit(resource.RLIMIT_FSIZE, int(lim["file_bytes"]))
    _set_limit(resource.RLIMIT_NOFILE, int(lim["max_open_files"]))
    if cfg.get("nproc") is not None:
        _set_limit(resource.RLIMIT_NPROC, int(cfg["nproc"]))
    _set_limit(resource.RLIMIT_AS, int(lim["memory_bytes"]))  # last: the steps above allocate


def _move_side_fds(fds: list[int]) -> None:
    import fcntl

    # Dup both far away first, so that moving one onto 3 or 4 cannot clobber the other.
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 64) for fd in fds]
    for fd in fds:
        os.close(fd)
    for fd, target in zip(high, (SIDE_READ_FD, SIDE_WRITE_FD)):
        os.dup2(fd, target, inheritable=False)
        os.close(fd)


def _drop_privileges(uid: int, gid: int) -> None:
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    try:
        os.setuid(0)
    except PermissionError:
        return
    raise SystemExit("r1kit sandbox: could not drop root privileges")


def _add_site(cfg: dict) -> None:
    """What `site` would do, minus its .pth files: the interpreter starts with -S, because
    processing them (an editable install's import hook alone pulls in pathlib, re and
    urllib) costs more than the rest of a short run. So the site-packages directories go on
    sys.path (their packages import as usual; .pth-only additions such as editable installs
    do not), and exit() / quit() / help() exist as in a normal interpreter."""
    import site

    site.setquit()
    site.setcopyright()
    site.sethelper()
    for path in cfg.get("site_dirs", ()):
        if path not in sys.path:
            sys.path.append(path)


def _enter(cfg: dict) -> None:
    """Steps 2-4: everything between 'a process' and 'a sandboxed process'."""
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)
    _add_site(cfg)
    os.chdir(cfg["workdir"])
    if cfg.get("side_fds"):
        _move_side_fds(cfg["side_fds"])
    _set_limits(cfg)
    if cfg.get("uid") is not None and os.geteuid() == 0:
        _drop_privileges(int(cfg["uid"]), int(cfg["gid"]))


def _run_program(cfg: dict) -> None:
    """Step 5: run the program as `__main__`; exceptions and SystemExit propagate to the
    interpreter, which prints the traceback and sets the exit code as for `python file.py`."""
    path = cfg["script"]
    with open(path, "rb") as fh:
        source = fh.read()
    sys.dont_write_bytecode = True  # -I ignores PYTHONDONTWRITEBYTECODE
    sys.argv = [path]
    module = type(sys)("__main__")
    module.__file__ = path
    sys.modules["__main__"] = module
    code = compile(source, path, "exec", dont_inherit=True)
    exec(code, module.__dict__)


def _become_subreaper() -> None:
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except Exception:  # no prctl: orphans go to init, and the caller's backstops handle them
        pass


class _Stop(BaseException):
    """Raised by the SIGTERM handler to leave waitpid and clean up."""


def _on_stop(signum, frame) -> None:
    raise _Stop


def _supervise(child: int, ready_fd: int) -> None:
    """Step 1's waiting half: wait, kill what is left, pass the program's status on.
    Closing `ready_fd` lets the child go on."""
    status = None
    try:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, _on_stop)
        _become_subreaper()
        os.close(ready_fd)
        _, status = os.waitpid(child, 0)
    except _Stop:
        pass
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)  # the clean-up below must not be interrupted
    kill_tree(os.getpid())
    _reap()
    if status is None:
        os._exit(128 + signal.SIGKILL)
    code = os.waitstatus_to_exitcode(status)
    if code >= 0:
        os._exit(code)
    sig = -code
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    try:
        signal.signal(sig, signal.SIG_DFL)
    except (OSError, ValueError):
        pass
    os.kill(os.getpid(), sig)
    os._exit(128 + sig)


def main() -> None:
    cfg = json.loads(sys.argv[1])
    if cfg.get("cgroup"):
        with open(os.path.join(cfg["cgroup"], "cgroup.procs"), "w") as fh:
            fh.write(str(os.getpid()))
    if cfg.get("fork"):
        # The child waits until the launcher is a subreaper: otherwise a program that
        # daemonises quickly could orphan its daemon to init first. (The launcher imports
        # ctypes for that after the fork, so that the program's interpreter never has it.)
        ready_r, ready_w = os.pipe()
        pid = os.fork()
        if pid:
            os.close(ready_r)
            _supervise(pid, ready_w)
        os.close(ready_w)
        os.read(ready_r, 1)  # EOF once the launcher closed its end
        os.close(ready_r)
    _enter(cfg)
    _run_program(cfg)


if __name__ == "__main__":
    main()

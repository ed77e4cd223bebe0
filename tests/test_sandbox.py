"""The sandbox against hostile programs, under both isolation levels.

Every test that runs programs is parametrised over "bubblewrap" (skipped where bwrap does not
work) and "limits" (forced limits-only). Limits are small (2 s wall, 1 s CPU) so the file runs
in seconds. Programs that could hurt the machine if a limit failed are bounded twice: the
fork bomb only runs where the process count is bounded (it is skipped, with the reason, when
limits-only runs as root without a pids cgroup), and the memory bomb is bounded by RLIMIT_AS.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import shutil
import signal
import socket
import stat
import sys
import tempfile
import time
import warnings
from pathlib import Path

import pytest

from r1kit.errors import R1kitError
from r1kit.sandbox import (
    Limits,
    SandboxPool,
    get_config,
    isolation_level,
    run_many,
    run_program,
    sandbox_info,
)
from r1kit.sandbox import isolation as iso
from r1kit.sandbox.runner import execute

LIMITS = Limits(wall_seconds=2.0, cpu_seconds=1.0, memory_bytes=256 << 20,
                file_bytes=8 << 20, disk_bytes=16 << 20, max_processes=16,
                max_output_bytes=64 << 10)


@pytest.fixture(params=["bubblewrap", "limits"])
def isolation(request) -> str:
    if request.param == "bubblewrap":
        try:
            get_config("bubblewrap")
        except R1kitError as exc:
            pytest.skip(f"bubblewrap does not work here: {exc}")
    return request.param


def run(source: str, isolation: str, **kw):
    return run_program(source, limits=kw.pop("limits", LIMITS), isolation=isolation, **kw)


def live_processes_with(marker: str) -> list[int]:
    """Live (non-zombie) processes, other than this one, whose command line holds `marker`."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as fh:
                cmdline = fh.read()
            with open(f"/proc/{name}/stat", "rb") as fh:
                state = fh.read().rsplit(b")", 1)[1].split()[0]
        except OSError:
            continue
        if marker.encode() in cmdline and state != b"Z":
            found.append(int(name))
    return found


def wait_gone(marker: str, seconds: float = 2.0) -> list[int]:
    deadline = time.monotonic() + seconds
    while (left := live_processes_with(marker)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


# ----- which isolation ------------------------------------------------------------------------


def test_isolation_level_is_reported(monkeypatch) -> None:
    assert isolation_level() in ("bubblewrap", "limits-only")
    info = sandbox_info()
    assert info["isolation"] == isolation_level() and isinstance(info["notes"], list)
    monkeypatch.setenv("R1KIT_SANDBOX", "limits")
    assert isolation_level() == "limits-only"
    assert run_program("print('hi')", limits=LIMITS).isolation == "limits-only"
    monkeypatch.setenv("R1KIT_SANDBOX", "nonsense")
    with pytest.raises(R1kitError, match="unknown sandbox isolation"):
        isolation_level()


def test_broken_bwrap_falls_back_with_one_warning(tmp_path, monkeypatch) -> None:
    # A bwrap that cannot create namespaces, as inside many containers.
    fake = tmp_path / "bwrap"
    fake.write_text("#!/bin/sh\necho 'bwrap: No permissions to create new namespace' >&2\n"
                    "exit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    monkeypatch.delenv("R1KIT_SANDBOX", raising=False)
    monkeypatch.setattr(iso, "_configs", {})
    monkeypatch.setattr(iso, "_warned", False)
    with pytest.warns(RuntimeWarning, match="resource limits only") as caught:
        assert isolation_level("auto") == "limits-only"
    assert len(caught) == 1 and "No permissions" in str(caught[0].message)
    monkeypatch.setattr(iso, "_configs", {})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second fallback in the same process stays quiet
        assert isolation_level("auto") == "limits-only"
    with pytest.raises(R1kitError, match="bubblewrap isolation is not available"):
        get_config("bubblewrap")


def test_limits_are_validated() -> None:
    with pytest.raises(ValueError, match="wall_seconds"):
        Limits(wall_seconds=0)
    with pytest.raises(ValueError, match="max_processes"):
        Limits(max_processes=True)


# ----- ordinary programs ----------------------------------------------------------------------


def test_stdin_stdout_and_exit_codes(isolation) -> None:
    r = run("import sys\nprint(sys.stdin.read()[::-1])\nprint('err', file=sys.stderr)",
            isolation, stdin="abc")
    assert (r.status, r.returncode, r.stdout, r.stderr) == ("ok", 0, "cba\n", "err\n")
    assert r.isolation == get_config(isolation).mode and not r.timed_out
    r = run("import sys\nsys.exit(3)", isolation)
    assert (r.status, r.returncode) == ("error", 3)
    r = run("import os\nos._exit(0)", isolation)
    assert (r.status, r.returncode) == ("ok", 0)
    r = run("def f(:\n", isolation)
    assert r.status == "error" and "SyntaxError" in r.stderr
    r = run("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)", isolation)
    assert (r.status, r.returncode) == ("killed", -signal.SIGKILL)


def test_large_stdin_is_fed_incrementally(isolation) -> None:
    data = "x" * (1 << 20) + "\n"
    r = run("import sys\nprint(len(sys.stdin.read()))", isolation, stdin=data)
    assert r.status == "ok" and r.stdout == f"{len(data)}\n"
    # A program that never reads its stdin is not a deadlock.
    r = run("print('done')", isolation, stdin=data)
    assert r.status == "ok" and r.stdout == "done\n"


def test_private_temp_dir_and_same_interpreter(isolation) -> None:
    src = ("import os, sys\nopen('note.txt', 'w').write('x')\n"
           "print(os.getcwd()); print(os.environ['HOME']); print(sys.version)\n"
           "print(sys.flags.isolated)")
    first, second = run(src, isolation), run(src, isolation)
    assert first.status == second.status == "ok"
    cwd, home, version, isolated = first.stdout.splitlines()
    assert cwd == home and cwd != second.stdout.splitlines()[0]
    assert version == sys.version and isolated == "1"
    assert not os.path.exists(cwd), "the run's directory must be deleted afterwards"


def test_parent_environment_does_not_leak(isolation, monkeypatch) -> None:
    secret = "r1kit-secret-" + secrets.token_hex(8)
    monkeypatch.setenv("R1KIT_TEST_SECRET", secret)
    r = run("import os\nprint(sorted(os.environ.items()))", isolation)
    assert r.status == "ok" and secret not in r.stdout and "R1KIT_TEST_SECRET" not in r.stdout
    for name in ("PATH", "LANG", "HOME"):
        assert name in r.stdout
    if isolation == "bubblewrap":
        # Nor through /proc: the program sees only its own PID namespace.
        scan = ("import os\nfor p in os.listdir('/proc'):\n"
                "    try: print(open(f'/proc/{p}/environ', 'rb').read())\n"
                "    except OSError: pass\n")
        r = run(scan, isolation)
        assert r.status == "ok" and secret not in r.stdout


# ----- hostile programs -----------------------------------------------------------------------


def test_infinite_loop_hits_the_cpu_limit(isolation) -> None:
    r = run("while True:\n    pass", isolation)
    assert r.status == "timeout" and r.timed_out
    assert r.wall_seconds < LIMITS.wall_seconds + 1


def test_sleep_hits_the_wall_clock(isolation) -> None:
    r = run("import time\nprint('start', flush=True)\ntime.sleep(60)", isolation)
    assert r.status == "timeout" and r.timed_out and r.stdout == "start\n"
    assert LIMITS.wall_seconds <= r.wall_seconds < LIMITS.wall_seconds + 1.5


def test_memory_bomb_gets_memory_error(isolation) -> None:
    r = run("blocks = []\nwhile True:\n    blocks.append(bytearray(32 << 20))", isolation)
    assert r.status == "memory" and "MemoryError" in r.stderr
    r = run("x = bytearray(4 << 30)", isolation)
    assert r.status == "memory"


def test_huge_output_is_capped_and_killed(isolation) -> None:
    r = run("import sys\nwhile True:\n    sys.stdout.write('x' * 65536)", isolation)
    assert r.status == "output_limit" and r.output_truncated
    assert len(r.stdout) == LIMITS.max_output_bytes and r.wall_seconds < LIMITS.wall_seconds
    r = run("import os\nwhile True:\n    os.write(2, b'e' * 65536)", isolation)
    assert r.status == "output_limit" and len(r.stderr) == LIMITS.max_output_bytes
    # with output_drain_bytes, output past the cap is dropped and the run goes on, up to
    # that many bytes in all
    drained = dataclasses.replace(LIMITS, output_drain_bytes=4 * LIMITS.max_output_bytes)
    r = run_program("import sys\nfor _ in range(3):\n    sys.stdout.write('x' * 65536)\n"
                    "print('end', file=sys.stderr)", limits=drained, isolation=isolation)
    assert r.status == "ok" and r.output_truncated and r.stderr == "end\n"
    assert len(r.stdout) == LIMITS.max_output_bytes
    r = run_program("import sys\nwhile True:\n    sys.stdout.write('x' * 65536)",
                    limits=drained, isolation=isolation)
    assert r.status == "output_limit" and r.wall_seconds < LIMITS.wall_seconds
    # stdout_judged: stdout is the answer, never drained; stderr still is
    judged = dataclasses.replace(drained, stdout_judged=True)
    r = run_program("import sys\nfor _ in range(3):\n    sys.stderr.write('e' * 65536)\n"
                    "print('answer')", limits=judged, isolation=isolation)
    assert r.status == "ok" and r.stdout == "answer\n"
    r = run_program("import sys\nfor _ in range(3):\n    sys.stdout.write('x' * 65536)",
                    limits=judged, isolation=isolation)
    assert r.status == "output_limit"
    with pytest.raises(ValueError, match="output_drain_bytes"):
        Limits(output_drain_bytes=-1)


def test_huge_file_is_stopped_by_the_file_size_limit(isolation) -> None:
    src = ("import os\nwith open('big', 'wb') as f:\n"
           "    for _ in range(1024):\n        f.write(b'x' * (1 << 20))\n")  # 1 GiB
    r = run(src, isolation)
    assert r.status == "error" and "File too large" in r.stderr


def test_many_files_cannot_fill_the_disk_under_bubblewrap() -> None:
    config = _bubblewrap_or_skip()
    if not config.tmpfs_size:
        pytest.skip("this bwrap has no --size: the run's directory is not capped")
    src = ("import os\ntry:\n    for i in range(1000):\n"
           "        open(f'f{i}', 'wb').write(b'x' * (4 << 20))\n"
           "except OSError as exc:\n    print(i, exc.errno)\n")
    r = run(src, "bubblewrap")
    written, errno_ = map(int, r.stdout.split())
    assert r.status == "ok" and errno_ == 28 and written <= LIMITS.disk_bytes // (4 << 20)


def test_fork_bomb_is_bounded(isolation) -> None:
    config = get_config(isolation)
    if not config.nproc_bounded:
        pytest.skip("limits-only as root without a writable pids cgroup: nothing bounds the "
                    "number of processes (RLIMIT_NPROC does not bind root), so a fork bomb "
                    "would hurt this machine")
    src = ("import os\nprint(os.getcwd(), flush=True)\n"
           "while True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n")
    r = run(src, isolation)
    assert r.status in ("timeout", "killed")
    workdir = r.stdout.split("\n", 1)[0]
    assert workdir and wait_gone(workdir) == []
    assert run("print('still fine')", isolation).stdout == "still fine\n"


def test_background_process_does_not_outlive_the_run(isolation) -> None:
    # Double fork + setsid, then exec a process we can find by its command line.
    marker = f"61.{os.getpid()}{secrets.randbelow(10**6)}"
    src = (f"import os, time\nif os.fork() == 0:\n    os.setsid()\n"
           f"    if os.fork() == 0:\n        os.execv('/bin/sleep', ['sleep', '{marker}'])\n"
           f"    os._exit(0)\ntime.sleep(0.3)\n")
    r = run(src, isolation)
    assert r.status == "ok"
    assert wait_gone(marker) == []
    r = run(src + "time.sleep(60)\n", isolation)  # killed at the deadline instead
    assert r.status == "timeout" and wait_gone(marker) == []


def test_background_process_without_cgroup_is_caught_by_the_launcher() -> None:
    # limits-only without a pids cgroup: the launcher (a child subreaper) must find it.
    config = dataclasses.replace(get_config("limits"), cgroup_parent=None)
    marker = f"62.{os.getpid()}{secrets.randbelow(10**6)}"
    src = (f"import os, time\nif os.fork() == 0:\n    os.setsid()\n"
           f"    if os.fork() == 0:\n        os.execv('/bin/sleep', ['sleep', '{marker}'])\n"
           f"    os._exit(0)\ntime.sleep(0.3)\n")
    assert execute(config, src, limits=LIMITS).status == "ok"
    assert wait_gone(marker) == []


def test_killing_the_parent_cannot_reach_the_caller(isolation) -> None:
    me = os.getpid()
    src = ("import os, signal, time\nprint(os.getppid(), flush=True)\n"
           "os.kill(os.getppid(), signal.SIGKILL)\ntime.sleep(5)\n")
    r = run(src, isolation)
    assert r.status != "ok" and r.wall_seconds < 3
    assert int(r.stdout.split()[0]) != me  # its parent is the launcher or bwrap's init
    assert os.getpid() == me and run("print(1)", isolation).stdout == "1\n"


def test_network(isolation) -> None:
    # A listener on this machine's loopback; the program tries to reach it.
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.5)
    port = server.getsockname()[1]
    src = ("import socket\ns = socket.socket()\ns.settimeout(1)\n"
           f"print(s.connect_ex(('127.0.0.1', {port})))\n")
    try:
        r = run(src, isolation)
        if isolation == "limits":
            pytest.skip("limits-only does not isolate the network (documented)")
        assert r.status == "ok" and r.stdout.strip() != "0"  # connection refused
        with pytest.raises(socket.timeout):
            server.accept()
    finally:
        server.close()
    # An outside address (TEST-NET-1, RFC 5737): the namespace has no route, so nothing is
    # sent anywhere.
    r = run("import socket\ns = socket.socket()\ns.settimeout(1)\n"
            "print(s.connect_ex(('192.0.2.1', 80)))", isolation)
    assert r.status == "ok" and r.stdout.strip() != "0"


def _bubblewrap_or_skip():
    try:
        return get_config("bubblewrap")
    except R1kitError as exc:
        pytest.skip(f"bubblewrap does not work here: {exc}")


def test_read_only_file_system_under_bubblewrap() -> None:
    _bubblewrap_or_skip()
    src = ("import os\nfor path in ('/tmp/r1kit-escape', '/etc/r1kit-escape', "
           "os.path.expanduser('~/../r1kit-escape')):\n"
           "    try:\n        open(path, 'w').write('x'); print('wrote', path)\n"
           "    except OSError as exc:\n        print('refused', exc.errno)\n")
    r = run(src, "bubblewrap")
    assert r.status == "ok" and "wrote" not in r.stdout
    assert not os.path.exists("/tmp/r1kit-escape") and not os.path.exists("/etc/r1kit-escape")


def test_bubblewrap_hides_the_callers_files(tmp_path) -> None:
    """A program sees the system's and the interpreter's directories, not the caller's data,
    working directory or home: it cannot look up the answers it is checked against. Nothing
    but its own directory and /dev/shm (as capped) is writable."""
    config = _bubblewrap_or_skip()
    if config.visible is None:
        pytest.skip("this machine's bubblewrap shows the whole file system: " + str(config.notes))
    shared = Path(tempfile.mkdtemp(prefix="r1kit-shared-", dir="/tmp"))
    try:
        os.chmod(shared, 0o755)  # readable by any uid, as a shared disk's files
        answers = shared / "train.jsonl"
        answers.write_text('{"input": "1 2", "output": "3"}\n')
        os.chmod(answers, 0o644)
        here = Path.cwd() / "pyproject.toml"
        src = ("import os, sys\n"
               f"for path in ({str(answers)!r}, {str(here)!r}, os.path.expanduser('~')):\n"
               "    print(path, os.path.exists(path))\n"
               "for d in ('/', '/tmp', '/dev', '/dev/shm', '.'):\n"
               "    try:\n        open(os.path.join(d, 'w'), 'w').write('x'); print('wrote', d)\n"
               "    except OSError:\n        print('refused', d)\n"
               "import fractions, json, decimal\nprint('stdlib ok')\n")
        r = run(src, "bubblewrap")
    finally:
        shutil.rmtree(shared)
    assert r.status == "ok", r.stderr
    lines = r.stdout.splitlines()
    assert lines[:2] == [f"{answers} False", f"{here} False"]
    assert lines[3:8] == ["refused /", "refused /tmp", "refused /dev", "wrote /dev/shm",
                          "wrote ."] and lines[8] == "stdlib ok"


def test_an_installed_r1kit_package_is_hidden_from_programs(tmp_path) -> None:
    """Installed into site-packages, r1kit's data/ (the shipped benchmarks' tests and answers)
    would be visible with the interpreter: its package directory is covered."""
    config = _bubblewrap_or_skip()
    if config.visible is None:
        pytest.skip("this machine's bubblewrap shows the whole file system")
    package = Path(iso.__file__).resolve().parent.parent
    visible = (*config.visible, str(package))  # as when it lies in a visible site-packages
    hidden = iso._hidden_paths(visible)
    assert hidden == (str(package),)
    listing = f"import os\nprint(sorted(os.listdir({str(package)!r}))[:1])\n"
    shown = execute(dataclasses.replace(config, visible=visible), listing, limits=LIMITS)
    assert shown.stdout.strip() == "['__init__.py']", shown  # visible without the cover
    seen = execute(dataclasses.replace(config, visible=visible, hidden=hidden), listing,
                   limits=LIMITS)
    assert seen.stdout.strip() == "[]", seen
    if not iso._under(str(package), config.visible):  # an editable install: not visible,
        assert iso._hidden_paths(config.visible) == ()  # so nothing to cover


# ----- the pool -------------------------------------------------------------------------------


def test_run_many_keeps_order_and_runs_in_parallel(isolation) -> None:
    sources = [f"import time\ntime.sleep(0.4)\nprint({i})" for i in range(4)]
    start = time.monotonic()
    results = run_many(sources, limits=LIMITS, workers=4, isolation=isolation)
    elapsed = time.monotonic() - start
    assert [r.stdout for r in results] == [f"{i}\n" for i in range(4)]
    assert elapsed < 4 * 0.4  # four sleeps overlapped
    with SandboxPool(2, limits=LIMITS, isolation=isolation) as pool:
        assert pool.isolation == get_config(isolation).mode
        out = pool.map(["print(input())"] * 3, stdin=["a", "b", "c"])
        assert [r.stdout for r in out] == ["a\n", "b\n", "c\n"]
        with pytest.raises(ValueError):
            pool.map(["print(1)"], stdin=["a", "b"])


def test_temp_dirs_are_cleaned_up_even_when_locked(isolation) -> None:
    # A program that makes its directory hard to delete must still not leave it behind.
    src = ("import os\nos.makedirs('a/b')\nopen('a/b/f', 'w').write('x')\n"
           "os.chmod('a/b', 0)\nos.chmod('a', 0)\nprint(os.getcwd())")
    r = run(src, isolation)
    assert r.status == "ok" and not os.path.exists(r.stdout.strip())


def test_side_channel_is_exactly_the_given_bytes(isolation) -> None:
    src = ("import os\ndata = b''\nwhile True:\n    chunk = os.read(3, 10)\n"
           "    if not chunk:\n        break\n    data += chunk\n"
           "os.write(4, data[::-1])\nprint(stat := oct(os.fstat(3).st_mode))\n")
    config = get_config(isolation)
    r = execute(config, src, limits=LIMITS, side_input=b"secret-123")
    assert r.status == "ok" and r.side_output == "321-terces"
    assert stat.S_ISFIFO(int(r.stdout.strip(), 8))

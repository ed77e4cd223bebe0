"""Which isolation the sandbox can give on this machine, found out once per process.

Two levels (`isolation_level()`):

- "bubblewrap": each program runs under `bwrap` in new PID, network, IPC and UTS namespaces
  (plus a user namespace when we are not root). Of the machine's files it sees only the
  system's directories (/usr, /bin, /lib*, /etc) and the interpreter's (its prefix, standard
  library and site-packages), read-only: not the caller's home, working directory, data
  files, caches or runs, so a program cannot look up the answers it is checked against
  (where that mount fails, the whole file system read-only, said in the notes); writable
  only its own working directory and /dev/shm (each a tmpfs capped at Limits.disk_bytes, so
  that a program cannot fill the disk or the memory, where bwrap supports --size), a fresh
  /proc and a minimal read-only /dev, r1kit's own package covered where it lies in a visible
  directory (its data/ holds the shipped benchmarks' answers), and --die-with-parent.
  As root, the launcher inside drops to an unprivileged uid (65534, "nobody"; set
  R1KIT_SANDBOX_UID to another number, or to "none" to stay root); directories that uid cannot
  enter on the way to the interpreter (/root when Python lives under it) are covered with an
  empty tmpfs and only the interpreter's own directories are bound back, read-only. When that
  does not work the program runs as root inside the namespaces with every capability dropped.
- "limits-only": no namespaces. setrlimit limits, a private working directory, a minimal
  environment, a launcher process between the program and the caller, a kill of the whole
  process tree afterwards, and (as root, when the pids cgroup is writable) a per-run cgroup
  that bounds the number of processes and catches processes that leave the session. This is
  NOT an isolation boundary: the program can read whatever the uid it runs as can read,
  reach the network, and signal other processes of that uid (as root: any process; a
  program calling os.kill(-1, SIGKILL) as root would kill everything on the machine). Use it
  for trusted code or on a machine where that does not matter.

Selection: "auto" (the default) probes bubblewrap by running a real program through the full
sandbox (a probe of plain `bwrap true` is not enough: the uid switch, the masks and the
mounts must work too) and falls back to limits-only with ONE warning when it fails, e.g.
because the container forbids namespaces. The environment variable R1KIT_SANDBOX or the
`isolation` argument chooses explicitly: "auto", "bubblewrap" (an error when unavailable) or
"limits" (forced limits-only, e.g. to test that path).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import warnings
from dataclasses import dataclass, field, replace

from r1kit.errors import R1kitError

BUBBLEWRAP, LIMITS_ONLY = "bubblewrap", "limits-only"
DEFAULT_SANDBOX_UID = 65534  # "nobody" on Debian and most distributions


@dataclass(frozen=True)
class SandboxConfig:
    """How runs are started; built by the probes below, read by the runner."""

    mode: str  # BUBBLEWRAP or LIMITS_ONLY
    bwrap: str | None = None  # path of the bwrap binary
    unshare_user: bool = False  # bwrap: also a user namespace (needed when not root)
    cap_drop: bool = False  # bwrap as root without a uid switch: drop every capability
    masks: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (tmpfs over dir, read-only binds)
    # bwrap: None, the whole file system read-only (masks aside); else only the system's
    # directories (SYSTEM_PATHS) and these (the interpreter's), read-only
    visible: tuple[str, ...] | None = None
    # bwrap: directories covered with an empty read-only tmpfs (r1kit's own package, where
    # it lies under a visible one: its data/ holds the shipped benchmarks' answers)
    hidden: tuple[str, ...] = ()
    uid: int | None = None  # switch to this uid/gid before the program runs (root only)
    gid: int | None = None
    cgroup_parent: str | None = None  # limits-only: make a pids cgroup per run under this dir
    tmpfs_size: bool = False  # bwrap: supports --size, so the run's directory can be a capped tmpfs
    notes: tuple[str, ...] = field(default=())  # what is and is not enforced, for humans

    @property
    def nproc_bounded(self) -> bool:
        """Whether Limits.max_processes holds: RLIMIT_NPROC binds a non-root uid (the kernel
        exempts root), a pids cgroup binds anyone."""
        return self.uid is not None or os.geteuid() != 0 or self.cgroup_parent is not None


_lock = threading.Lock()
_configs: dict[str, SandboxConfig] = {}
_warned = False


def _normalise(requested: str | None) -> str:
    value = (requested or os.environ.get("R1KIT_SANDBOX") or "auto").strip().lower()
    if value in ("auto", ""):
        return "auto"
    if value in ("bwrap", "bubblewrap"):
        return BUBBLEWRAP
    if value in ("limits", "limits-only", "limits_only", "none"):
        return LIMITS_ONLY
    raise R1kitError(f"unknown sandbox isolation {value!r}",
                     "use auto, bubblewrap or limits (argument or R1KIT_SANDBOX)")


def _sandbox_ids() -> tuple[int, int] | None:
    """The uid/gid to drop to, or None to keep the caller's (only root can switch)."""
    if os.geteuid() != 0:
        return None
    value = os.environ.get("R1KIT_SANDBOX_UID", "").strip().lower()
    if value in ("none", "root", "off"):
        return None
    try:
        uid = int(value) if value else DEFAULT_SANDBOX_UID
    except ValueError:
        raise R1kitError(f"R1KIT_SANDBOX_UID={value!r} is not a number",
                         "set it to a uid such as 65534, or to none") from None
    if uid == 0:
        return None
    return uid, uid


def _interpreter_paths() -> list[str]:
    """Directories the sandboxed interpreter must be able to read: its binary, its standard
    library, the virtual environment and everything on sys.path."""
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
             os.path.dirname(sys.executable), os.path.dirname(os.path.realpath(sys.executable))}
    paths.update(p for p in sys.path if p)
    real = {os.path.realpath(p) for p in paths}
    return sorted(p for p in real | paths if os.path.isdir(p))


# what a program under bubblewrap sees of the machine's directories (besides its own working
# directory and the interpreter's: SandboxConfig.visible), read-only
SYSTEM_PATHS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc")


def _under(path: str, roots) -> bool:
    return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)


def _visible_paths() -> tuple[str, ...]:
    """The directories the sandboxed interpreter needs outside SYSTEM_PATHS: its binary, its
    standard library and its site-packages (not the rest of sys.path, such as a project's
    directory, which may hold data files and their answers)."""
    import site
    import sysconfig

    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
             os.path.dirname(sys.executable), os.path.dirname(os.path.realpath(sys.executable))}
    paths.update(v for k, v in sysconfig.get_paths().items()
                 if k in ("stdlib", "platstdlib", "purelib", "platlib"))
    sites = [d for d in site.getsitepackages() if os.path.isdir(d)]
    paths.update(sites)
    real = {os.path.realpath(p) for p in paths if p} | {p for p in paths if p}
    keep = {p.rstrip("/") for p in real
            if p != "/" and os.path.isdir(p) and not _under(p, SYSTEM_PATHS)}
    # packages installed as links to a store elsewhere (uv's link-mode=symlink): their targets
    for d in sites:
        try:
            entries = os.scandir(d)
        except OSError:
            continue
        with entries:
            for entry in entries:
                if entry.is_symlink():
                    target = os.path.realpath(entry.path)
                    if os.path.exists(target) and not _under(target, SYSTEM_PATHS):
                        keep.add(target)
    return tuple(sorted(p for p in keep if not _under(p, keep - {p})))


def _hidden_paths(visible: tuple[str, ...]) -> tuple[str, ...]:
    """r1kit's own package directory where a visible directory holds it (an install into
    site-packages): its data/ holds the shipped benchmarks' tests and answers. The sandboxed
    launcher is given as source and never imports r1kit."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return (package,) if _under(package, visible) or _under(os.path.realpath(package),
                                                             visible) else ()


def _masks(paths: list[str]) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """For each directory that others may not enter (mode without o+x) on the way to a needed
    path: an empty tmpfs over it, with the needed paths below it bound back read-only. Hides
    the rest of, e.g., /root from the program as a bonus."""
    blocked: dict[str, set[str]] = {}
    for path in paths:
        parts = path.strip("/").split("/")
        for i in range(1, len(parts)):
            ancestor = "/" + "/".join(parts[:i])
            try:
                if not os.stat(ancestor).st_mode & 0o001:
                    blocked.setdefault(ancestor, set()).add(path)
                    break
            except OSError:
                break
    outer = [d for d in blocked if not any(d != o and d.startswith(o + "/") for o in blocked)]
    masks = []
    for d in sorted(outer):
        binds = set()
        for o, ps in blocked.items():
            if o == d or o.startswith(d + "/"):
                binds.update(ps)
        # A path already inside another bound path comes along with it.
        keep = sorted(p for p in binds if not any(p != q and p.startswith(q + "/") for q in binds))
        masks.append((d, tuple(keep)))
    return tuple(masks)


def _cgroup_parent() -> str | None:
    """A pids-cgroup directory we may create children in (this process's own cgroup), or
    None. Tried for cgroup v1 (the pids hierarchy) and v2 (the unified one)."""
    try:
        with open("/proc/self/cgroup") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return None
    candidates = []
    for line in lines:
        hid, controllers, path = line.split(":", 2)
        if "pids" in controllers.split(","):
            candidates.append("/sys/fs/cgroup/pids" + path)
        elif hid == "0":
            candidates.append("/sys/fs/cgroup" + path)
    for base in candidates:
        probe = os.path.join(base, f"r1kit-probe-{os.getpid()}")
        try:
            os.mkdir(probe)
        except OSError:
            continue
        try:
            with open(os.path.join(probe, "pids.max"), "w") as fh:
                fh.write("8")
            return base.rstrip("/")
        except OSError:
            continue
        finally:
            try:
                os.rmdir(probe)
            except OSError:
                pass
    return None


def _works(config: SandboxConfig, expect_uid: int) -> tuple[bool, str]:
    """Run a real program through `config`; it must start and report the expected uid."""
    from r1kit.sandbox.limits import Limits
    from r1kit.sandbox.runner import execute

    # Modules that are not loaded at start-up: their files must be readable as that uid.
    probe = "import os, fractions, statistics, decimal\nprint(os.getuid())\n"
    result = execute(config, probe, limits=Limits(wall_seconds=30, cpu_seconds=10))
    if result.returncode == 0 and result.stdout.strip() == str(expect_uid):
        return True, ""
    why = (result.stderr.strip().splitlines() or [f"exit status {result.returncode}"])[-1]
    return False, why[:300]


def _supports_size(bwrap: str) -> bool:
    """Whether this bwrap has --size (0.6 and later) for a size-capped tmpfs."""
    try:
        out = subprocess.run([bwrap, "--help"], capture_output=True, text=True, timeout=10,
                             check=False)
    except (OSError, subprocess.SubprocessError):
        return False
    return "--size" in out.stdout + out.stderr


def _probe_bubblewrap() -> tuple[SandboxConfig | None, str]:
    """The first configuration that runs a real program: each with only the system's and
    the interpreter's directories visible, and failing that, the whole file system
    read-only."""
    bwrap = shutil.which("bwrap") or shutil.which("bwrap", path="/usr/bin:/bin:/usr/local/bin")
    if bwrap is None:
        return None, "bwrap is not installed (apt-get install bubblewrap)"
    sized = _supports_size(bwrap)
    visible = _visible_paths()
    hide = _hidden_paths(visible)
    hidden = ("only the system's directories (/usr, /etc, ...) and the interpreter's are "
              "visible, read-only")
    whole = ("the whole file system is visible, read-only (showing only the system's and the "
             "interpreter's directories failed)")
    failures = []

    def attempt(base: SandboxConfig, uid: int, label: str) -> SandboxConfig | None:
        for config in (replace(base, visible=visible, masks=(), hidden=hide,
                               notes=base.notes + (hidden,)),
                       replace(base, notes=base.notes + (whole,))):
            ok, why = _works(config, uid)
            if ok:
                return config
            failures.append(f"{label}: {why}")
        return None

    if os.geteuid() != 0:
        config = attempt(SandboxConfig(BUBBLEWRAP, bwrap=bwrap, unshare_user=True,
                                       tmpfs_size=sized,
                                       notes=("runs as the caller's uid inside a user "
                                              "namespace; RLIMIT_NPROC bounds processes",)),
                         os.getuid(), "as the caller")
        return (config, "; ".join(failures)) if config else \
            (None, "bwrap failed: " + "; ".join(failures))
    ids = _sandbox_ids()
    if ids is not None:
        config = attempt(SandboxConfig(BUBBLEWRAP, bwrap=bwrap, uid=ids[0], gid=ids[1],
                                       tmpfs_size=sized, masks=_masks(_interpreter_paths()),
                                       notes=(f"drops root to uid {ids[0]}; RLIMIT_NPROC "
                                              "bounds processes",)),
                         ids[0], f"as uid {ids[0]}")
        if config:
            return config, "; ".join(failures)
    unbounded = ("runs as root without capabilities inside the namespaces; the number of "
                 "processes is NOT bounded (RLIMIT_NPROC does not bind root)")
    config = attempt(SandboxConfig(BUBBLEWRAP, bwrap=bwrap, cap_drop=True, tmpfs_size=sized,
                                   notes=(unbounded,)), 0, "as root")
    if config:
        return config, "; ".join(failures)
    return None, "bwrap failed: " + "; ".join(failures)


def _probe_limits_only() -> SandboxConfig:
    shared = ("no namespaces: the program shares the network, the file system (read and write "
              "as its uid) and the process table with the caller")
    notes = [shared]
    config = SandboxConfig(LIMITS_ONLY)
    ids = _sandbox_ids()
    if ids is not None:
        # Only useful when the interpreter is reachable by that uid without any masks.
        candidate = replace(config, uid=ids[0], gid=ids[1])
        if _works(candidate, ids[0])[0]:
            config = candidate
            notes.append(f"drops root to uid {ids[0]}")
        else:
            notes.append(f"runs as root (uid {ids[0]} cannot start this interpreter, "
                         f"{sys.executable}): a root program can raise its own rlimits, so "
                         "only the wall clock and a pids cgroup (if any) bind it")
    cgroup = _cgroup_parent()
    if cgroup is not None:
        candidate = replace(config, cgroup_parent=cgroup)
        if _works(candidate, config.uid if config.uid is not None else os.getuid())[0]:
            config = candidate
            notes.append(f"a pids cgroup per run under {cgroup} bounds processes and is "
                         "killed as a whole")
    if not config.nproc_bounded:
        notes.append("the number of processes is NOT bounded (root, no pids cgroup)")
    return replace(config, notes=tuple(notes))


def get_config(isolation: str | None = None) -> SandboxConfig:
    """The sandbox configuration for `isolation` ("auto", "bubblewrap", "limits"; default:
    $R1KIT_SANDBOX or auto), probed on first use and cached for the life of the process."""
    global _warned
    key = _normalise(isolation)
    with _lock:
        if key in _configs:
            return _configs[key]
        if key == LIMITS_ONLY:
            config = _probe_limits_only()
        else:
            config, why = _probe_bubblewrap()
            if config is None:
                if key == BUBBLEWRAP:
                    raise R1kitError(f"bubblewrap isolation is not available: {why}",
                                     "install bubblewrap, or allow user namespaces, or use "
                                     "R1KIT_SANDBOX=limits for trusted code")
                config = _configs.get(LIMITS_ONLY) or _probe_limits_only()
                _configs[LIMITS_ONLY] = config
                if not _warned:
                    _warned = True
                    warnings.warn(f"r1kit.sandbox: {why}; running untrusted code with "
                                  "resource limits only, which is not an isolation boundary "
                                  f"({'; '.join(config.notes)})", RuntimeWarning, stacklevel=3)
            elif config.visible is None:  # bubblewrap, but the whole file system visible
                warnings.warn("r1kit.sandbox: bubblewrap could not show programs only the "
                              "system's and the interpreter's directories; they see the whole "
                              "file system read-only (your data files too, where they could "
                              f"look up answers): {why or '; '.join(config.notes)}",
                              RuntimeWarning, stacklevel=3)
        _configs[key] = config
        return config


def isolation_level(isolation: str | None = None) -> str:
    """"bubblewrap" or "limits-only": what runs started now would get."""
    return get_config(isolation).mode


def sandbox_info(isolation: str | None = None) -> dict:
    """A printable summary of what the sandbox enforces here."""
    config = get_config(isolation)
    return {"isolation": config.mode, "uid": config.uid if config.uid is not None
            else os.geteuid(), "processes_bounded": config.nproc_bounded,
            "cgroup": config.cgroup_parent, "notes": list(config.notes)}

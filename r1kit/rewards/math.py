"""Math accuracy reward (R1-SPEC.md §3): the final boxed answer checked with math-verify,
in worker processes that are killed when they run past a deadline.

Why worker processes: math-verify hands answers to sympy, and some answers a policy writes
(`9^{9^{9^{9}}}`, `(10^{10})!`) make sympy compute for minutes or exhaust memory.
math-verify's own timeouts use `signal.alarm`, which only works on the main thread of the
main interpreter (not in a reward thread overlapped with generation), fires only between
bytecodes, and leaves behind whatever memory the computation grabbed. So the checks run
in a small pool of child processes, with math-verify's timeouts switched off there
(`parsing_timeout=None`, `timeout_seconds=None`); the parent enforces a deadline per job
by SIGKILLing a worker that overruns and starting a fresh one. A slow or crashing check
costs one sample (scored 0 and counted), never the batch, and the parent never touches
signals, so the verifier works from any thread.

Workers are plain subprocesses (`python -P -c ...`) that speak JSON lines over their
stdin/stdout, rather than `multiprocessing` children: nothing depends on the parent's
`__main__` being importable, and a worker that dies is just an EOF on its pipe.

Rules of the reward (on top of `rule.extract_answer`):
- the answer part is the content of the last <answer>…</answer> after </think> (or the text
  after </think> when there is no answer tag); an answer only inside <think> scores 0;
- the final answer is the last `\\boxed{}` there, else the whole answer part;
- several *different* boxed answers in the answer part is hedging and scores 0 ("different"
  means not equal after `normalize_answer` and not equivalent by math-verify);
- equivalent forms count as equal: `\\frac{1}{2}` = `0.5`, `\\dfrac{3}{4}` = `3/4`,
  `025` = `25`, `27.0` = `27`.
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Self

from r1kit.errors import R1kitError

DEFAULT_TIMEOUT = 5.0  # seconds per check; math-verify's own default per comparison
DEFAULT_CHECK = "r1kit.rewards.math:check_equal"
_PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # the directory that holds `r1kit/`

# ----- answer text ----------------------------------------------------------------------------


def boxed_answers(text: str) -> list[str]:
    """Contents of every `\\boxed{...}` / `\\fbox{...}` in `text`, in order, braces balanced.
    An unclosed box ends the scan (it cannot be an answer, and nothing after it is boxed)."""
    out = []
    for match in re.finditer(r"\\(?:boxed|fbox)\{", text):
        depth = 1
        for j in range(match.end(), len(text)):
            if text[j] == "{":
                depth += 1
            elif text[j] == "}":
                depth -= 1
                if depth == 0:
                    out.append(text[match.end():j])
                    break
        else:
            break
    return out


def _space(m: re.Match) -> str:
    # A space is only meaningful between a control word and a letter (`\pi r`).
    return m.group(1) + " " if m.group(1) and m.group(2) else m.group(1) or ""


def normalize_answer(text: str) -> str:
    """A canonical string form of an answer; every rewrite keeps its mathematical value.

    Used for the cheap string comparison before math-verify, for telling hedged boxes apart,
    and as math-verify's input. Drops `$`, `\\left`/`\\right`, LaTeX spacing commands and
    insignificant spaces; `\\dfrac`/`\\tfrac` → `\\frac`; leading zeros of integers
    (`025` → `25`, never `0.5` or `1,005`); trailing zeros of decimals (`27.0` → `27`,
    `2.50` → `2.5`); a sentence's final period (`25.` → `25`).
    """
    s = text.strip().strip("$").strip()
    s = re.sub(r"\\[dt]frac", r"\\frac", s)
    s = re.sub(r"\\(?:left|right)(?![A-Za-z])", "", s)
    s = re.sub(r"\\[,;:! ]|~", " ", s)
    s = re.sub(r"\s+", " ", s).strip()
    s = re.sub(r"(\\[A-Za-z]+)? (?=([A-Za-z])?)", _space, s)
    # Leading zeros: not after a digit, a decimal point, a thousands comma or a closing brace
    # (`1{,}005`), where the zeros are significant.
    s = re.sub(r"(?<![\d.,}])0+(?=\d)", "", s)
    s = re.sub(r"(?<=\d)\.0+(?![\d.])", "", s)
    s = re.sub(r"(\.\d*?[1-9])0+(?![\d.])", r"\1", s)
    if re.fullmatch(r".*\d\.", s):
        s = s[:-1]
    return s


_PLAIN_NUMBER = r"-?\d[\d,]*(?:\.\d+)?"
# words after a number that change its value or are mathematics, not a unit
_NOT_UNITS = {"pi", "sqrt", "times", "cdot", "over", "divided", "plus", "minus", "squared",
              "cubed", "root", "power", "exp", "log", "ln", "mod", "and", "or", "to", "by",
              "hundred", "hundreds", "thousand", "thousands", "million", "millions", "billion",
              "billions", "trillion", "dozen", "dozens", "half", "halves", "third", "thirds",
              "quarter", "quarters", "tenth", "tenths", "hundredth", "hundredths",
              "thousandth", "thousandths", "percent", "degrees", "radians", "factorial",
              "is", "not", "maybe", "approximately", "about", "roughly",
              "sin", "cos", "tan", "cot", "sec", "csc"}


# units under their other names: a unit is compared by its name here (math-verify drops the
# ones it knows, so that it found 5 km equal to 5 cm); the one-letter names are units only
# here and only as written (after a number, "3 x" is no unit, and "5 M" no 5 m), and a name
# written without a space after its number ("5km") only when it is one of these
_UNIT_NAMES = {
    "millimeter": ("mm", "mms", "millimeters", "millimetre", "millimetres"),
    "centimeter": ("cm", "cms", "centimeters", "centimetre", "centimetres"),
    "meter": ("m", "meters", "metre", "metres"),
    "kilometer": ("km", "kms", "kilometers", "kilometre", "kilometres"),
    "inch": ("in", "inches"), "foot": ("ft", "feet"), "yard": ("yd", "yds", "yards"),
    "mile": ("mi", "miles"), "second": ("s", "sec", "secs", "seconds"),
    "minute": ("min", "mins", "minutes"), "hour": ("h", "hr", "hrs", "hours"),
    "year": ("yr", "yrs", "years"), "milligram": ("mg", "milligrams"),
    "gram": ("g", "grams"), "kilogram": ("kg", "kgs", "kilograms"),
    "pound": ("lb", "lbs", "pounds"), "ounce": ("oz", "ounces"),
    "milliliter": ("ml", "mls", "milliliters", "millilitre", "millilitres"),
    "liter": ("l", "L", "liters", "litre", "litres"), "cent": ("cents",),
    "am": (), "pm": (),
}
_UNIT = {alias: unit for unit, aliases in _UNIT_NAMES.items() for alias in (unit, *aliases)}
# a word that names no unit of its own: "5 units" is no other unit than "5 cm"
_ANY_UNIT = "unit"


def _unit(word: str) -> str:
    """A unit's one name (cm, centimetres → centimeter); another word without a plural s."""
    return _UNIT.get(word, word[:-1] if word.endswith("s") else word)


_SPACE = r"(?:\s|\\[,;:! ]|~)"  # a space, or LaTeX's (\, \; \: \! \ ~)


def _without_unit(answer: str, reference: str) -> str:
    """The number of an answer written as a number and one plain word, a unit ("18 dollars",
    "18 eggs", "18\\text{ eggs}"), where the reference is a plain number: math-verify reads
    the word as a variable and finds "18 dollars" unequal to 18. Anything more ("18 is
    wrong", "3 times four"), words that change the value or are mathematics ("18
    thousand", "2 pi"), and single letters ("3 x") keep the answer as it is. `answer` as
    written (normalize_answer takes the space between number and word)."""
    if not re.fullmatch(_PLAIN_NUMBER, normalize_answer(reference)):
        return answer
    found = _with_unit(answer)
    return found[0] if found is not None else answer


def _with_unit(text: str) -> tuple[str, str] | None:
    """(number, unit) of a text that is a number and, after a space or in \\text{} (or
    \\mathrm{}, \\mbox{}), one plain word that is no word of mathematics or of size
    (_NOT_UNITS); else None. The unit is in lower case, but for a one-letter name, which
    counts only as _UNIT writes it. The space is needed ("4xy" is no 4 of unit "xy") but for
    a name of more letters in _UNIT ("5km")."""
    m = re.fullmatch(
        rf"\s*\$?\s*({_PLAIN_NUMBER})(?:\s*\$)?(?:{_SPACE}*\\(?:text|mbox|textrm|mathrm|rm)\s*"
        rf"\{{{_SPACE}*([A-Za-z]+){_SPACE}*\}}|{_SPACE}+([A-Za-z]+)|([A-Za-z]{{2,}}))"
        r"\s*\.?\s*\$?\s*", text)
    if m is None:
        return None
    word = m.group(2) or m.group(3) or m.group(4)
    word = word if len(word) == 1 else word.lower()
    if word.lower() in _NOT_UNITS or ((len(word) == 1 or m.group(4)) and word not in _UNIT):
        return None
    return m.group(1), word


def _one_number(text: str) -> bool:
    """Whether a text holds exactly one number (digits, or a number written in LaTeX)."""
    return len(re.findall(r"\d+(?:[.,]\d+)*", text)) == 1


def check_equal(answer: str, reference: str) -> bool:
    """True when `answer` equals `reference` as normalized text or, failing that, when
    math-verify finds them equivalent. No time limit of its own: call it in a worker
    (`MathVerifier`) unless the inputs are trusted."""
    from math_verify import parse, verify

    # a reference written with its unit ("42 eggs") is its number, as an answer so written
    # is, unless the answer names another unit (7 am is no 7 pm, 2 cm no 2 km: math-verify
    # would drop both units)
    with_unit = _with_unit(reference)
    if with_unit is not None:
        said = _with_unit(answer)
        units = {_unit(said[1]), _unit(with_unit[1])} if said is not None else set()
        if len(units) > 1 and _ANY_UNIT not in units:
            return False
        reference = with_unit[0]
    a, r = normalize_answer(_without_unit(answer, reference)), normalize_answer(reference)
    # 1.5e3 is 1.5E3, scientific notation (math-verify reads a lower-case e as Euler's number)
    a, r = (re.sub(r"^(-?\d+(?:\.\d+)?)e([+-]?\d+)$", r"\1E\2", x) for x in (a, r))
    if a == r:
        return bool(a)
    # Timeouts off: they use signal.alarm; the worker's deadline is enforced by the parent.
    gold = parse(f"${r}$", parsing_timeout=None) or parse(r, parsing_timeout=None)
    pred = parse(f"${a}$", parsing_timeout=None) or parse(a, parsing_timeout=None)
    if gold and pred and verify(gold, pred, timeout_seconds=None):
        return True
    # a reference written as a sentence with one number ("The answer is 10."): normalizing
    # took its spaces, so math-verify found no value in it; it reads the sentence as written.
    # (Not an answer written so: "It is not 42." would count as 42.)
    if _prose(reference) and _one_number(reference):
        gold = parse(reference, parsing_timeout=None)
        return bool(gold and pred and verify(gold, pred, timeout_seconds=None))
    return False


def _prose(text: str) -> bool:
    """Whether a text holds two words in a row (a sentence, not mathematics)."""
    return re.search(r"[A-Za-z]{2,}\s+[A-Za-z]{2,}", text.replace("\\text", "")) is not None


# ----- the worker process ---------------------------------------------------------------------


def _load_check(spec: str) -> Callable[[str, str], bool]:
    import importlib

    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def _watch_parent(parent: int) -> None:
    # A worker whose parent died would otherwise live on until its stdin closes, which a
    # hung check never reads. (Cannot help while a C call holds the GIL; the parent's
    # SIGKILL on close or on deadline covers the normal cases.)
    while True:
        time.sleep(1.0)
        if os.getppid() != parent:
            os._exit(1)


def _worker_main() -> None:
    """Entry point of a worker: `[check spec, memory limit MiB, parent pid]` in sys.argv.

    Protocol (one JSON object per line): the worker writes {"ready": true} once warmed up,
    then answers each {"id", "a", "r"} with {"id", "ok"} or {"id", "error"}.
    """
    import logging
    import resource

    spec, memory_mb, parent = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    # The protocol gets a private copy of stdout; fd 1 then points at stderr so that a
    # library that prints cannot corrupt the replies.
    channel = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    if memory_mb > 0:  # a runaway big-integer job gets MemoryError, not the OOM killer
        limit = memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    logging.getLogger("math_verify").setLevel(logging.ERROR)  # "timeout disabled" warnings
    check = _load_check(spec)
    if check is check_equal:  # import sympy's and the LaTeX parser's lazy parts now
        check_equal("\\frac{1}{2}", "0.5")
    channel.write(b'{"ready": true}\n')
    for line in sys.stdin.buffer:
        job = json.loads(line)
        try:
            reply = {"id": job["id"], "ok": bool(check(job["a"], job["r"]))}
        except Exception as exc:  # noqa: BLE001 - one bad answer costs its own sample only
            reply = {"id": job["id"], "error": f"{type(exc).__name__}: {exc}"[:500]}
        channel.write(json.dumps(reply).encode() + b"\n")


_WORKER_CODE = "from r1kit.rewards.math import _worker_main; _worker_main()"

# ----- the pool -------------------------------------------------------------------------------


@dataclass(frozen=True)
class VerifyResult:
    correct: bool
    timed_out: bool = False
    error: str | None = None  # why the check failed (worker crash, exception); None if it ran
    seconds: float = 0.0  # from sending the job to its result


class _Worker:
    """One child process and the parent's view of it."""

    def __init__(self, check: str, memory_mb: int, start_timeout: float):
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(_PACKAGE_ROOT), env.get("PYTHONPATH", "")) if p)
        # Lives as long as the worker (closed in kill()), so no `with` here.
        self.stderr: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115
        # -P: the current directory must not shadow modules (a stray `sympy.py`, `math.py`).
        self.proc = subprocess.Popen(
            [sys.executable, "-P", "-c", _WORKER_CODE, check, str(memory_mb), str(os.getpid())],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr, bufsize=0,
            env=env, close_fds=True)
        self.fd = self.proc.stdout.fileno()
        self.buffer = b""
        self.ready = False
        self.start_deadline = time.monotonic() + start_timeout
        self.job: int | None = None  # index in the current batch
        self.job_id = -1
        self.sent_at = 0.0
        self.deadline = 0.0

    def send(self, job_id: int, answer: str, reference: str) -> None:
        data = json.dumps({"id": job_id, "a": answer, "r": reference}).encode() + b"\n"
        view = memoryview(data)
        while view:  # a raw pipe write may be partial
            view = view[os.write(self.proc.stdin.fileno(), view):]

    def lines(self) -> list[dict] | None:
        """Read what is available: complete reply lines, or None at EOF (the worker died)."""
        chunk = os.read(self.fd, 1 << 16)
        if not chunk:
            return None
        self.buffer += chunk
        *complete, self.buffer = self.buffer.split(b"\n")
        return [json.loads(line) for line in complete if line.strip()]

    def death(self) -> str:
        """Why the worker ended: its exit status and the last line it wrote to stderr."""
        code = self.proc.wait()
        if code < 0:
            try:
                why = f"signal {signal.Signals(-code).name}"
            except ValueError:
                why = f"signal {-code}"
        else:
            why = f"exit code {code}"
        self.stderr.seek(0, os.SEEK_END)
        self.stderr.seek(max(0, self.stderr.tell() - 2000))
        tail = self.stderr.read().decode("utf-8", "replace").strip().splitlines()
        return f"worker died ({why})" + (f": {tail[-1]}" if tail else "")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()  # SIGKILL: a check stuck in C code ignores anything milder
        self.proc.wait()
        self._close_files()

    def stop(self, grace: float = 1.0) -> None:
        """Close stdin (an idle worker exits on EOF); SIGKILL if it does not within `grace`."""
        try:
            self.proc.stdin.close()
            self.proc.wait(grace)
        except (OSError, subprocess.TimeoutExpired):
            pass
        self.kill()

    def _close_files(self) -> None:
        for f in (self.proc.stdin, self.proc.stdout, self.stderr):
            try:
                f.close()
            except OSError:
                pass


def _shutdown(workers: list[_Worker], owner: int) -> None:
    if os.getpid() != owner:  # a forked child's copy: the workers belong to the parent
        return
    for w in workers:
        w.stop(grace=0.2)
    workers.clear()


class MathVerifier:
    """A pool of worker processes that run `check(answer, reference)` under a deadline.

    Workers start on first use and are reused across batches. Thread-safe (batches from
    several threads run one after another). Use as a context manager or call `close()`;
    workers are also killed when the verifier is garbage-collected or at interpreter exit.

    `check` names the function a worker runs, "module:function" (default `check_equal`);
    `memory_mb` caps each worker's address space (0 = no cap).
    """

    def __init__(self, workers: int | None = None, *, check: str = DEFAULT_CHECK,
                 memory_mb: int = 4096, start_timeout: float = 60.0):
        self.size = workers if workers is not None else min(4, os.cpu_count() or 1)
        if self.size < 1:
            raise ValueError(f"workers must be >= 1, got {self.size}")
        self.check = check
        self.memory_mb = memory_mb
        self.start_timeout = start_timeout
        self._workers: list[_Worker] = []
        self._lock = threading.Lock()
        self._next_id = 0
        self._closed = False
        self._owner = os.getpid()
        self._finalizer = weakref.finalize(self, _shutdown, self._workers, self._owner)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._finalizer()

    def worker_pids(self) -> list[int]:
        """Process ids of the live workers (for monitoring, and for tests that kill one)."""
        return [w.proc.pid for w in self._workers]

    def verify_batch(self, pairs: Sequence[tuple[str, str]],
                     timeout: float = DEFAULT_TIMEOUT) -> list[VerifyResult]:
        """Check each (answer, reference) pair; results in input order.

        A check that runs past `timeout` seconds (counted from when a ready worker gets it)
        is killed: correct=False, timed_out=True. A worker that dies mid-check or an
        exception in the check: correct=False, error set. Either way the worker is
        replaced and the rest of the batch goes on.
        """
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0, got {timeout}")
        for answer, reference in pairs:
            if not isinstance(answer, str) or not isinstance(reference, str):
                raise TypeError(f"pairs must be (str, str), got ({answer!r}, {reference!r})")
        with self._lock:
            if self._closed:
                raise RuntimeError("MathVerifier is closed")
            if os.getpid() != self._owner:
                raise RuntimeError("MathVerifier used in a forked child; create a new one there")
            if not pairs:
                return []
            while len(self._workers) < self.size:
                self._workers.append(self._spawn())
            try:
                return self._run(list(pairs), timeout)
            except BaseException:
                # Interrupted (Ctrl-C) mid-batch: busy workers hold stale jobs; replace them.
                for w in list(self._workers):
                    if w.job is not None:
                        self._replace(w)
                raise

    # -- internals

    def _spawn(self) -> _Worker:
        return _Worker(self.check, self.memory_mb, self.start_timeout)

    def _replace(self, worker: _Worker) -> None:
        worker.kill()
        self._workers[self._workers.index(worker)] = self._spawn()

    def _discard(self, worker: _Worker) -> None:
        # A worker that cannot start: drop it, so the next batch tries a fresh one.
        worker.kill()
        self._workers.remove(worker)

    def _run(self, pairs: list[tuple[str, str]], timeout: float) -> list[VerifyResult]:
        results: list[VerifyResult | None] = [None] * len(pairs)
        pending = deque(range(len(pairs)))

        def finish(w: _Worker, correct: bool = False, timed_out: bool = False,
                   error: str | None = None) -> None:
            results[w.job] = VerifyResult(correct, timed_out, error, time.monotonic() - w.sent_at)
            w.job = None

        while pending or any(w.job is not None for w in self._workers):
            for w in list(self._workers):  # hand jobs to idle ready workers
                if w.ready and w.job is None and pending:
                    i = pending.popleft()
                    self._next_id += 1
                    try:
                        w.send(self._next_id, *pairs[i])
                    except OSError:  # it died while idle: the job never started, so retry it
                        pending.appendleft(i)
                        self._replace(w)
                        continue
                    w.job, w.job_id = i, self._next_id
                    w.sent_at = time.monotonic()
                    w.deadline = w.sent_at + timeout

            now = time.monotonic()
            wake = [w.deadline if w.ready else w.start_deadline
                    for w in self._workers if w.job is not None or not w.ready]
            wait = max(0.0, min(wake) - now) if wake else None
            readable, _, _ = select.select([w.fd for w in self._workers], [], [], wait)

            for w in [w for w in self._workers if w.fd in readable]:
                replies = w.lines()
                if replies is None:  # EOF: the worker died
                    reason = w.death()
                    if not w.ready:
                        self._discard(w)
                        raise R1kitError(f"math verifier: a worker failed to start: {reason}",
                                         "check that math-verify imports: python -c "
                                         "'import math_verify'")
                    if w.job is not None:
                        finish(w, error=reason)
                    self._replace(w)
                    continue
                for reply in replies:
                    if reply.get("ready"):
                        w.ready = True
                    elif w.job is not None and reply.get("id") == w.job_id:
                        if "error" in reply:
                            finish(w, error=reply["error"])
                        else:
                            finish(w, correct=reply["ok"])

            now = time.monotonic()
            for w in list(self._workers):
                if w.job is not None and now >= w.deadline:
                    finish(w, timed_out=True)
                    self._replace(w)
                elif not w.ready and now >= w.start_deadline:
                    self._discard(w)
                    raise R1kitError(f"math verifier: a worker did not start within "
                                     f"{self.start_timeout:g} s", "is the machine overloaded?")
        return results  # type: ignore[return-value]


_default: MathVerifier | None = None
_default_lock = threading.Lock()


def default_verifier() -> MathVerifier:
    """A process-wide verifier for callers that check one answer at a time (MathTask)."""
    global _default
    with _default_lock:
        if _default is None or _default._owner != os.getpid():  # none yet, or a fork's copy
            _default = MathVerifier(workers=min(2, os.cpu_count() or 1))
        return _default


# ----- the reward -----------------------------------------------------------------------------

_PARTS = ("accuracy", "timeout", "hedged", "error")


class _VerifierTask:
    """The checks of `math_rewards` as a task (r1kit.rewards.answers reads answers through a
    task's verifier): math-verify in `verifier`'s pool, `timeout` seconds per check."""

    def __init__(self, verifier: MathVerifier, timeout: float):
        self.verifier, self.timeout = verifier, timeout

    def verify_detailed(self, answers, examples) -> list[tuple[float, str]]:
        results = self.verifier.verify_batch([(a, e.answer) for a, e in zip(answers, examples)],
                                             self.timeout)
        return [(1.0 if r.correct else 0.0,
                 "timeout" if r.timed_out else "error" if r.error is not None else "ok")
                for r in results]


def math_rewards(completions: Sequence[str], answers: Sequence[str], verifier: MathVerifier,
                 timeout: float = DEFAULT_TIMEOUT, read_untagged: bool = False
                 ) -> list[tuple[float, dict[str, float]]]:
    """`math_reward` for many completions: the final answers (and the hedging check) as every
    scoring path reads them (r1kit.rewards.answers.final_answers; `read_untagged`: a
    completion without tags read whole), then one `verify_batch` call for all of them, so the
    pool checks them in parallel."""
    from r1kit.rewards.answers import final_answers
    from r1kit.tasks.base import Example

    if len(completions) != len(answers):
        raise ValueError(f"{len(completions)} completions but {len(answers)} answers")
    task = _VerifierTask(verifier, timeout)
    task.read_untagged = read_untagged
    finals, statuses = final_answers(task, list(completions),
                                     [Example(question="", answer=a) for a in answers])
    found = [i for i, a in enumerate(finals) if a is not None]
    checked = dict(zip(found, task.verify_detailed(
        [finals[i] for i in found], [Example(question="", answer=answers[i]) for i in found])))
    out = []
    for i, status in enumerate(statuses):
        parts = dict.fromkeys(_PARTS, 0.0)
        if i in checked:
            score, status = checked[i]
            if status == "ok" and score > 0:
                parts["accuracy"] = 1.0
        if status in ("timeout", "hedged", "error"):
            parts[status] = 1.0
        out.append((parts["accuracy"], parts))
    return out


def math_reward(completion: str, answer: str, verifier: MathVerifier,
                timeout: float = DEFAULT_TIMEOUT) -> tuple[float, dict[str, float]]:
    """1.0 when the completion's final answer is equivalent to `answer`, else 0.0.

    parts: accuracy (the score), timeout (the check ran past `timeout`), hedged (different
    boxed answers), error (the check crashed) — each 0/1.
    """
    return math_rewards([completion], [answer], verifier, timeout)[0]

"""The `r1kit` command."""

from __future__ import annotations

import argparse
import errno
import os
import signal
import sys
import threading
import warnings
from pathlib import Path

from r1kit.errors import R1kitError


def _data_arg(value: str):
    """A data file option as given: a path, or hf://datasets/... as text (a Path would join
    its two slashes), read by _data_file once the command runs."""
    return value if value.startswith("hf://") else Path(value)


def _data_file(value) -> Path:
    """A data file option's file: hf://datasets/ORG/NAME/PATH in the Hugging Face cache
    (r1kit.models.cached_hub_data), or the path given."""
    from r1kit.models import cached_hub_data

    return Path(cached_hub_data(str(value)) or value)


def _parser() -> argparse.ArgumentParser:
    from r1kit import __version__

    p = argparse.ArgumentParser(prog="r1kit", description="Reasoning RL the DeepSeek-R1 way.")
    p.add_argument("--version", action="version", version=f"r1kit {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a recipe's stages in order")
    run.add_argument("recipe", help="a recipe file, e.g. recipes/zero-tiny.toml")
    run.add_argument("--out", type=Path, default=None,
                     help="the run directory (default: runs/<recipe name>)")
    run.add_argument("--set", dest="overrides", action="append", default=[],
                     metavar="KEY=VALUE", help="override a setting, e.g. stages.zero.lr=1e-4")
    run.add_argument("--from", dest="from_stage", default=None, metavar="STAGE",
                     help="rerun from this stage on (later stages too)")
    score = sub.add_parser("score", help="score completions in a JSONL file with a reward")
    score.add_argument("--reward", required=True, metavar="NAME", action="append",
                       help="math, format, language, code, choice, or your own reward function "
                            "as file.py:function or module:function (one)")
    score.add_argument("--input", required=True, type=_data_arg, metavar="IN.jsonl",
                       help="one JSON object per line (or a .parquet file), with the fields "
                            "the reward needs")
    score.add_argument("--output", type=Path, default=None, metavar="OUT.jsonl",
                       help="where to write the scored rows (JSONL, or parquet for a .parquet "
                            "name; default: stdout)")
    score.add_argument("--completion-field", default="completion", metavar="FIELD",
                       help="the field holding each completion (default: completion; give "
                            "response for a sample stage's data.jsonl)")
    score.add_argument("--set", dest="settings", action="append", default=[],
                       metavar="KEY=VALUE", help="a reward setting, e.g. timeout=5, target=zh")
    ev = sub.add_parser("eval", help="evaluate a checkpoint on benchmarks the paper's way")
    ev.add_argument("--model", required=True, type=Path,
                    help="a Hugging Face checkpoint directory, or a Hub id "
                         "(ORG/NAME[@REVISION]) in the Hugging Face cache")
    ev.add_argument("--bench", required=True, metavar="NAMES",
                    help="comma-separated: math500, gsm8k, aime2024, aime2025, amc2023, "
                         "humaneval, mbpp, tiny, or a .jsonl / .json / .parquet file (or a "
                         "glob of its shards) of your own (a math benchmark: one question and reference answer per row; or "
                         "multiple-choice questions: rows with choices or options, or GPQA's "
                         "columns; or code problems: rows with tests or input/output cases, "
                         "as a code task reads them)")
    ev.add_argument("--question-field", default="question",
                    help="(your own file) the field with the problem (default: question)")
    ev.add_argument("--answer-field", default="answer",
                    help="(your own file) the field with the reference answer (default: answer)")
    ev.add_argument("--choices-field", default="",
                    help="(your own file) the field with a multiple-choice question's options "
                         "(default: choices or options where the rows have them)")
    ev.add_argument("--math-instruction", action=argparse.BooleanOptionalAction, default=None,
                    help="(your own file) append the shipped math benchmarks' request for a "
                         "\\boxed{} final answer to each question (default: on, but off for "
                         "a model an r1kit stage trained, as that stage's evaluations; "
                         "multiple-choice questions: the request for a boxed letter, and "
                         "code problems: the request for a ```python block, on unless "
                         "--no-math-instruction)")
    ev.add_argument("--read-untagged", action=argparse.BooleanOptionalAction, default=None,
                    help="read a response without <think>, </think> or <answer> whole, as "
                         "open-r1 does (default: off, R1's rule: no answer; for a model an "
                         "r1kit stage trained, that stage's read_untagged)")
    ev.add_argument("--k", type=int, default=0,
                    help="samples per problem (0, the default: 64 for AIME, as the paper, and "
                    "for AMC; 16 for MATH-500, as the paper, and for the other benchmarks and "
                    "your own files; 4 for the tiny world)")
    ev.add_argument("--temperature", type=float, default=0.6,
                    help="sampling temperature (default 0.6, the paper's; 0: greedy, one "
                         "sample per problem)")
    ev.add_argument("--top-p", type=float, default=0.95,
                    help="nucleus sampling's probability mass (default 0.95, the paper's)")
    ev.add_argument("--max-new-tokens", type=int, default=None,
                    help="new tokens per sample (default: as the r1kit stage that trained the "
                         "model evaluated, else 32768, the paper's)")
    ev.add_argument("--limit", type=int, default=0, help="only the first N problems of each (0, the default: all)")
    ev.add_argument("--template", default="auto",
                    help="r1-zero, chat, none (each question verbatim), or auto: for a model "
                         "an r1kit stage trained, that stage's template, prefill and system "
                         "turn; else chat when the tokenizer has a chat template")
    ev.add_argument("--prefill", default=None,
                    help='text the response starts with, \\n a newline (auto: "<think>\\n" '
                         'with chat)')
    ev.add_argument("--system-prompt", action=argparse.BooleanOptionalAction, default=None,
                    help="with a chat template, put r1kit's reasoning instruction in a system "
                         "turn (default: none, as the paper evaluates its released models, "
                         "unless the model's r1kit stage trained with it)")
    ev.add_argument("--system-text", default=None, metavar="TEXT",
                    help="with a chat template, your own system turn for every question "
                         "without one (as a recipe's system_prompt)")
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--seeding", choices=["batch", "question"], default="batch",
                    help="batch: one random generator for all the problems; question: one per "
                         "problem, so its samples do not depend on the others nor on "
                         "--generation-rows (always so under torchrun, where each process "
                         "samples its share of the problems: give it to match one process to "
                         "several)")
    ev.add_argument("--overlap-rewards", choices=["auto", "on", "off"], default="auto",
                    help="verify answers (math-verify, code tests) while the rest still decode "
                         "(auto: on CUDA)")
    ev.add_argument("--trust-remote-code", action="store_true",
                    help="load a checkpoint that brings its own model code (runs that code)")
    ev.add_argument("--device", default="auto")
    ev.add_argument("--dtype", default="auto")
    ev.add_argument("--generation-rows", type=int, default=1024,
                    help="most sequences sampled at once (memory; another value draws "
                         "other samples from the same distribution, unless --seeding question)")
    ev.add_argument("--out", type=Path, default=None,
                    help="write the results as JSON here, after each benchmark (an "
                         "interrupted command run again goes on after the ones it finished)")
    ev.add_argument("--save-every", type=int, default=0, metavar="N",
                    help="with --out: also write it after every N problems of a benchmark, so "
                         "that a rerun goes on after them (seeds per problem, as --seeding "
                         "question; 0, the default: after each benchmark)")
    dec = sub.add_parser("decontaminate",
                         help="find training rows that share a 10-gram with benchmarks (or hold a "
                              "shorter math problem whole)")
    dec.add_argument("--train", required=True, type=_data_arg,
                     help="a JSONL or parquet file (or hf://datasets/ORG/NAME/PATH in the "
                          "Hugging Face cache)")
    dec.add_argument("--bench", required=True, metavar="NAMES",
                     help="comma-separated benchmarks, or JSONL / parquet files of your own")
    dec.add_argument("--fields", default=None,
                     help="comma-separated text fields of the training rows (default: all "
                          "string fields)")
    dec.add_argument("--n", type=int, default=10, help="n-gram length in words (default 10)")
    dec.add_argument("--output", type=Path, default=None,
                     help="write the rows that share no n-gram here (JSONL, or parquet for a "
                          ".parquet name)")
    rep = sub.add_parser("report", help="render a run directory into report.md with plots")
    rep.add_argument("run_dir", type=Path)
    return p


# The recipe settings that r1kit eval and r1kit score take as options: a message written for
# a recipe ("use template = 'r1-zero'") names the option there ("use --template r1-zero").
_OPTIONS = {"eval": ("template", "prefill", "question_field", "answer_field", "choices_field",
                     "max_new_tokens", "generation_rows"),
            "score": ("reward_function",)}
_OPTION_NAME = {"reward_function": "reward"}


def _in_options(text: str, command: str) -> str:
    """`text` with `setting = 'value'` written as the command's `--option value`."""
    import re
    import shlex

    names = _OPTIONS.get(command)
    if not names:
        return text

    def option(m):  # (quoted for a shell where it needs it: <think>, spaces, '')
        flag = "--" + _OPTION_NAME.get(m["name"], m["name"]).replace("_", "-")
        return f"{flag} {shlex.quote(m['quoted'] if m['q'] else m['value'])}"

    return re.sub(r"\b(?P<name>" + "|".join(names) + r")\s*=\s*(?:(?P<q>['\"])"
                  r"(?P<quoted>(?s:.*?))(?P=q)|(?P<value>[^'\"\s,;)]*))", option, text)


def _say(text: str) -> None:
    """One line (or a few) on stderr in one write, prefixed "r1kit: ", naming the process's
    rank under torchrun (so that ranks' messages neither interleave nor look alike)."""
    sys.stderr.write(f"{_who()}: {text}\n")
    sys.stderr.flush()


def _who() -> str:
    rank, world = os.environ.get("RANK"), os.environ.get("WORLD_SIZE", "1")
    return f"r1kit (rank {rank})" if rank is not None and world != "1" else "r1kit"


def _echo_rank() -> bool:
    """Under torchrun, whether this process is not its machine's first (LOCAL_RANK > 0): an
    error in the recipe, read from the same files by every process of a machine, is said once
    per machine (by local rank 0), not once per process."""
    return (os.environ.get("WORLD_SIZE", "1") != "1"
            and os.environ.get("LOCAL_RANK", "0") not in ("", "0"))


def _beside_rank_zero() -> bool:
    """Under torchrun, whether this process runs on rank 0's machine (torchrun numbers the
    first machine's processes 0..N-1, so there RANK = LOCAL_RANK)."""
    return os.environ.get("RANK", "0") == os.environ.get("LOCAL_RANK", "0")


class _Terminated(KeyboardInterrupt):
    """SIGTERM (kill, timeout, a scheduler's preemption): stopped as Ctrl-C stops a run."""


def _terminate(signum, frame):
    raise _Terminated()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if in_main else None
    formatted = warnings.formatwarning
    warnings.formatwarning = _format_warning  # (recorded warnings, as pytest's, stay records)
    try:
        return _main(args)
    finally:
        warnings.formatwarning = formatted
        if in_main:
            signal.signal(signal.SIGTERM, previous)


_PACKAGE = Path(__file__).resolve().parent


def _format_warning(message, category, filename, lineno, line=None) -> str:
    """A warning as one line, "r1kit: warning: ...": r1kit's own without the line of its
    code that warned; another's (your reward function's, a library's) with its file and line,
    without the source line Python would print."""
    try:
        own = Path(filename).resolve().is_relative_to(_PACKAGE)
    except (OSError, ValueError):
        own = False
    return f"{_who()}: warning: {message}" + ("" if own else f" ({filename}:{lineno})") + "\n"


def _main(args) -> int:
    resume = ("run the same command again: finished stages are kept, and a stage with "
              "save_every resumes from its newest checkpoint (one without starts over)")
    if args.command == "run" and getattr(args, "from_stage", None):
        # --from starts its stage over, checkpoints included: resuming is the run without it
        resume = ("run the command again without --from: finished stages are kept, and a "
                  "stage with save_every resumes from its newest checkpoint (one without starts "
                  f"over; --from {args.from_stage} would start it over, checkpoints and all)")
    try:
        if args.command == "run":
            from r1kit.config import load_recipe
            from r1kit.pipeline import run_recipe

            try:
                recipe = load_recipe(args.recipe, args.overrides)
            except R1kitError:
                if _echo_rank():  # the same recipe and files on each rank of a machine
                    return 2
                raise
            run_recipe(recipe, args.out, args.from_stage)
        elif args.command == "score":
            from r1kit.scoring import score_file

            if len(args.reward) > 1:  # (argparse would keep the last one, silently)
                raise R1kitError(f"--reward given {len(args.reward)} times: r1kit score scores "
                                 "with one reward", "score with each in turn (--output to a "
                                 "file each); a grpo stage's reward_function list sums them")
            score_file(args.reward[0], _data_file(args.input), args.output, args.settings,
                       args.completion_field)
        elif args.command == "eval":
            from r1kit.eval.cli import run_eval_command

            run_eval_command(args)
        elif args.command == "decontaminate":
            from r1kit.decontaminate import run_decontaminate_command

            args.train = _data_file(args.train)
            run_decontaminate_command(args)
        elif args.command == "report":
            from r1kit.report import run_report_command

            run_report_command(args)
        return 0
    except R1kitError as exc:
        from r1kit.distributed import RankZeroFailed

        if isinstance(exc, RankZeroFailed) and (_echo_rank() or _beside_rank_zero()):
            _say("error: rank 0 stopped (its message is above or in its log); this one stops "
                 "too")
        elif not (getattr(exc, "same_on_every_process", False) and _echo_rank()):
            _say(_in_options(f"error: {exc}", args.command))
        return 2
    except OSError as exc:  # out of disk, permission denied, ...: no traceback, say what
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        _say(f"error: could not read or write{where}: {exc.strerror or exc}")
        if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS):
            hint = "free disk space or fix permissions"
        else:
            hint = "check the path"
        _say(f"hint: {hint}, then " + (resume if args.command == "run" else
                                       "run the command again"))
        return 2
    except KeyboardInterrupt as exc:
        terminated = isinstance(exc, _Terminated)
        torchrun = os.environ.get("WORLD_SIZE", "1") != "1"
        _say(("terminated" + (" (by you, a scheduler, or torchrun after another process of "
                              "the run stopped: torchrun's summary gives its exit code)"
                              if torchrun else "") if terminated else "interrupted")
             + (f"; {resume}" if args.command == "run" else ""))
        return 143 if terminated else 130
    except RuntimeError as exc:  # torch.OutOfMemoryError (CUDA) is one too
        from r1kit.distributed import peer_failed
        from r1kit.errors import failed_write, out_of_memory

        said = failed_write(exc)  # (torch writing a file elsewhere than a checkpoint)
        if said is not None:
            _say(f"error: could not write a file: {said.strerror} (torch: "
                 f"{str(exc).splitlines()[0]})")
            _say("hint: free disk space or fix permissions, then "
                 + (resume if args.command == "run" else "run the command again"))
            return 2
        if peer_failed(exc):  # under torchrun: another rank stopped, and said why
            _say("error: another process of this run stopped (its message is above or in its "
                 "log); this one stops too")
            return 2
        if not out_of_memory(exc):
            raise
        _say(f"error: out of memory: {str(exc).splitlines()[0]}")
        _say("hint: lower micro_batch_size (the training pass), generation_rows (rows "
             "sampled at once) or max_new_tokens (r1kit eval: --generation-rows, "
             "--max-new-tokens), or set activation_checkpointing = true; then "
             + (resume if args.command == "run" else "run the command again"))
        return 2

if __name__ == "__main__":
    sys.exit(main())

"""Your own reward function, named in a recipe as `reward_function = "module:function"` or
`"path/to/file.py:function"`.

It is called once per rollout with keyword arguments, like TRL's reward functions:
`fn(completions=[...], prompts=[...], answer=[...], **columns)` (the response texts, the
questions, the reference answers, and for a data file of your own (`task = "math"`) every other
field of its rows under the field's name, e.g. `solution=[...]`; all lists of the same length)
and returns one float per completion. Its parameters are checked against those names before any
stage runs.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import math
import traceback
from collections.abc import Callable
from pathlib import Path

from r1kit.errors import R1kitError
from r1kit.tasks.base import Example


def load_function(spec: str) -> Callable:
    """The callable that `spec` ("module:function" or "file.py:function") names."""
    where, sep, name = spec.rpartition(":")
    if not sep or not where or not name:
        raise R1kitError(f"reward_function {spec!r} is not 'module:function' or 'file.py:function'")
    try:
        if where.endswith(".py"):
            path = Path(where)
            if not path.is_file():
                raise R1kitError(f"reward_function: no file {where!r}")
            module_spec = importlib.util.spec_from_file_location(f"r1kit_reward_{path.stem}", path)
            module = importlib.util.module_from_spec(module_spec)
            module_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(where)
    except R1kitError:
        raise
    except Exception as exc:  # the user's module failed to import: say which and why
        raise R1kitError(f"reward_function: importing {where!r} failed: {exc!r}") from exc
    fn = getattr(module, name, None)
    if not callable(fn):
        raise R1kitError(f"reward_function: {where!r} has no function {name!r}")
    return fn


BUILT_IN = ("completions", "prompts", "answer")


def check_signature(fn: Callable, names: list[str], spec: str) -> None:
    """An R1kitError when `fn` needs a parameter that is none of `names` (the keyword
    arguments it will get) or takes positional-only parameters."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # a builtin or C callable: nothing to check
        return
    for p in params:  # (**kwargs takes the names no parameter names; required ones must come)
        if p.kind is p.POSITIONAL_ONLY or (p.default is p.empty and p.name not in names
                                          and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)):
            raise R1kitError(f"reward_function {spec}: parameter {p.name!r} is not one of the "
                             f"keyword arguments it gets ({', '.join(names)})",
                             "name the parameters after those (data fields come by their "
                             "names), give it a default, or take **kwargs")


def _columns(examples: list[Example]) -> dict[str, list]:
    """The data rows' other fields, by name, one list entry per example (None where a row
    lacks the field)."""
    names = dict.fromkeys(k for e in examples for k in e.meta.get("fields", {}))
    return {k: [e.meta.get("fields", {}).get(k) for e in examples]
            for k in names if k not in BUILT_IN}


class FunctionReward:
    """Scores a rollout with a user function; the component is logged as reward/custom."""

    def __init__(self, fn: Callable):
        self.fn = fn

    def score(self, responses: list[str], examples: list[Example]) -> list[tuple[float, dict]]:
        name = getattr(self.fn, "__qualname__", repr(self.fn))
        try:
            scores = self.fn(**_columns(examples), completions=responses,
                             prompts=[e.question for e in examples],
                             answer=[e.answer for e in examples])
        except Exception as exc:  # the user's function failed: name it and where
            frame = traceback.extract_tb(exc.__traceback__)[-1]
            raise R1kitError(f"reward_function {name} raised {type(exc).__name__}: {exc} "
                             f"({frame.filename}:{frame.lineno})") from exc
        try:
            scores = list(scores)
        except TypeError as exc:  # None, a single number
            raise R1kitError(f"reward_function returned {type(scores).__name__}, not a list of "
                             "scores", "return one float per completion") from exc
        if len(scores) != len(responses):
            raise R1kitError(f"reward_function returned {len(scores)} scores for "
                             f"{len(responses)} completions")
        out = []
        for s in scores:
            try:
                s = float(s)
            except (TypeError, ValueError) as exc:
                raise R1kitError(f"reward_function returned {s!r} among its scores",
                                 "return one float per completion") from exc
            if not math.isfinite(s):
                raise R1kitError(f"reward_function returned {s}", "return finite floats")
            out.append((s, {"custom": s}))
        return out

"""Your own reward function, named in a recipe as `reward_function = "module:function"` or
`"path/to/file.py:function"`, or several as a list (their sum, weighted by `reward_weights`).

It is called once per rollout with keyword arguments, like TRL's reward functions:
`fn(completions=[...], prompts=[...], answer=[...], **columns)` (the response texts, the
questions, the reference answers, and for a data file of your own (`task = "math"`) every other
field of its rows under the field's name, e.g. `solution=[...]`; all lists of the same length;
in a grpo stage also `completion_ids` and `trainer_state`, GRPO_EXTRAS)
and returns one float per completion, or None for a completion it cannot score (as TRL's
reward functions may: it scores 0, and `reward/custom_none` logs the share). Its parameters
are checked against those names before any stage runs.

A function written for verl (VerlScore) or for OpenRLHF (OpenRLHFReward) is called as its
framework calls it instead.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import math
import numbers
import sys
import threading
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

from r1kit.errors import R1kitError
from r1kit.tasks.base import Example


def load_function(spec: str) -> Callable:
    """The callable that `spec` ("module:function" or "file.py:function") names."""
    if spec.startswith(("http://", "https://")):  # (OpenRLHF's remote_rm_url, a server)
        raise R1kitError(f"reward_function {spec!r}: r1kit calls no reward server",
                         "wrap it in a function of your own that posts the completions and "
                         "returns their rewards ('file.py:function'; it may be async)")
    where, sep, name = spec.rpartition(":")
    if not sep or not where or not name:
        raise R1kitError(f"reward_function {spec!r} is not 'module:function' or 'file.py:function'",
                         f"name the function in the file too: '{spec}:reward_func' "
                         "(OpenRLHF's name), ':compute_score' (verl's)"
                         if spec.endswith(".py") and not sep else None)
    try:
        if where.endswith(".py"):
            path = Path(where)
            if not path.is_file():
                listed = spec.startswith("[") or "," in spec
                raise R1kitError(
                    f"reward_function: no file {where!r}",
                    "several functions are a list of quoted names: --set 'stages.NAME."
                    "reward_function=[\"a.py:f\", \"b.py:g\"]' (r1kit score --reward takes "
                    "one)" if listed else None if path.is_absolute() else
                    f"a relative path is relative to the directory the command runs in, "
                    f"{Path.cwd()}")
            # the file's own directory is importable, so it may import the modules beside it
            _importable(path.resolve().parent)
            module_spec = importlib.util.spec_from_file_location(f"r1kit_reward_{path.stem}", path)
            module = importlib.util.module_from_spec(module_spec)
            module_spec.loader.exec_module(module)
        else:
            _importable(Path.cwd())  # as `python -m` would: modules of the current directory
            module = importlib.import_module(where)
    except R1kitError:
        raise
    except (Exception, SystemExit) as exc:  # the user's module failed to import: say why
        missing = getattr(exc, "name", None) if isinstance(exc, ModuleNotFoundError) else None
        hint = ("give the file instead, reward_function = 'path/to/file.py:function', or put "
                "its directory on PYTHONPATH" if missing and where.split(".")[0] ==
                missing.split(".")[0] else f"install {missing!r}" if missing else None)
        raise R1kitError(f"reward_function: importing {where!r} failed: {exc!r}", hint) from exc
    fn = getattr(module, name, None)
    if not callable(fn):
        raise R1kitError(f"reward_function: {where!r} has no function {name!r}")
    return (VerlScore(fn, spec) if VerlScore.takes(fn) else
            OpenRLHFReward(fn, spec) if OpenRLHFReward.takes(fn) else fn)


def source_file(spec: str) -> str:
    """The file a reward function's spec reads its code from, for the fingerprints of a
    stage's inputs: the file of "file.py:function", the module's source of
    "module:function" (found as load_function imports it); "" for r1kit's own modules and
    for a module without a file."""
    where = spec.rpartition(":")[0]
    if where.endswith(".py") or not where:
        return where
    if where.split(".")[0] == "r1kit":
        return ""
    module = sys.modules.get(where)
    origin = getattr(module, "__file__", None) if module is not None else None
    if origin is None:
        _importable(Path.cwd())
        try:
            found = importlib.util.find_spec(where)
        except (ImportError, ValueError):
            found = None
        origin = found.origin if found is not None and found.has_location else None
    return origin or ""


def _importable(directory: Path) -> None:
    """Put `directory` on the import path (after what is there, so it shadows nothing)."""
    if str(directory) not in sys.path:
        sys.path.append(str(directory))


BUILT_IN = ("completions", "prompts", "answer")
# what a grpo stage also gives, as TRL does, to a function that names them or takes **kwargs:
# each completion's sampled token ids (the stop token included; open-r1's
# soft_overlong_punishment counts them) and the training state (global_step: the rollout
# step, max_steps)
GRPO_EXTRAS = ("completion_ids", "trainer_state")
# given wherever a function is called (a grpo stage, r1kit score), as TRL gives it:
# log_metric(name, value) logs a number of the function's own as reward/metric/NAME (the mean
# of the values it logged for a batch)
LOG_METRIC = "log_metric"
# and log_extra(column, values), one value per completion of the call: a column of the
# completions the run writes (the `extra` of completions.jsonl's rows, of r1kit score's output
# rows), as TRL's log_extra adds a column to its completions table
LOG_EXTRA = "log_extra"
LOGGERS = (LOG_METRIC, LOG_EXTRA)


class Parts(dict):
    """A completion's reward components (numbers, as a plain dict of them), and in `extra` the
    columns its reward functions logged for it with log_extra (any JSON values), which only
    the written completions show."""

    extra: dict

    def __init__(self, *args, extra: dict | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.extra = extra or {}


def _parameters(fn: Callable):
    try:
        return list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):  # a builtin or C callable: nothing to read
        return None


# what Python says when text is used as a conversation or a conversation as text
_SHAPE_ERRORS = ("string indices must be integers", "'list' object has no attribute",
                 "'str' object has no attribute", "expected string or bytes-like object",
                 "must be str, not list", "can only concatenate str (not \"list\")",
                 "list indices must be integers or slices, not str")


def takes_reference(fn: Callable) -> str | None:
    """The parameter by which `fn` (as load_function gives it) asks for the reference answers
    by name: `answer`, or a verl compute_score's `ground_truth`; None for a function that
    could do without them (one that takes them through **kwargs alone, as TRL's format
    rewards, or an OpenRLHF reward_func, whose labels may be unused)."""
    if isinstance(fn, VerlScore):
        return "ground_truth" if "ground_truth" in fn.passed else None
    if isinstance(fn, _Wrapped):
        return None
    named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return ("answer" if any(p.name == "answer" and p.kind in named
                            for p in _parameters(fn) or []) else None)


def check_signature(fn: Callable, names: list[str], spec: str) -> None:
    """An R1kitError when `fn` needs a parameter that is none of `names` (the keyword
    arguments it can get) or takes positional-only parameters. Data fields it does not take
    are not passed (unless it takes **kwargs), so a function of completions, prompts and answer
    keeps working on data with more fields."""
    params = _parameters(fn)
    names = [*names, *LOGGERS]
    if params is not None and not any(p.kind is p.VAR_KEYWORD for p in params):
        takes = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        missing = [n for n in BUILT_IN if n not in takes]
        if missing:
            raise R1kitError(f"reward_function {spec}: it is called with the keyword arguments "
                             f"{', '.join(BUILT_IN)}, and takes no {', '.join(missing)}",
                             "add those parameters, or take **kwargs")
    for p in params or []:
        if p.kind is p.POSITIONAL_ONLY or (p.default is p.empty and p.name not in names
                                          and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)):
            if p.name in GRPO_EXTRAS:  # (r1kit score: no sampled token ids, no training step)
                raise R1kitError(f"reward_function {spec}: parameter {p.name!r} comes only in "
                                 "a grpo stage, from its sampling and its steps",
                                 f"r1kit score has no sampled token ids and no training step: "
                                 f"give it a default ({p.name}=None) and have the function do "
                                 "without it when it is None, or score in a grpo stage")
            raise R1kitError(f"reward_function {spec}: parameter {p.name!r} is not one of the "
                             f"keyword arguments it gets ({', '.join(dict.fromkeys(names))})",
                             "name the parameters after those (data fields come by their "
                             "names), give it a default, or take **kwargs")


def _text(completion) -> str:
    """A completion's text: itself, or a conversation's (one assistant message) content."""
    return completion[0]["content"] if isinstance(completion, list) else completion


class _Wrapped:
    """A reward function written for another framework, called as that framework calls it:
    it takes the function's name and code (where a warning or an error of the function
    points), and tells FunctionReward what it reads."""

    takes_text = True  # (its completions are text, whatever the prompts)
    raw_reference = True  # (its answers are the references as stored: Example.meta)
    row_metrics = True  # (it logs a metric per completion: FunctionReward's row_metric)

    def __init__(self, fn: Callable, default_name: str):
        self.fn = fn
        self.__name__ = getattr(fn, "__name__", default_name)
        self.__qualname__ = getattr(fn, "__qualname__", self.__name__)
        code = getattr(fn, "__code__", None)
        if code is not None:
            self.__code__ = code


# verl's reward function: compute_score(data_source, solution_str, ground_truth, extra_info)
VERL_ARGS = ("data_source", "solution_str", "ground_truth", "extra_info")


class VerlScore(_Wrapped):
    """A reward function written for verl, `compute_score(data_source, solution_str,
    ground_truth, extra_info=None)`, called as verl calls it: once per completion, with the
    row's `data_source` and `extra_info` fields (None where a row has none), the completion's
    text (the assistant message's content after chat prompts) and the reference as the data
    file stores it (answer_field's value: text, a number, a list). It returns a number (None
    or NaN: no score), or a dict whose "score" is the reward and whose other entries, as
    verl's reward_extra_info, are columns of the written completions (log_extra); where an
    entry is a number it is also the completion's reward/metric/NAME (_row_metric), whose
    mean over the completions that gave one (of every process) is logged.

    load_function gives one in place of a function that takes `solution_str` (and no
    `completions`), so a stage calls it as any reward function of its own."""

    @staticmethod
    def takes(fn: Callable) -> bool:
        names = {p.name for p in _parameters(fn) or []}
        return "solution_str" in names and "completions" not in names

    def __init__(self, fn: Callable, spec: str):
        super().__init__(fn, "compute_score")
        params = _parameters(fn)
        self.passed = (VERL_ARGS if any(p.kind is p.VAR_KEYWORD for p in params) else
                       tuple(a for a in VERL_ARGS if a in {p.name for p in params}))
        for p in params:
            if p.kind is p.POSITIONAL_ONLY or (p.default is p.empty and p.name not in VERL_ARGS
                                              and p.kind is not p.VAR_POSITIONAL
                                              and p.kind is not p.VAR_KEYWORD):
                raise R1kitError(f"reward_function {spec}: parameter {p.name!r} is not one of "
                                 f"the keyword arguments a verl compute_score gets "
                                 f"({', '.join(VERL_ARGS)})", "give it a default")

    def __call__(self, completions, prompts, answer, data_source=None, extra_info=None,
                 log_metric=None, log_extra=None, _row_metric=None):
        n = len(completions)
        sources = data_source if data_source is not None else [None] * n
        infos = extra_info if extra_info is not None else [None] * n
        scores, columns = [], {}
        for i, c in enumerate(completions):
            given = {"data_source": sources[i], "solution_str": _text(c),
                     "ground_truth": answer[i], "extra_info": infos[i]}
            result = self.fn(**{a: given[a] for a in self.passed})
            if inspect.isawaitable(result):  # (an async compute_score)
                result = _awaited(result)
            if isinstance(result, dict):
                if "score" not in result:
                    raise ValueError(f"it returned a dict without 'score' ({sorted(result)}): "
                                     "verl reads the reward from its 'score'")
                for key, value in result.items():
                    if key != "score":
                        columns.setdefault(str(key), [None] * n)[i] = _plain(value)
                result = result["score"]
            scores.append(result)
        for key, values in columns.items():
            log_extra(key, values)
            # (each completion's own number: its mean over every process's completions that
            # gave one, not a mean of each call's means)
            _row_metric(key, [float(v) if isinstance(v, numbers.Real) and math.isfinite(v)
                              else None for v in values])
        return scores


# OpenRLHF's reward function: reward_func(queries, prompts, labels), given in --remote_rm_url
OPENRLHF_ARGS = ("queries", "prompts", "labels")


class OpenRLHFReward(_Wrapped):
    """A reward function written for OpenRLHF, `reward_func(queries, prompts, labels,
    **kwargs)` (the file OpenRLHF's --remote_rm_url names), called as OpenRLHF calls it:
    positionally, with lists of one entry per completion: `queries`, each completion's
    prompt and response as one text, decoded with the special tokens kept (the chat
    template's, the stop token); `prompts`, the prompts as the model read them (after the
    chat template or the R1-Zero template, the prefill included); `labels`, the references
    as the data file stores them (answer_field's value, OpenRLHF's label_key). r1kit calls it
    once per batch of completions (OpenRLHF's newer releases call it once per completion).

    It returns the rewards (a tensor, an array or a list) or a dict whose "rewards" are
    them. The dict's "extra_logs" are metrics: an entry of one number per completion is each
    completion's reward/metric/NAME (meaned over the completions of every process), a
    single number the batch's. Its "scores" (OpenRLHF's dynamic filtering reads them) are
    logged as reward/metric/scores; r1kit's dynamic_sampling judges a group by its rewards.

    load_function gives one in place of a function whose first parameter is `queries` and
    whose second is `prompts` or that takes three lists (and no `completions`), so a stage
    calls it as any reward function of its own."""

    takes_sequences = True  # (its queries are decoded from the token ids: _sequences)

    @staticmethod
    def _positional(params: list) -> list:
        return [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]

    @staticmethod
    def takes(fn: Callable) -> bool:
        params = _parameters(fn) or []
        positional = OpenRLHFReward._positional(params)
        return (bool(positional) and positional[0].name == "queries"
                and "completions" not in {p.name for p in params}
                and (len(positional) >= 3 or any(p.kind is p.VAR_POSITIONAL for p in params)
                     or len(positional) == 2 and positional[1].name == "prompts"))

    def __init__(self, fn: Callable, spec: str):
        super().__init__(fn, "reward_func")
        params = _parameters(fn)
        positional = self._positional(params)
        if len(positional) < 3 and not any(p.kind is p.VAR_POSITIONAL for p in params):
            raise R1kitError(f"reward_function {spec}: an OpenRLHF reward_func is called with "
                             f"three lists, {', '.join(OPENRLHF_ARGS)}, and this one takes "
                             f"{len(positional)}", "take (queries, prompts, labels, **kwargs)")
        for p in params:
            if p.default is p.empty and p not in positional[:3] and p.kind in (
                    p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
                raise R1kitError(f"reward_function {spec}: parameter {p.name!r} is not one of "
                                 f"the arguments an OpenRLHF reward_func gets "
                                 f"({', '.join(OPENRLHF_ARGS)})", "give it a default")

    def __call__(self, completions, prompts, answer, log_metric=None, _row_metric=None,
                 _sequences=None):
        n = len(completions)
        if _sequences is not None:  # (a stage's: the token ids it sampled, decoded)
            shown, queries = [list(x) for x in zip(*_sequences)] if n else ([], [])
        else:  # (r1kit score: the rows' prompts as stored, a conversation's last user turn)
            from r1kit.templates import prompt_text

            shown = [prompt_text(p) if isinstance(p, list) else str(p) for p in prompts]
            queries = [p + _text(c) for p, c in zip(shown, completions)]
        result = self.fn(queries, shown, list(answer))
        if inspect.isawaitable(result):  # (an async reward_func)
            result = _awaited(result)
        logs, scores = {}, None
        if isinstance(result, dict):
            if "rewards" not in result:
                raise ValueError(f"it returned a dict without 'rewards' ({sorted(result)}): "
                                 "OpenRLHF reads the rewards from its 'rewards'")
            logs = result.get("extra_logs") or {}
            if not isinstance(logs, dict):
                raise ValueError(f"its 'extra_logs' is {type(logs).__name__}, not a dict of "
                                 "metrics")
            scores = result.get("scores")
            result = result["rewards"]
        try:
            rewards = _numbers(result, n, "rewards")
        except ValueError as exc:  # (one for the first query alone: OpenRLHF's newer calls)
            raise ValueError(f"{exc}: r1kit calls it once for a batch of completions "
                             "(OpenRLHF's newer releases once per completion); return one "
                             "reward per query") from None
        if scores is not None:  # (always where given: a mean over every batch that gave them)
            logs = {**logs, "scores": scores}
        for key, value in logs.items():
            values = _numbers(value, n, f"extra_logs[{key!r}]", single=True)
            if len(values) == n:  # (one per completion: each completion's own)
                _row_metric(str(key), [v if v is not None and math.isfinite(v) else None
                                       for v in values])
            elif values[0] is not None and math.isfinite(values[0]):  # (the batch's)
                log_metric(str(key), values[0])
        return rewards


def _numbers(value, n: int, what: str, single: bool = False) -> list:
    """A tensor, array, list or number as a list of Python numbers (None kept); `n` of
    them, or one where `single` allows a single number."""
    if hasattr(value, "detach"):  # (a torch tensor, on any device)
        value = value.detach().float().cpu().tolist()
    value = _plain(value)
    if isinstance(value, (list, tuple)):
        value = [v.item() if hasattr(v, "detach") and v.numel() == 1 else _plain(v)
                 for v in value]  # (0-d tensors among them too)
        if value and all(isinstance(v, list) and len(v) == 1 for v in value):
            value = [v[0] for v in value]  # (a column, [n, 1])
    elif isinstance(value, numbers.Real):
        value = [value]
    else:
        raise ValueError(f"its {what} is {type(value).__name__}, not numbers")
    if len(value) != n and not (single and len(value) == 1):
        raise ValueError(f"its {what} has {len(value)} entries for {n} completions")
    bad = [v for v in value if v is not None and not isinstance(v, numbers.Real)]
    if bad:
        raise ValueError(f"its {what} holds {bad[0]!r}, not numbers")
    return [None if v is None else float(v) for v in value]


def _plain(value):
    """A numpy scalar (np.bool_, np.int64) as the Python value it holds, an array as a list;
    anything else as it is."""
    if type(value).__module__ == "numpy":
        if getattr(value, "ndim", 1) == 0 and callable(getattr(value, "item", None)):
            return value.item()
        if callable(getattr(value, "tolist", None)):  # (an array: a JSON list)
            return value.tolist()
    return value


def shadowed_fields(examples: list[Example], cfg) -> list[str]:
    """The data fields that a reward function cannot get by their names, because r1kit's
    own keyword arguments have them (a row's `answer` column where answer_field names
    another: `answer` is the reference answer), in the order first seen."""
    own = getattr(cfg, "answer_field", "answer")
    names = dict.fromkeys(k for e in examples for k in e.meta.get("fields", {}))
    return [k for k in names if k in (*BUILT_IN, *GRPO_EXTRAS, *LOGGERS) and k != own]


def _columns(fn: Callable, examples: list[Example]) -> dict[str, list]:
    """The data rows' other fields that `fn` takes (all of them with **kwargs), by name, one
    list entry per example (None where a row lacks the field)."""
    params = _parameters(fn)
    takes_all = params is None or any(p.kind is p.VAR_KEYWORD for p in params)
    accepted = {p.name for p in params or [] if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    names = dict.fromkeys(k for e in examples for k in e.meta.get("fields", {}))
    return {k: [e.meta.get("fields", {}).get(k) for e in examples]
            for k in names if k not in BUILT_IN and k not in GRPO_EXTRAS and k not in LOGGERS
            and (takes_all or k in accepted)}


class FunctionReward:
    """Scores a rollout with your reward function, or with several (TRL's reward_funcs) as
    their weighted sum (`weights`, default 1 each). One function is logged as reward/custom;
    several each as reward/custom/NAME. A None score is skipped in the sum, as TRL's nansum
    does (a completion no function scores gets 0), and reward/custom_none logs the share of
    completions with a None (0 where there is none). `base` (a reward with `score`, such as
    the reward models' CombinedReward): its reward is added to the functions' sum, its parts
    logged beside theirs, as TRL sums a reward model with reward functions."""

    def __init__(self, fn: Callable | list[Callable], weights: list[float] | None = None,
                 tokenizer=None, base=None):
        self.fns = list(fn) if isinstance(fn, (list, tuple)) else [fn]
        self.base = base
        # with a tokenizer (a grpo stage): completion_ids and trainer_state, as TRL gives them,
        # to the functions that name them; sampled_ids: the rollout's token ids, set by the
        # stage around its scoring call
        self.tokenizer = tokenizer
        self.trainer_state = SimpleNamespace(global_step=0, max_steps=0)
        self.sampled_ids: list[list[int]] | None = None
        # and prompt_ids, each completion's prompt as the model read it (for an OpenRLHF
        # reward_func's queries), set by the stage beside sampled_ids
        self.prompt_ids: list[list[int]] | None = None
        self.weights = list(weights) if weights else [1.0] * len(self.fns)
        if len(self.weights) != len(self.fns):
            raise R1kitError(f"reward_weights has {len(self.weights)} weights for "
                             f"{len(self.fns)} reward functions", "give one weight per function")
        names = [getattr(f, "__name__", f"fn{i}") for i, f in enumerate(self.fns)]
        # (two functions of one name: numbered, so that each has its own component)
        self.keys = (["custom"] if len(self.fns) == 1 else
                     [f"custom/{n}" if names.count(n) == 1 else f"custom/{n}_{i}"
                      for i, n in enumerate(names)])
        self.told = False  # the conversational completions' notice
        self.told_none = False  # the notice of completions without a score

    def _completion_ids(self, completions: list, n: int) -> list[list[int]]:
        """The completions' token ids: the sampled ones (the stop token included, as TRL's)
        where the stage set them for this call, else each text encoded again."""
        if self.sampled_ids is not None and len(self.sampled_ids) == n:
            return [list(ids) for ids in self.sampled_ids]
        return [self.tokenizer(_text(c), add_special_tokens=False)["input_ids"]
                for c in completions]

    def _sequences(self, n: int) -> list[tuple[str, str]] | None:
        """Each completion's prompt, and its prompt and response together, as texts decoded
        from the token ids with the special tokens kept (as OpenRLHF decodes its queries);
        None where the stage gave no token ids (r1kit score)."""
        if (self.tokenizer is None or self.prompt_ids is None or self.sampled_ids is None
                or len(self.prompt_ids) != n or len(self.sampled_ids) != n):
            return None

        def text(ids: list[int]) -> str:
            return self.tokenizer.decode(ids, skip_special_tokens=False)
        return [(text(p), text([*p, *c])) for p, c in zip(self.prompt_ids, self.sampled_ids)]

    @staticmethod
    def _warn(fn: Callable, message: str) -> None:
        """A warning that points at the user's function (not at r1kit's code calling it)."""
        code = getattr(fn, "__code__", None)
        if code is None:
            warnings.warn(message, stacklevel=3)
        else:
            warnings.warn_explicit(message, UserWarning, code.co_filename, code.co_firstlineno)

    def score(self, responses: list[str], examples: list[Example]) -> list[tuple[float, dict]]:
        # as TRL: after a conversation (a prompt of chat messages) a completion is a
        # conversation too, one assistant message (open-r1's rewards read [0]["content"])
        completions = [[{"role": "assistant", "content": r}]
                       if isinstance(e.question, list) else r
                       for r, e in zip(responses, examples)]
        logged: dict[str, list[float]] = {}  # log_metric's values of this batch

        def log_metric(name: str, value: float) -> None:
            value = float(value)
            if not math.isfinite(value):
                raise ValueError(f"log_metric({name!r}, {value}): log finite numbers")
            logged.setdefault(str(name), []).append(value)

        columns: dict[str, list] = {}  # log_extra's columns of this batch

        def log_extra(column: str, values) -> None:
            try:
                values = list(values)
            except TypeError:
                raise ValueError(f"log_extra({column!r}, {values!r}): give a list of values, "
                                 "one per completion") from None
            if len(values) != len(responses):
                raise ValueError(f"log_extra({column!r}, ...): {len(values)} values for "
                                 f"{len(responses)} completions: give one per completion")
            columns[str(column)] = values  # (a later call for the column replaces it)

        rows: dict[str, list] = {}  # row_metric's values of this batch (VerlScore's)

        def row_metric_of(key: str) -> Callable:
            # (several functions: each its own names, metric/NAME/KEY, as custom/NAME)
            prefix = key.split("/", 1)[1] + "/" if "/" in key else ""

            def row_metric(name: str, values: list) -> None:
                rows[f"{prefix}{name}"] = list(values)
            return row_metric

        per_fn = [self._call(fn, completions, examples, len(responses), log_metric, log_extra,
                             row_metric_of(key)) for fn, key in zip(self.fns, self.keys)]
        if not self.told and any(isinstance(c, list) for c in completions):
            self.told = True  # (the first batch after chat prompts: a function written for
            # text may quietly score every conversation 0; one that scores some is left alone)
            from r1kit import distributed

            blank = [(f, sc) for f, sc in zip(self.fns, per_fn)
                     if not getattr(f, "takes_text", False)
                     and all(x is None or x == 0 for x in sc)]
            if blank and distributed.current().is_main:  # (every rank's data is alike)
                fn, sc = blank[0]
                self._warn(fn, f"reward_function {_name(fn)} scored every completion of the "
                           f"first batch {'0 or None' if None in sc else '0'}; if it was "
                           "written for text: after prompts of chat messages each completion "
                           "is given as [{'role': 'assistant', 'content': text}], as TRL does "
                           "(its text is completion[0]['content'])")
        based = (self.base.score(responses, examples) if self.base is not None
                 else [(0.0, {})] * len(responses))
        metrics = {f"metric/{k}": sum(v) / len(v) for k, v in logged.items() if v}
        out, unscored = [], 0
        for i in range(len(responses)):
            total, parts = based[i]
            parts, missing = {**parts, **metrics}, False
            # (a completion's own metric, where it gave one: meaned over the rows that have it;
            # a batch metric of log_metric's of the same name keeps its own)
            parts.update({f"metric/{k}": v[i] for k, v in rows.items()
                          if v[i] is not None and f"metric/{k}" not in metrics})
            for key, w, scores in zip(self.keys, self.weights, per_fn):
                if scores[i] is None:
                    missing = True
                    continue
                parts[key] = scores[i]
                total += w * scores[i]
            unscored += missing
            # on every row, so that its mean over calls (ranks, sampling rounds) is the share
            parts["custom_none"] = float(missing)
            out.append((total, Parts(parts, extra={c: v[i] for c, v in columns.items()})))
        if unscored and not self.told_none:
            self.told_none = True
            fn, sc = next((f, sc) for f, sc in zip(self.fns, per_fn) if None in sc)
            self._warn(fn, f"reward_function {_name(fn)} returned None (or NaN) for "
                       f"{sc.count(None)} of {len(responses)} completions: None adds nothing "
                       "to the reward (a completion no function scores gets 0, as TRL's sum over "
                       "reward functions gives), and reward/custom_none logs the share")
        return out

    def _call(self, fn: Callable, completions: list, examples: list[Example],
              n: int, log_metric: Callable | None = None,
              log_extra: Callable | None = None,
              row_metric: Callable | None = None) -> list[float | None]:
        """One function's scores of the completions: floats, or None where it gives none
        (NaN too, as TRL reads None). An async function is awaited."""
        name = _name(fn)
        extras = {}
        params = _parameters(fn)
        takes = {p.name for p in params or []}
        if params is None or any(p.kind is p.VAR_KEYWORD for p in params):
            takes |= {*GRPO_EXTRAS, *LOGGERS}  # (**kwargs: all of them, as TRL)
        if self.tokenizer is not None:  # (a grpo stage's)
            if "completion_ids" in takes:
                extras["completion_ids"] = self._completion_ids(completions, n)
            if "trainer_state" in takes:
                extras["trainer_state"] = self.trainer_state
        for arg, logger in ((LOG_METRIC, log_metric), (LOG_EXTRA, log_extra)):
            if arg in takes and logger is not None:
                extras[arg] = logger
        if getattr(fn, "takes_sequences", False):  # (OpenRLHF's queries: prompt + response)
            extras["_sequences"] = self._sequences(n)
        if getattr(fn, "row_metrics", False) and row_metric is not None:
            extras["_row_metric"] = row_metric  # (private: a data field row_metric stays one)
        try:
            raw = getattr(fn, "raw_reference", False)  # (verl's ground_truth: as stored)
            scores = fn(**_columns(fn, examples), **extras, completions=completions,
                        prompts=[e.question for e in examples],
                        answer=[e.meta.get("reference", e.answer) if raw else e.answer
                                for e in examples])
            if inspect.isawaitable(scores):  # an async function (TRL awaits them)
                scores = _awaited(scores)
        except (Exception, SystemExit) as exc:  # the user's function failed (sys.exit()
            # included: it would end the run with its code, 0 too): name it and where
            frames = [f for f in traceback.extract_tb(exc.__traceback__)
                      if Path(f.filename).resolve() != Path(__file__).resolve()]
            code = getattr(fn, "__code__", None)  # (a call that failed before running it)
            # the innermost line of the function's own file (not the library it called,
            # e.g. re's, on a bad argument), else the innermost line at all
            own = [f for f in frames if code is not None and f.filename == code.co_filename]
            frame = (own or frames or [None])[-1]
            where = (f"{frame.filename}:{frame.lineno}" if frame is not None else
                     f"{code.co_filename}:{code.co_firstlineno}" if code else "?")
            if own and frames and frames[-1] is not own[-1]:
                where += f", in {Path(frames[-1].filename).name}:{frames[-1].lineno}"
            # (a function written for the other shape of completions: said which it got)
            chat = bool(completions) and isinstance(completions[0], list)
            # (a list where one value was meant, after text completions: another argument)
            listed = not chat and "'list' object has no attribute" in str(exc)
            each = ("every argument is a list with one entry per completion (completions, "
                    "prompts, answer and the data fields: solution[i] is completion i's), as "
                    "TRL gives them")
            shape = (None if not any(s in str(exc) for s in _SHAPE_ERRORS)
                     or getattr(fn, "takes_text", False) else
                     "after prompts of chat messages each completion is a conversation, "
                     "[{'role': 'assistant', 'content': text}], as TRL gives it; " + each
                     if chat else each + "; after text prompts each completion is text (a "
                     "string)" if listed else
                     "after text prompts each completion is text (a string), as TRL gives "
                     "it; prompts of chat messages give conversations")
            # (a function of **kwargs alone that reads verl's or OpenRLHF's arguments: it is
            # called as TRL calls it, since nothing in its signature says otherwise)
            kwargs_alone = params is not None and bool(params) and all(
                p.kind is p.VAR_KEYWORD for p in params) and not isinstance(fn, _Wrapped)
            foreign = (exc.args[0] if kwargs_alone and isinstance(exc, KeyError) and exc.args
                       and exc.args[0] in (*VERL_ARGS, "queries", "labels") else None)
            if foreign is not None:
                shape = (f"it reads {foreign!r} from **kwargs, and a function of **kwargs alone "
                         "is called as TRL calls it (completions, prompts, answer): name "
                         + ("solution_str as a parameter, compute_score(data_source, "
                            "solution_str, ground_truth, extra_info=None, **kwargs), to have it "
                            "called as verl calls it" if foreign in VERL_ARGS else
                            "queries as its first parameter, reward_func(queries, prompts, "
                            "labels, **kwargs), to have it called as OpenRLHF calls it"))
            raise R1kitError(f"reward_function {name} raised {type(exc).__name__}: {exc} "
                             f"({where})", shape) from exc
        try:
            scores = list(scores)
        except TypeError as exc:  # None, a single number
            raise R1kitError(f"reward_function {name} returned {type(scores).__name__}, not a "
                             "list of scores", "return one float per completion") from exc
        if len(scores) != n:
            raise R1kitError(f"reward_function {name} returned {len(scores)} "
                             f"score{'' if len(scores) == 1 else 's'} for {n} "
                             f"completion{'' if n == 1 else 's'}")
        out = []
        for s in scores:
            if s is None:  # as TRL: no score for this completion (e.g. an unparsable answer)
                out.append(None)
                continue
            try:
                if isinstance(s, (str, bytes)):
                    raise TypeError("text")
                s = float(s)
            except (TypeError, ValueError) as exc:
                raise R1kitError(f"reward_function {name} returned {s!r} among its scores",
                                 "return one float (or None) per completion") from exc
            if math.isnan(s):  # as TRL, which reads None as NaN: no score
                out.append(None)
                continue
            if not math.isfinite(s):
                code = getattr(fn, "__code__", None)
                where = f" ({code.co_filename}:{code.co_firstlineno})" if code else ""
                raise R1kitError(f"reward_function {name} returned {s}{where}",
                                 "return finite floats (or None, or NaN, for no score)")
            out.append(s)
        return out


_LOOP = None  # the event loop async reward functions run in (one for the process, as TRL's)
_LOOP_LOCK = threading.Lock()


def _awaited(awaitable):
    """The result of an async reward function's call, run in one long-lived event loop on a
    thread of its own: what a function keeps between calls (an async HTTP client, a
    semaphore) stays bound to the loop it was first used in, as under TRL."""
    import asyncio

    global _LOOP
    with _LOOP_LOCK:
        if _LOOP is None:
            _LOOP = asyncio.new_event_loop()
            threading.Thread(target=_LOOP.run_forever, name="r1kit-reward-loop",
                             daemon=True).start()

    async def result():
        return await awaitable

    return asyncio.run_coroutine_threadsafe(result(), _LOOP).result()


def _name(fn: Callable) -> str:
    return getattr(fn, "__qualname__", repr(fn))

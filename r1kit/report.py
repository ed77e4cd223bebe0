"""`r1kit report RUN_DIR`: one markdown page for a finished (or partial) run.

Reads what a run directory holds (config.json, each stage's stage.json, metrics.jsonl,
eval.jsonl, an eval stage's stage_table.md, figure1.png) and writes `RUN_DIR/report.md` with
its plots under `RUN_DIR/report/`:

1. the stages with their kind, status and time;
2. training curves of each RL stage (reward, accuracy, response length against step);
3. the held-out evaluations, as a table and pass@1 against step;
4. the behaviour analysis of R1-SPEC.md §6: reflective words per response against RL step,
   their totals at the first and last step of each stage, and accuracy / response length by
   difficulty level;
5. the stage table of an eval stage, and figure1.png.

Only the standard library and matplotlib: a report never loads a model.
"""

from __future__ import annotations

import argparse
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from r1kit.errors import R1kitError
from r1kit.runlog import read_jsonl

Row = dict[str, Any]

REPORT_NAME = "report.md"
FIGURE_DIR = "report"
REFLECT_PREFIX = "reflect/"
REFLECT_TOTAL = "total"
TRAIN_CURVES = (("reward", "reward"), ("accuracy", "accuracy"),
                ("response_length", "response length (tokens)"))


# ---------------------------------------------------------------------------------------------
# reading the run


@dataclass
class Stage:
    name: str
    kind: str
    status: str
    seconds: float | None
    result: str = ""  # the stage's own figure from stage.json (a loss, an accuracy)


@dataclass
class Run:
    dir: Path
    stages: list[Stage]
    metrics: list[Row]
    evals: list[Row]

    def stage_kind(self, name: str) -> str:
        return next((s.kind for s in self.stages if s.name == name), "")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise R1kitError(f"cannot read {path}: {exc}",
                         "the file is damaged: rerun the stage that writes it") from exc


def _read_rows(path: Path) -> list[Row]:
    try:
        return [r for r in read_jsonl(path) if isinstance(r, dict)]
    except ValueError as exc:
        raise R1kitError(f"cannot read {path}: {exc}",
                         "a line is not JSON: remove the broken line (an interrupted write?)"
                         ) from exc


def load_run(run_dir: Path) -> Run:
    """The run's stages (in config order), metrics rows and eval rows; an R1kitError when
    `run_dir` is not a run directory."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise R1kitError(f"no run directory at {run_dir}",
                         "pass the directory `r1kit run` wrote (its --out, default runs/NAME)")
    if not any((run_dir / f).is_file() for f in ("metrics.jsonl", "eval.jsonl")) and not any(
            run_dir.glob("*/stage.json")):
        for up in run_dir.resolve().parents[:3]:  # a stage, its adapter/, a checkpoint
            if (up / "config.json").is_file() and any((up / f).is_file() for f in
                                                      ("metrics.jsonl", "eval.jsonl")):
                raise R1kitError(f"{run_dir} is a stage (or checkpoint) directory of the run "
                                 f"{up}", f"r1kit report {up}")
        raise R1kitError(f"{run_dir} holds neither metrics.jsonl nor eval.jsonl nor a "
                         "finished stage",
                         "pass a run directory of `r1kit run` after at least one stage has "
                         "logged or finished")
    metrics = _read_rows(run_dir / "metrics.jsonl")
    evals = _read_rows(run_dir / "eval.jsonl")

    config = _read_json(run_dir / "config.json") if (run_dir / "config.json").is_file() else {}
    configured = config.get("stages", {}) if isinstance(config, dict) else {}
    configured = configured if isinstance(configured, dict) else {}
    dropped = config.get("dropped_stages", {}) if isinstance(config, dict) else {}
    dropped = dropped if isinstance(dropped, dict) else {}
    names = list(configured)
    for row in metrics + evals:  # stages the rows name but the config does not
        if isinstance(row.get("stage"), str) and row["stage"] not in names:
            names.append(row["stage"])
    for meta in sorted(run_dir.glob("*/stage.json")):
        if meta.parent.name not in names:
            names.append(meta.parent.name)

    stages = []
    for name in names:
        meta_path = run_dir / name / "stage.json"
        meta = _read_json(meta_path) if meta_path.is_file() else {}
        meta = meta if isinstance(meta, dict) else {}
        cfg = configured.get(name) or dropped.get(name) or {}
        kind = str(meta.get("kind") or (cfg.get("kind") if isinstance(cfg, dict) else "") or "")
        logged = any(row.get("stage") == name for row in metrics + evals)
        status = (str(meta.get("status", "not run")) if meta
                  else _unfinished(run_dir / name, logged))
        summary = meta.get("summary")
        if name in dropped and name not in configured:
            status = f"{status}; no longer in the recipe"
        elif isinstance(summary, dict) and summary.get("cached") and status == "done":
            status = "done (from the cache)"
        stages.append(Stage(name=name, kind=kind, status=status,
                            seconds=_num(meta.get("seconds")), result=_stage_result(summary)))
    return Run(dir=run_dir, stages=stages, metrics=metrics, evals=evals)


# ---------------------------------------------------------------------------------------------
# small helpers


def _unfinished(stage_dir: Path, logged: bool = False) -> str:
    """The status of a stage without a stage.json (written when it finishes): "not finished"
    with its newest checkpoint (a rerun resumes there) where it started (its directory holds
    files, or it logged rows), else "not run"."""
    if not logged and (not stage_dir.is_dir() or not any(stage_dir.iterdir())):
        return "not run"
    steps = []
    for ckpt in (stage_dir / "checkpoints").glob("step-*"):
        try:
            steps.append(int(ckpt.name.removeprefix("step-")))
        except ValueError:
            continue
    return (f"not finished (checkpoint step-{max(steps)})" if steps
            else "not finished (stopped or failed)")


def _stage_result(summary: Any) -> str:
    """A stage's headline figure from its stage.json summary: a reward model's held-out
    accuracy, a pretrain or SFT stage's final loss, a sample stage's kept samples ("" for the
    rest: their curves and evaluations are their own sections)."""
    if not isinstance(summary, dict):
        return ""
    for key, label in (("pairwise_accuracy", "held-out pairwise accuracy"),
                       ("safety_accuracy", "held-out safety accuracy")):
        if _num(summary.get(key)) is not None:
            return f"{label} {_pct(summary[key])}"
    kept, generated = _num(summary.get("kept")), _num(summary.get("generated"))
    if kept is not None and generated:  # a sample stage
        right = _num(summary.get("correct"))
        return (f"kept {kept:.0f} of {generated:.0f} samples"
                + (f" ({right:.0f} right)" if right is not None else ""))
    loss = _num(summary.get("final_loss"))
    if loss is None:
        return ""
    took = _num(summary.get("seconds")) if summary.get("cached") else None
    return (f"final loss {loss:.4g} (mean of its last steps)"
            + (f"; pretrained in {took:.0f} s" if took is not None else ""))


def _num(value: Any) -> float | None:
    """A finite number, or None (missing, null, NaN, a bool, a string)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _pct(value: Any) -> str:
    v = _num(value)
    return "" if v is None else f"{100 * v:.1f}%"


def _fixed(value: Any, digits: int = 1) -> str:
    v = _num(value)
    return "" if v is None else f"{v:.{digits}f}"


def _md_table(header: list[str], rows: list[list[str]], numeric_from: int = 1) -> list[str]:
    """A markdown table; columns from `numeric_from` on are right-aligned."""
    align = ["---" if i < numeric_from else "---:" for i in range(len(header))]
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    out += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return out


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "stage"


def _by_stage(rows: list[Row], order: list[str]) -> dict[str, list[Row]]:
    """Rows grouped by stage (in `order`, then first appearance), each group sorted by step."""
    groups: dict[str, list[Row]] = {name: [] for name in order}
    for row in rows:
        groups.setdefault(str(row.get("stage", "")), []).append(row)
    return {name: sorted(g, key=lambda r: _num(r.get("step")) or 0.0)
            for name, g in groups.items() if g}


def _points(rows: list[Row], key: str) -> tuple[list[float], list[float]]:
    """(steps, values) of the rows where both are numbers."""
    xs, ys = [], []
    for row in rows:
        x, y = _num(row.get("step")), _num(row.get(key))
        if x is not None and y is not None:
            xs.append(x)
            ys.append(y)
    return xs, ys


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    plt = _pyplot()
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def _image(report_path: Path, image: Path, alt: str) -> str:
    return f"![{alt}]({image.relative_to(report_path.parent).as_posix()})"


# ---------------------------------------------------------------------------------------------
# evaluations: which rows, with which label


def _cons(row: Row) -> tuple[str, float | None]:
    """("cons@K", value) of an eval row."""
    k = row.get("k")
    if isinstance(k, int) and f"cons@{k}" in row:
        return f"cons@{k}", _num(row[f"cons@{k}"])
    for key, value in row.items():
        if key.startswith("cons@") and key != "cons@k":
            return key, _num(value)
    return "cons@k", _num(row.get("cons@k"))


def _step(row: Row) -> str:
    step = _num(row.get("step"))
    return "?" if step is None else f"{step:g}"


def _eval_label(row: Row) -> str:
    """What an eval row measured: a checkpoint of an eval stage, or a step of an RL stage."""
    return str(row["model"]) if row.get("model") else f"step {_step(row)}"


def _selected_evals(run: Run) -> list[tuple[str, list[Row], int]]:
    """Per stage and benchmark, the eval rows a table shows: every checkpoint of an eval
    stage, the first and last evaluation of an RL stage. Returns (stage, rows, total rows)."""
    out = []
    for stage, rows in _by_stage(run.evals, [s.name for s in run.stages]).items():
        benches: dict[str, list[Row]] = {}
        for row in rows:
            benches.setdefault(str(row.get("benchmark", "")), []).append(row)
        for group in benches.values():
            if any(r.get("model") for r in group) or len(group) <= 2:
                out.append((stage, group, len(group)))
            else:
                out.append((stage, [group[0], group[-1]], len(group)))
    return out


# ---------------------------------------------------------------------------------------------
# sections


def _stages_section(run: Run) -> list[str]:
    rows = [[s.name, s.kind, s.status, _fixed(s.seconds, 0), s.result] for s in run.stages]
    if not rows:
        return ["## Stages", "", "No stages recorded (config.json is missing).", ""]
    return ["## Stages", "", *_md_table(["stage", "kind", "status", "seconds", "result"], rows,
                                        numeric_from=3), ""]


def _plot_training(stage: str, rows: list[Row], path: Path) -> Path | None:
    curves = [(key, label) for key, label in TRAIN_CURVES if _points(rows, key)[0]]
    if not curves:  # (a stage without accuracy, task = "prompts": no accuracy panel)
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(curves), figsize=(4.2 * len(curves), 3.4), squeeze=False)
    for ax, (key, label) in zip(axes[0], curves):
        xs, ys = _points(rows, key)
        ax.plot(xs, ys, label=key, linewidth=1.8)
        if key == "reward":  # the components the reward is the sum of
            components = dict.fromkeys(k for r in rows for k in r if k.startswith("reward/")
                                       and not k.startswith("reward/metric/"))  # (log_metric's)
            for comp in components:
                cx, cy = _points(rows, comp)
                if cx:
                    ax.plot(cx, cy, linestyle="--", linewidth=1.0, label=comp)
            ax.legend(fontsize=7)
        if key == "accuracy":
            ax.set_ylim(-0.02, 1.02)
        ax.set(xlabel="RL step", ylabel=label, title=f"{stage}: {label}")
        ax.grid(alpha=0.3)
    return _save(fig, path)


def _plot_loss(stage: str, rows: list[Row], path: Path, reward_model: bool = False
               ) -> Path | None:
    """An SFT stage's loss per response token, or a reward model's loss and the share of its
    training batches' rows it scored right."""
    xs, ys = _points(rows, "loss")
    if not xs:
        return None
    plt = _pyplot()
    panels = 2 if reward_model and _points(rows, "accuracy")[0] else 1
    fig, axes = plt.subplots(1, panels, figsize=(4.6 * panels, 3.4), squeeze=False)
    ax = axes[0][0]
    ax.plot(xs, ys, linewidth=1.8)
    ax.set(xlabel="optimizer step", ylabel="loss" if reward_model else "loss (per response token)",
           title=f"{stage}: {'reward model' if reward_model else 'SFT'} loss")
    ax.grid(alpha=0.3)
    if panels == 2:
        ax = axes[0][1]
        ax.plot(*_points(rows, "accuracy"), linewidth=1.8)
        ax.set_ylim(-0.02, 1.02)
        ax.set(xlabel="optimizer step", ylabel="accuracy",
               title=f"{stage}: training batch accuracy")
        ax.grid(alpha=0.3)
    return _save(fig, path)


def _general_line(rows: list[dict]) -> str:
    """A stage with general prompts (eq. 8-10): their share of the questions and each
    reward model's mean reward, from the first step that has it to the last; "" without."""
    parts = []
    for kind in ("helpful", "safety"):
        have = [r for r in rows if _num(r.get(f"reward/{kind}")) is not None]
        if have:
            parts.append(f"{kind} reward {_fixed(have[0][f'reward/{kind}'], 3)} → "
                         f"{_fixed(have[-1][f'reward/{kind}'], 3)} (step {_step(have[0])} → "
                         f"{_step(have[-1])})")
    mixed = [r for r in rows if (_num(r.get("general_frac")) or 0) > 0]
    if not mixed:  # (a task of prompts alone, scored by reward models: their rewards)
        return ", ".join(parts) + "." if parts else ""
    share = (f"general prompts {_pct(mixed[-1]['general_frac'])} of each step's questions "
             f"from step {_step(mixed[0])}")
    return (share + (": " + ", ".join(parts) if parts else "") + ".")


def _training_section(run: Run, report: Path, figures: Path) -> list[str]:
    lines = ["## Training curves", ""]
    groups = _by_stage(run.metrics, [s.name for s in run.stages])
    if not groups:
        return lines + ["No RL steps in metrics.jsonl.", ""]
    kinds = {s.name: s.kind for s in run.stages}
    for stage, rows in groups.items():
        first, last = rows[0], rows[-1]
        if kinds.get(stage) == "sft":
            change = (f"loss {_fixed(first.get('loss'), 4)} → {_fixed(last.get('loss'), 4)} "
                      f"(step {_step(first)} → {_step(last)}).")
            lines += [f"### {stage} ({len(rows)} SFT step{'s' * (len(rows) != 1)})", "", change,
                      ""]
            image = _plot_loss(stage, rows, figures / f"train_{_slug(stage)}.png")
            if image:
                lines += [_image(report, image, f"{stage} SFT loss"), ""]
            continue
        if kinds.get(stage) == "reward_model":
            accuracy = (f", training batch accuracy {_pct(first.get('accuracy'))} → "
                        f"{_pct(last.get('accuracy'))}" if _num(last.get("accuracy")) is not None
                        else "")
            lines += [f"### {stage} ({len(rows)} reward-model step{'s' * (len(rows) != 1)})",
                      "", f"loss {_fixed(first.get('loss'), 4)} → {_fixed(last.get('loss'), 4)}"
                      f"{accuracy} (step {_step(first)} → {_step(last)}).", ""]
            image = _plot_loss(stage, rows, figures / f"train_{_slug(stage)}.png", True)
            if image:
                lines += [_image(report, image, f"{stage} reward-model loss"), ""]
            continue
        lines.append(f"### {stage} ({len(rows)} step{'s' * (len(rows) != 1)})")
        lines.append("")
        # (a stage with a reward_function of its own logs no accuracy)
        accuracy = (f"accuracy {_pct(first.get('accuracy'))} → {_pct(last.get('accuracy'))}, "
                    if _num(first.get("accuracy")) is not None
                    or _num(last.get("accuracy")) is not None else "")
        lines.append(
            f"reward {_fixed(first.get('reward'), 3)} → {_fixed(last.get('reward'), 3)}, "
            f"{accuracy}response length {_fixed(first.get('response_length'))} → "
            f"{_fixed(last.get('response_length'))} tokens "
            f"(step {_step(first)} → {_step(last)}).")
        general = _general_line(rows)
        if general:
            lines.append(general)
        lines.append("")
        image = _plot_training(stage, rows, figures / f"train_{_slug(stage)}.png")
        if image:
            lines += [_image(report, image, f"{stage} training curves"), ""]
    return lines


def _is_reward_row(row: Row) -> bool:
    """An evaluation by the stage's reward (task = "prompts": no answers, no pass@1)."""
    return "pass@1" not in row and _num(row.get("reward")) is not None


def _plot_pass1(run: Run, path: Path, key: str = "pass@1") -> Path | None:
    """Held-out pass@1 (key "reward": the evaluations' mean reward) against RL step."""
    groups = {stage: rows for stage, rows in _by_stage(run.evals, []).items()
              if not any(r.get("model") for r in rows)}
    series = []
    for stage, rows in groups.items():
        benches = dict.fromkeys(str(r.get("benchmark", "")) for r in rows)
        for bench in benches:
            xs, ys = _points([r for r in rows if str(r.get("benchmark", "")) == bench
                              and (key != "reward" or _is_reward_row(r))], key)
            if xs:
                series.append((stage if len(benches) == 1 else f"{stage} {bench}", xs, ys))
    if not series:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for label, xs, ys in series:
        ax.plot(xs, ys, marker="o", label=label)
    if key == "reward":
        ax.set(xlabel="RL step", ylabel="mean reward", title="evaluations: mean reward")
    else:
        ax.set(xlabel="RL step", ylabel="pass@1", title="held-out pass@1", ylim=(-0.02, 1.02))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def _problems(row: dict) -> str:
    """An evaluation's size: problems × samples per problem (what its pass@1 rests on)."""
    n, k = row.get("n"), row.get("k")
    if not isinstance(n, int) or isinstance(n, bool):
        return ""
    return f"{n} × {k}" if isinstance(k, int) and not isinstance(k, bool) else str(n)


def _evals_section(run: Run, report: Path, figures: Path) -> list[str]:
    lines = ["## Held-out evaluations", ""]
    selected = _selected_evals(run)
    if not selected:
        return lines + ["No evaluations in eval.jsonl.", ""]
    by_reward = [(stage, rows, total) for stage, rows, total in selected
                 if any(map(_is_reward_row, rows))]
    selected = [(stage, rows, total) for stage, rows, total in selected
                if not any(map(_is_reward_row, rows))]
    if not selected:
        return lines + _reward_evals(run, by_reward, report, figures)
    ks = {_cons(r)[0] for _, rows, _ in selected for r in rows}
    cons_header = ks.pop() if len(ks) == 1 else "cons@k"
    with_reflect = any(isinstance(r.get("reflect"), dict) for _, rows, _ in selected
                       for r in rows)
    header = ["stage", "checkpoint", "benchmark", "problems × k", "pass@1", cons_header,
              "mean tokens"]
    header += ["reflective words / response"] if with_reflect else []
    table = []
    shortened = False
    for stage, rows, total in selected:
        shortened |= len(rows) < total
        for r in rows:
            ci = r.get("pass@1_ci95")
            pass1 = _pct(r.get("pass@1"))
            if isinstance(ci, list) and len(ci) == 2 and all(_num(v) is not None for v in ci):
                pass1 += f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"
            key, cons = _cons(r)
            cell = (_pct(cons) + (f" ({key})" if len(ks) > 1 else "") if cons is not None
                    else "—")  # no vote (code: programs are not voted on)
            row = [stage, _eval_label(r), str(r.get("benchmark", "")), _problems(r), pass1,
                   cell, _fixed(r.get("mean_tokens"))]
            if with_reflect:
                reflect = r.get("reflect")
                row.append(_fixed(reflect.get(REFLECT_TOTAL), 2)
                           if isinstance(reflect, dict) else "")
            table.append(row)
    lines += _md_table(header, table, numeric_from=3)
    lines.append("")
    if any(isinstance(r.get("pass@1_ci95"), list) for _, rows, _ in selected for r in rows):
        lines += ["pass@1 with its 95% confidence interval in brackets.", ""]
    if shortened:
        lines += ["RL stages: first and last evaluation shown; the plot has all of them.", ""]
    image = _plot_pass1(run, figures / "eval_pass1.png")
    if image:
        lines += [_image(report, image, "held-out pass@1 against RL step"), ""]
    return lines + (_reward_evals(run, by_reward, report, figures) if by_reward else [])


def _reward_evals(run: Run, selected: list[tuple[str, list[Row], int]], report: Path,
                  figures: Path) -> list[str]:
    """Evaluations by the stage's reward (prompts without answers): a table and a plot."""
    logged = dict.fromkeys(k[len("reward/"):] for _, rows, _ in selected for r in rows
                           for k in r if k.startswith("reward/custom") and k != "reward/custom_none")
    parts = [p for p in ("helpful", "safety", "format", *logged)  # (your functions: custom)
             if any(_num(r.get(f"reward/{p}")) is not None for _, rows, _ in selected
                    for r in rows)]
    header = ["stage", "checkpoint", "prompts", "prompts × k", "mean reward",
              *(f"{p} reward" for p in parts), "mean tokens"]
    table = []
    for stage, rows, _ in selected:
        for r in rows:
            cell = _fixed(r.get("reward"), 3)
            ci = r.get("reward_ci95")
            if isinstance(ci, list) and len(ci) == 2 and all(_num(v) is not None for v in ci):
                cell += f" [{ci[0]:.3f}, {ci[1]:.3f}]"
            table.append([stage, _eval_label(r), str(r.get("benchmark", "")), _problems(r), cell,
                          *(_fixed(r.get(f"reward/{p}"), 3) for p in parts),
                          _fixed(r.get("mean_tokens"))])
    lines = [("Prompts without answers (task = \"prompts\"): the stage's own reward on its "
              "evaluation prompts, with its 95% confidence interval in brackets."), "",
             *_md_table(header, table, numeric_from=3), ""]
    if any(len(rows) < total for _, rows, total in selected):
        lines += ["First and last evaluation shown; the plot has all of them.", ""]
    image = _plot_pass1(run, figures / "eval_reward.png", key="reward")
    if image:
        lines += [_image(report, image, "evaluations: mean reward against RL step"), ""]
    return lines


def _reflect_words(rows: list[Row]) -> list[str]:
    """The reflective words the rows count, in logging order, without the total."""
    keys = dict.fromkeys(k for r in rows for k in r if k.startswith(REFLECT_PREFIX))
    return [k[len(REFLECT_PREFIX):] for k in keys if k != REFLECT_PREFIX + REFLECT_TOTAL]


def _reflect_total(row: Row, words: list[str]) -> float | None:
    total = _num(row.get(REFLECT_PREFIX + REFLECT_TOTAL))
    if total is not None:
        return total
    values = [_num(row.get(REFLECT_PREFIX + w)) for w in words]
    present = [v for v in values if v is not None]
    return sum(present) if present else None


def _ratio(first: float | None, last: float | None) -> str:
    if first is None or last is None:
        return ""
    if first > 0:
        return f"{last / first:.2f}×"
    return "∞" if last > 0 else ""


def _plot_reflect(stage: str, rows: list[Row], words: list[str], path: Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.2, 4.0))
    cmap = plt.get_cmap("tab10")
    for i, word in enumerate(words):
        xs, ys = _points(rows, REFLECT_PREFIX + word)
        if xs:
            ax.plot(xs, ys, linewidth=1.2, color=cmap(i % 10), label=word)
    pts = [(x, t) for x, t in ((_num(r.get("step")), _reflect_total(r, words)) for r in rows)
           if x is not None and t is not None]
    if pts:
        ax.plot([p[0] for p in pts], [p[1] for p in pts], color="black", linewidth=2.4,
                label=REFLECT_TOTAL)
    ax.set(xlabel="RL step", ylabel="occurrences per response",
           title=f"{stage}: reflective words")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _save(fig, path)


@dataclass
class LevelEntry:
    stage: str
    checkpoint: str
    accuracy: dict[str, float]  # level -> held-out accuracy
    tokens: dict[str, float]  # level -> mean response length


def _level_rows(run: Run) -> list[LevelEntry]:
    """The eval rows that have levels: the first and last evaluation of an RL stage, every
    checkpoint of an eval stage."""
    out = []
    selected = _selected_evals(run)
    for stage, rows, _ in selected:
        # an eval stage with shipped benchmarks logs several: each entry names its own
        several = sum(s == stage for s, _, _ in selected) > 1
        for r in rows:
            acc, length = r.get("by_level"), r.get("length_by_level")
            acc = acc if isinstance(acc, dict) else {}
            length = length if isinstance(length, dict) else {}
            if not acc and not length:
                continue
            out.append(LevelEntry(
                stage, _eval_label(r) + (f" ({r.get('benchmark', '')})" if several else ""),
                {str(k): float(v) for k, v in acc.items() if _num(v) is not None},
                {str(k): float(v) for k, v in length.items() if _num(v) is not None}))
    return out


def _level_key(level: str) -> tuple[int, float, str]:
    try:
        return (0, float(level), level)
    except ValueError:
        return (1, 0.0, level)


def _plot_levels(entries: list[LevelEntry], levels: list[str], path: Path) -> Path:
    plt = _pyplot()
    panels = [("accuracy", "accuracy", "accuracy by level")]
    if any(e.tokens for e in entries):
        panels.append(("tokens", "tokens", "mean response length by level"))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.6 * len(panels), 3.8), squeeze=False)
    width = 0.8 / max(1, len(entries))
    cmap = plt.get_cmap("tab10" if len(entries) <= 10 else "tab20")
    for ax, (field, ylabel, title) in zip(axes[0], panels):
        for j, entry in enumerate(entries):
            values: dict[str, float] = getattr(entry, field)
            xs = [i + (j - (len(entries) - 1) / 2) * width for i in range(len(levels))]
            ax.bar(xs, [values.get(lv, 0.0) for lv in levels], width,
                   color=cmap(j % cmap.N), label=f"{entry.stage} {entry.checkpoint}")
        ax.set_xticks(range(len(levels)), [f"level {lv}" for lv in levels])
        ax.set(ylabel=ylabel, title=title)
        if field == "accuracy":
            ax.set_ylim(0, 1.05)
        ax.grid(alpha=0.3, axis="y")
    axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _save(fig, path)


def _behaviour_section(run: Run, report: Path, figures: Path) -> list[str]:
    lines = ["## Behaviour analysis", ""]
    groups = {stage: rows for stage, rows in
              _by_stage(run.metrics, [s.name for s in run.stages]).items()
              if _reflect_words(rows)}
    if groups:
        lines += ["### Reflective words", "",
                  ("Mean occurrences per sampled response of the ten reflective words "
                   "(R1-SPEC.md §6), per RL step."), ""]
        table = []
        for stage, rows in groups.items():
            words = _reflect_words(rows)
            first, last = rows[0], rows[-1]
            t0, t1 = _reflect_total(first, words), _reflect_total(last, words)
            ratio = _ratio(t0, t1)
            top = sorted(((w, _num(last.get(REFLECT_PREFIX + w))) for w in words),
                         key=lambda wv: -(wv[1] or 0.0))
            top_text = ", ".join(f"{w} {v:.2f}" for w, v in top[:3] if v)
            table.append([stage, _step(first), _fixed(t0, 2), _step(last), _fixed(t1, 2),
                          ratio, top_text])
        lines += _md_table(["stage", "first step", "total (first)", "last step",
                            "total (last)", "last / first", "most frequent (last)"], table)
        lines.append("")
        for stage, rows in groups.items():
            image = _plot_reflect(stage, rows, _reflect_words(rows),
                                  figures / f"reflect_{_slug(stage)}.png")
            lines += [_image(report, image, f"{stage} reflective words"), ""]
    else:
        lines += [("No reflective-word counts in metrics.jsonl (they are logged by grpo "
                   "stages, from their sampled responses): no behaviour plot."), ""]

    entries = _level_rows(run)
    if entries:
        levels = sorted({lv for e in entries for lv in (*e.accuracy, *e.tokens)},
                        key=_level_key)
        with_length = any(e.tokens for e in entries)
        header = ["stage", "checkpoint"] + [f"L{lv} acc" for lv in levels]
        header += [f"L{lv} tokens" for lv in levels] if with_length else []
        table = []
        for e in entries:
            row = [e.stage, e.checkpoint] + [_pct(e.accuracy.get(lv)) for lv in levels]
            row += [_fixed(e.tokens.get(lv)) for lv in levels] if with_length else []
            table.append(row)
        measured = "accuracy and mean response length (tokens)" if with_length else "accuracy"
        lines += ["### By difficulty level", "",
                  (f"Held-out {measured} per difficulty level: first and last evaluation "
                   "of each RL stage, every checkpoint of an eval stage."), ""]
        lines += _md_table(header, table, numeric_from=2)
        lines.append("")
        image = _plot_levels(entries, levels, figures / "levels.png")
        lines += [_image(report, image, "accuracy and length by level"), ""]
    return lines


def _stage_tables_section(run: Run, report: Path) -> list[str]:
    lines: list[str] = []
    for stage in run.stages:
        table = run.dir / stage.name / "stage_table.md"
        if stage.kind != "eval" or not table.is_file():
            continue
        lines += [f"## Stage table: {stage.name}", "",
                  table.read_text(encoding="utf-8").strip(), ""]
        png = table.with_suffix(".png")
        if png.is_file():
            lines += [_image(report, png, f"{stage.name} stage table"), ""]
    return lines


def _figure1_section(run: Run, report: Path) -> list[str]:
    figure = run.dir / "figure1.png"
    if not figure.is_file():
        return []
    rl = [r for r in run.evals if not r.get("model")]
    what = ("The evaluations' mean reward" if rl and all(map(_is_reward_row, rl)) else
            "Held-out accuracy" + (" (or mean reward)" if any(map(_is_reward_row, rl)) else ""))
    return ["## Figure 1", "", f"{what} and mean response length against RL step.",
            "", _image(report, figure, "figure 1"), ""]


# ---------------------------------------------------------------------------------------------
# entry points


def write_report(run_dir: Path) -> Path:
    """Render `run_dir` into `run_dir/report.md` (plots under `run_dir/report/`); returns the
    path of report.md."""
    run = load_run(Path(run_dir))
    report = run.dir / REPORT_NAME
    figures = run.dir / FIGURE_DIR
    figures.mkdir(exist_ok=True)
    lines = [f"# Run report: {run.dir.resolve().name}", ""]
    lines += _stages_section(run)
    lines += _training_section(run, report, figures)
    lines += _evals_section(run, report, figures)
    lines += _behaviour_section(run, report, figures)
    lines += _stage_tables_section(run, report)
    lines += _figure1_section(run, report)
    report.write_text("\n".join(lines).rstrip() + "\n", encoding="utf-8")
    return report


def run_report_command(args: argparse.Namespace) -> None:
    print(write_report(Path(args.run_dir)))

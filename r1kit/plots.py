"""The run's picture in the style of the paper's Figure 1: held-out accuracy (or, for prompts
without answers, the held-out reward) and mean response length against RL step."""

from __future__ import annotations

from pathlib import Path

from r1kit.runlog import read_jsonl


def plot_figure1(run_dir: Path) -> Path | None:
    """Write `figure1.png` into the run directory from its eval.jsonl; None if nothing to plot."""
    # RL stages' evaluations only: an eval stage's rows (a table of models) name their model
    evals = [e for e in read_jsonl(Path(run_dir) / "eval.jsonl") if not e.get("model")]
    if not evals:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_acc, ax_len) = plt.subplots(1, 2, figsize=(11, 4))
    by_reward = []  # stages evaluated by their reward (task = "prompts": no accuracy)
    for stage in dict.fromkeys(e["stage"] for e in evals):
        rows = sorted((e for e in evals if e["stage"] == stage), key=lambda e: e["step"])
        steps = [e["step"] for e in rows]
        k = rows[0].get("k", 1)
        if "pass@1" not in rows[0]:
            by_reward.append(stage)
            ax_acc.plot(steps, [e["reward"] for e in rows], marker="o",
                        label=f"{stage} mean reward")
        else:
            ax_acc.plot(steps, [e["pass@1"] for e in rows], marker="o", label=f"{stage} pass@1")
        cons = f"cons@{k}"
        if all(e.get(cons) is not None for e in rows):
            ax_acc.plot(steps, [e[cons] for e in rows], marker="s", linestyle="--",
                        label=f"{stage} {cons}")
        ax_len.plot(steps, [e["mean_tokens"] for e in rows], marker="o", label=stage)
    bench = evals[0].get("benchmark", "held-out")
    if by_reward and len(by_reward) == len({e["stage"] for e in evals}):
        ax_acc.set(xlabel="RL step", ylabel="mean reward", title=f"{bench}: mean reward")
    elif by_reward:  # stages of both kinds: rewards need not lie in 0..1
        ax_acc.set(xlabel="RL step", ylabel="accuracy / reward",
                   title=f"{bench}: held-out accuracy / reward")
    else:
        ax_acc.set(xlabel="RL step", ylabel="accuracy", title=f"{bench}: held-out accuracy",
                   ylim=(0, 1))
    ax_len.set(xlabel="RL step", ylabel="tokens", title="mean response length")
    for ax in (ax_acc, ax_len):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    path = Path(run_dir) / "figure1.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

"""What a tiny-world checkpoint does on the held-out problems, sorted by kind of response.

    python scripts/tiny_behaviour.py runs/zero-tiny/base runs/zero-tiny/zero

Samples k responses per held-out problem (T 0.6, top-p 0.95, as in evaluation) and sorts each
into: answer only (nothing inside <think>), step by step, self-check ("wait"), and whether its
working uses Chinese operation words; prints the share and accuracy of each kind, and the mean
language-consistency reward (eq. 7, target English).
"""

from __future__ import annotations

import argparse

import torch

from r1kit.eval.core import decode_responses
from r1kit.models import load_model, load_tokenizer, stop_token_ids
from r1kit.rewards.language import language_reward
from r1kit.rewards.rule import extract_answer
from r1kit.rollout import generate
from r1kit.tasks.arithmetic import ArithmeticTask
from r1kit.templates import render_prompt


def kind_of(response: str) -> str:
    think = response.split("<think>", 1)[-1].split("</think>", 1)[0]
    if not think.strip():
        return "answer only"
    return "self-check" if "wait" in think else "step by step"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoints", nargs="+")
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    task = ArithmeticTask(seed=args.seed)
    test = task.test_examples("main")
    for path in args.checkpoints:
        tok = load_tokenizer(path)
        model = load_model(path, torch.device("cpu"), torch.float32)
        prompts = [tok(render_prompt(e.question, "r1-zero"))["input_ids"] for e in test]
        stop = stop_token_ids(tok, model)
        ro = generate(model, prompts, group_size=args.k, max_new_tokens=96, temperature=0.6,
                      top_p=0.95, stop_ids=stop, pad_id=tok.pad_token_id,
                      generator=torch.Generator().manual_seed(args.seed))
        texts = decode_responses(tok, ro.completion_ids, ro.completion_mask, stop, "")
        stats: dict[str, list[float]] = {}
        zh, lang = [], []
        for i, text in enumerate(texts):
            answer = extract_answer(text)
            right = task.verify(answer, test[i // args.k]) if answer is not None else 0.0
            stats.setdefault(kind_of(text), []).append(right)
            zh.append(right) if any(w in text for w in ("加", "减")) else None
            lang.append(language_reward(text, "en")[0])
        n = len(texts)
        print(f"{path}: {n} responses")
        for kind, rights in sorted(stats.items()):
            print(f"  {kind:13s} {len(rights) / n:6.1%} of responses, right {sum(rights) / len(rights):6.1%}")
        print(f"  Chinese operation words in {len(zh) / n:.1%} of responses; mean language "
              f"reward (target en) {sum(lang) / n:.3f}")


if __name__ == "__main__":
    main()

"""Evaluation the paper's way (R1-SPEC.md §5): pass@1 as the mean over k samples per problem at
temperature 0.6 / top-p 0.95, and cons@k, the majority vote over the k answers."""

from r1kit.eval.core import EvalResult, evaluate, majority_vote, mean_ci95, pass_at_k

__all__ = ["EvalResult", "evaluate", "majority_vote", "mean_ci95", "pass_at_k"]

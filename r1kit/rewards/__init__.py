"""Rewards (R1-SPEC.md §3). A reward function returns `(score, parts)` so that every component
can be logged. `rule` holds the R1-Zero rule rewards: answer extraction, format, accuracy."""

from r1kit.rewards.rule import RuleReward, extract_answer, format_reward, last_boxed

__all__ = ["RuleReward", "extract_answer", "format_reward", "last_boxed"]

"""The `r1kit` command."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from r1kit.errors import R1kitError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="r1kit", description="Reasoning RL the DeepSeek-R1 way.")
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
    score.add_argument("--reward", required=True, metavar="NAME",
                       help="math, format, language or code")
    score.add_argument("--input", required=True, type=Path, metavar="IN.jsonl",
                       help="one JSON object per line, with the fields the reward needs")
    score.add_argument("--output", type=Path, default=None, metavar="OUT.jsonl",
                       help="where to write the scored rows (default: stdout)")
    score.add_argument("--set", dest="settings", action="append", default=[],
                       metavar="KEY=VALUE", help="a reward setting, e.g. timeout=5, target=zh")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "run":
            from r1kit.config import load_recipe
            from r1kit.pipeline import run_recipe

            recipe = load_recipe(args.recipe, args.overrides)
            run_recipe(recipe, args.out, args.from_stage)
        elif args.command == "score":
            from r1kit.scoring import score_file

            score_file(args.reward, args.input, args.output, args.settings)
        return 0
    except R1kitError as exc:
        print(f"r1kit: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("r1kit: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

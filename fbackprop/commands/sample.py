"""``fbackprop sample``: text from a trained character model."""
from __future__ import annotations

import sys

from . import SUMMARIES


def add_parser(subparsers):
    """Register ``fbackprop sample`` and its options.

    Args:
      subparsers: the ``argparse`` sub-parser collection of the ``fbackprop`` command.
    """
    p = subparsers.add_parser(
        "sample", help=SUMMARIES["sample"],
        description="Continue a prompt with the character-level transformer trained in a run "
                    "directory (fbackprop train --model transformer --data text:PATH --out "
                    "DIR). The network is rebuilt from the run's config.json and vocab.json "
                    "with its newest verified checkpoint; the corpus is not needed.")
    p.add_argument("--out", required=True, help="the run directory of the character model")
    p.add_argument("--prompt", help="text to continue (default: a newline)")
    p.add_argument("--length", type=int, default=200, help="characters to add (default 200)")
    p.add_argument("--temperature", type=float, default=0.8,
                   help="divides the logits: lower is more conservative, 0 the most likely "
                        "character every time (default 0.8)")
    p.add_argument("--seed", type=int, default=0, help="seed of the draws (default 0)")
    p.set_defaults(func=run)


def run(args) -> int:
    """Run ``fbackprop sample``: print the prompt's continuation by the run's character model.

    Args:
      args: the parsed command line.

    Returns:
      The exit status: 0, or 2 when the run directory or the arguments are unusable.
    """
    from ..training.sampling import sample_text

    try:
        text = sample_text(args.out, args.prompt, args.length, temperature=args.temperature,
                           seed=args.seed)
    except (ValueError, TypeError) as err:
        print(f"fbackprop sample: error: {err}", file=sys.stderr)
        return 2
    print(text)
    return 0

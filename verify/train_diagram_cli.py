"""``sigprop train-diagram``: a (beta, alpha_sa) grid of training runs through Dask, against the theory's phases.

numeric/cli.py finds this module through the entry-point group ``sigprop.commands``;
torch and Dask are imported when the command runs.

    sigprop train-diagram --depth 12 --betas 0.1,1,4 --alphas 0.25,0.5,1,2 --steps 800 --csv runs.csv --plot d.png
    sigprop train-diagram ... --scheduler tcp://head-node:8786          # a running Dask cluster
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from .train_cli import add_model_arguments, config_from, progress_bar
from .train_config import THRESHOLD

#: The one-line help of ``sigprop train-diagram``.
HELP = "a measured trainability diagram: a (beta, alpha_sa) grid of training runs on Dask vs the theory (needs torch)"
#: What ``sigprop train-diagram --help`` says the command does.
DESCRIPTION = ("Train every point of a (beta, alpha_sa) grid (--seeds initialisations each) as sigprop train does, "
               "through Dask distributed (a LocalCluster of --workers processes, or the cluster at --scheduler), "
               "appending each finished run to --csv at once (an interrupted grid resumes from it). Draws the final "
               "held-out losses with the theory's phase boundaries at T = seq-len over them (--plot), writes one "
               "row per cell (--cells), and prints the agreement between the predicted phase and trained / not "
               "trained: a run is trained when its final held-out loss is at most no-context - threshold x "
               "(no-context - bigram), the no-context loss being that of the best model that sees its own input "
               "byte but no context.")


def _values(text: str) -> np.ndarray:
    """'a,b,c'; 'start:stop:num' (linear); 'start:stop:num:log' (geometric)."""
    try:
        parts = text.split(":")
        if len(parts) == 1:
            return np.array([float(v) for v in text.split(",")])
        if len(parts) == 3:
            return np.linspace(float(parts[0]), float(parts[1]), int(parts[2]))
        if len(parts) == 4 and parts[3] == "log":
            return np.geomspace(float(parts[0]), float(parts[1]), int(parts[2]))
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(f"expected a,b,c or start:stop:num[:log], got {text!r}")


def add_arguments(parser) -> None:
    """The options of ``sigprop train-diagram``."""
    add_model_arguments(parser, grid=True)
    parser.add_argument("--betas", type=_values, default=np.array([0.1, 1.0, 4.0]),
                        help="beta values: a,b,c or start:stop:num[:log] (default: 0.1,1,4)")
    parser.add_argument("--alphas", type=_values, default=np.array([0.25, 0.5, 1.0, 2.0]),
                        help="alpha_sa values: a,b,c or start:stop:num[:log] (default: 0.25,0.5,1,2)")
    parser.add_argument("--seeds", type=int, default=1, help="initialisations per grid point (default: 1)")
    parser.add_argument("--seed", type=int, default=0, help="first seed (default: 0)")
    parser.add_argument("--threshold", type=float, default=THRESHOLD,
                        help=f"trained: final loss <= no-context - threshold (no-context - bigram) (default: "
                             f"{THRESHOLD:g})")
    parser.add_argument("--csv", metavar="CSV", default="train-diagram.csv",
                        help="one row per run, appended as runs finish; resumed from (default: train-diagram.csv)")
    parser.add_argument("--no-resume", dest="resume", action="store_false",
                        help="start afresh: overwrite --csv instead of resuming from it")
    parser.add_argument("--cells", metavar="CSV", help="also write one row per grid cell (seed mean, min, max)")
    parser.add_argument("--plot", metavar="PNG", default="train-diagram.png",
                        help="measured losses with the theory's boundaries (default: train-diagram.png)")
    parser.add_argument("--workers", type=int, default=2, help="LocalCluster worker processes (default: 2)")
    parser.add_argument("--scheduler", metavar="ADDRESS", default=None,
                        help="a running Dask scheduler (tcp://host:8786) instead of a LocalCluster; 'in-process' "
                             "runs the grid here without Dask")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads per run (default: 1)")
    parser.add_argument("--timeout", type=float, default=10.0,
                        help="seconds to wait for --scheduler to answer (default: 10)")
    parser.add_argument("--json", action="store_true", help="print the agreement as one JSON object")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


def run(args) -> None:
    """Train the grid, print the agreement table, write the plot and CSVs; an interrupt keeps the finished runs."""
    from numeric import validation

    from .train_diagram import measure

    base = config_from(args, beta=float(args.betas[0]), alpha_sa=float(args.alphas[0]), threads=None)
    validation.count("--seeds", args.seeds)
    validation.positive("--timeout", args.timeout)
    total = len(args.betas) * len(args.alphas) * args.seeds
    try:
        with progress_bar(total, "runs", "run", args.progress) as bar:
            diagram, runs = measure(base, args.betas, args.alphas, seeds=args.seeds, threshold=args.threshold,
                                    scheduler=args.scheduler, workers=args.workers, csv_path=args.csv,
                                    threads=args.threads, resume=args.resume, progress=bar,
                                    connect_timeout=args.timeout)
    except KeyboardInterrupt:
        print(f"interrupted: the finished runs are in {args.csv}; run the same command again to resume",
              file=sys.stderr)
        raise SystemExit(130) from None
    print(json.dumps(diagram.agreement()) if args.json else diagram.table())
    print(f"{runs.ran} runs trained, {runs.resumed} taken from {args.csv}", file=sys.stderr)
    if args.plot:
        diagram.plot(args.plot)
        print(f"wrote {args.plot}", file=sys.stderr)
    if args.cells:
        diagram.to_csv(args.cells)
        print(f"wrote {args.cells}", file=sys.stderr)


def main(argv=None) -> int:
    """Stand-alone entry point: ``python -m verify.train_diagram_cli ...`` is ``sigprop train-diagram ...``."""
    from numeric.cli import main as sigprop

    return sigprop(["train-diagram", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())

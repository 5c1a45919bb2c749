"""The ``sigprop`` command line.

    sigprop profile  --arch post-ln --depth 30 --beta 1.0 [--T 512] [--plot profile.png] [--json]
    sigprop diagram  --arch post-ln --depth 60 --betas 0.05:3:128 --alphas 0:4:128 --out diagram.png
    sigprop alpha-c  --arch post-ln --depth 60 --beta 0.5,1.0,1.4
    sigprop formula  --arch pre-ln --form latex
    sigprop bench    --json
    sigprop grad     --d 256 --T 512 --p 0 --beta 0.25:4:16 [--asymptotic] [--json] [--plot grad.png]
    sigprop figure   1c|2|3|4|6|clusters --out fig.png
    sigprop recommend ...   (and other commands registered under the entry-point group sigprop.commands)

Parameters carry the paper's names (``--alpha_sa``; ``--alpha-sa`` works too); their
help and defaults come from the one table, :mod:`derive.parameters`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

from derive.parameters import BLOCK, BY_NAME, DEFAULTS

from . import validation as check
from .progress import progress

PARAMETER_HELP = {par.name: par.help for par in BLOCK if par.name != "beta"}
BETA_HELP = BY_NAME["beta"].help


def _floats(text: str) -> np.ndarray:
    """'0.5,1,2' -> [0.5, 1, 2]; 'start:stop:num' -> linspace(start, stop, num)."""
    try:
        if ":" in text:
            start, stop, num = text.split(":")
            return np.linspace(float(start), float(stop), int(num))
        return np.array([float(v) for v in text.split(",")])
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a,b,c or start:stop:num, got {text!r}") from None


def _T(text: str):
    if text.lower() in ("inf", "none", "oo"):
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"T must be an integer >= 2 or 'inf', got {text!r}") from None


def _add_model(parser, *, beta=True, alpha_sa=True):
    parser.add_argument("--arch", default="post-ln", choices=check.ARCHITECTURES,
                        help="block architecture: post-ln (Alg. 1), pre-ln (Alg. 2), gain-post-ln (Alg. 3), "
                             "gain-pre-ln (default: post-ln)")
    parser.add_argument("--depth", type=int, default=30, help="number of blocks (default: 30)")
    parser.add_argument("--activation", default="relu", choices=check.ACTIVATIONS,
                        help="MLP activation (default: relu)")
    if beta:
        parser.add_argument("--beta", type=float, default=1.0, help=f"{BETA_HELP} (default: 1.0)")
    parser.add_argument("--T", type=_T, default=None,
                        help="sequence length: an integer for the exact finite-T theory, inf for T -> oo "
                             "(default: inf)")
    parser.add_argument("--rho0", type=float, default=0.0, help="cosine similarity of the input tokens (default: 0)")
    parser.add_argument("--d", type=int, default=None,
                        help="finite width: the model's width d, for the O(1/d) terms of attention at long context "
                             "(issue 19; needs a finite --T; a causal stack carries at most 512 positions, a sliding window 64 "
                             "and in profile only; default: infinite width)")
    parser.add_argument("--d-head", "--d_head", dest="d_head", type=int, default=None,
                        help="with --d: the heads' width, dividing d (default: one head, d_head = d)")
    parser.add_argument("--inputs", choices=("gaussian", "normalized"), default="gaussian",
                        help="with --d: the attention layers' input tokens, 'gaussian' (norms fluctuate) or "
                             "'normalized' (a LayerNorm or RMSNorm before attention, as in pre-LN, post-LN after "
                             "the first block and every GPT/LLaMA block; default: gaussian)")
    for name, text in PARAMETER_HELP.items():
        if name == "alpha_sa" and not alpha_sa:
            continue
        parser.add_argument(f"--{name}", f"--{name.replace('_', '-')}", dest=name, type=float,
                            default=DEFAULTS[name], help=f"{text} (default: {DEFAULTS[name]:g})")


def _add_mask(parser, *, tokens: bool) -> None:
    """--causal / --mask (decoder stacks, position-resolved theory) and, where it applies, --tokens."""
    parser.add_argument("--causal", action="store_true",
                        help="causal attention (row t sees keys s <= t): the position-resolved theory of a "
                             "decoder stack (needs a finite --T)")
    parser.add_argument("--mask", metavar="MASK", help="attention mask: causal or sliding:W (a causal window of W "
                                                        "keys)")
    parser.add_argument("--groups", type=int, metavar="K",
                        help="with --causal: carry the state on K position groups instead of all T positions "
                             "(numeric.position_groups; >= 8; 16 is enough at T <= 1024: within ~3e-3 in rho at "
                             "every block, much faster at long context)")
    if tokens:
        parser.add_argument("--tokens", type=_tokens, metavar="late|a,b,c|start:stop",
                            help="also read rho among these positions only (late: the last quarter)")


def _width(args) -> dict:
    """d= and d_head= of a command (finite width) where --d or --d-head is given."""
    if args.d is None and args.d_head is None:
        if getattr(args, "inputs", "gaussian") != "gaussian":
            raise ValueError("--inputs normalized needs --d (the finite-width terms of tokens of fixed norm)")
        return {}
    extra = {} if getattr(args, "inputs", "gaussian") == "gaussian" else {"inputs": args.inputs}
    return {"d": args.d, "d_head": args.d_head, **extra}


def _width_label(args) -> str:
    """', d=..., d_head=...' for a finite-width header, '' at infinite width."""
    width = _width(args)
    if not width:
        return ""
    inputs = f", {width['inputs']} inputs" if "inputs" in width else ""
    return f", d={width['d']}, d_head={width['d_head'] or width['d']}{inputs}"


def _params(args, *names):
    return {k: getattr(args, k) for k in names if hasattr(args, k)}


def _mlp_params(args):
    return _params(args, "alpha_mlp", "sigma_v2", "sigma_w2", "sigma_b2")


def _groups(args) -> dict:
    """groups= of a command: only where --groups is given, and only with a mask."""
    groups = getattr(args, "groups", None)
    if groups is None:
        return {}
    if _mask_args(args)["mask"] is None:
        raise ValueError("--groups applies to a masked stack: give --causal or --mask")
    return {"groups": groups}


def _mask_args(args) -> dict:
    """mask= and tokens= of a command (``--causal`` is ``--mask causal``; ``--tokens late`` or a list)."""
    mask = "causal" if getattr(args, "causal", False) else getattr(args, "mask", None)
    if getattr(args, "causal", False) and getattr(args, "mask", None) not in (None, "causal"):
        raise ValueError("--causal and --mask name two different masks: give one")
    return {"mask": mask, "tokens": getattr(args, "tokens", None)}


def _tokens(text: str):
    """--tokens: 'late' (the last quarter of positions) or positions a,b,c or start:stop (a slice)."""
    if text == "late":
        return text
    try:
        if ":" in text:
            start, stop = (int(v) if v else None for v in text.split(":"))
            return slice(start, stop)
        return [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--tokens must be 'late', a,b,c or start:stop, got {text!r}") from None


def cmd_profile(args):
    from .profile import cosine_profile
    kw = dict(beta=args.beta, T=args.T, rho0=args.rho0, activation=args.activation, alpha_sa=args.alpha_sa,
              **_mlp_params(args), **_groups(args), **_width(args))
    masked = _mask_args(args)
    columns = {"rho": cosine_profile(args.arch, args.depth, mask=masked["mask"], **kw)}
    if masked["tokens"] is not None:
        columns["rho_tokens"] = cosine_profile(args.arch, args.depth, **masked, **kw)
    gram = _gram(args) if args.gram else None
    if gram is not None:
        columns.update(rho_gram=gram.rho, rho_gram_se=gram.se)
    positions = None
    if args.positions:
        from .causal import position_profile
        if masked["mask"] is None:
            raise ValueError("--positions reads a masked stack position by position: give --causal or --mask")
        positions = position_profile(args.arch, args.depth, mask=masked["mask"], **kw)
    T = "inf" if args.T is None else args.T
    if args.json:
        out = {"arch": args.arch, "depth": args.depth, "T": args.T, "mask": masked["mask"], **_width(args),
               **{k: v.tolist() for k, v in columns.items()}}
        if gram is not None:
            out["gram_samples"] = args.gram
        if positions is not None:
            out["rho_by_position"] = positions.tolist()
        print(json.dumps(out))
    else:
        mask = f", mask={masked['mask']}" if masked["mask"] else ""
        print(f"# {args.arch}, beta={args.beta:g}, alpha_sa={args.alpha_sa:g}, T={T}{mask}{_width_label(args)}")
        _print_columns(columns, masked, gram, args)
        if positions is not None:
            _print_positions(positions)
    if args.plot:
        _plot_profile(args, columns, positions, masked, T)
        print(f"wrote {args.plot}", file=sys.stderr)


def _print_columns(columns, masked, gram, args):
    """The profile table: one row per block, one column per reading."""
    notes = []
    if masked["mask"]:
        notes.append("rho: all pairs of positions (position-resolved theory, numeric.causal)")
    if "rho_tokens" in columns:
        notes.append(f"rho_tokens: among {_named(masked['tokens'])}")
    if gram is not None:
        notes.append(f"rho_gram: overlap-matrix theory, {args.gram} samples, +- one SE")
    for note in notes:
        print(f"# {note}")
    print(f"{'block':>5}  " + "  ".join(f"{name if name != 'rho_gram_se' else '+-':>10}" for name in columns))
    for layer in range(len(columns["rho"])):
        print(f"{layer:>5}  " + "  ".join(f"{values[layer]:>10.6f}" for values in columns.values()))


def _named(tokens) -> str:
    return "the late positions (the last quarter)" if tokens == "late" else f"positions {tokens}"


def _print_positions(positions):
    """rho of each position with the others after the last block (every position; T rows)."""
    print(f"# rho of each position with the others after block {len(positions) - 1}")
    print(f"{'position':>8}  {'rho':>10}")
    for t, value in enumerate(positions[-1]):
        print(f"{t:>8}  {value:>10.6f}")


def _plot_profile(args, columns, positions, masked, T):
    from .plotting import plot_positions, plot_profiles
    title = f"beta={args.beta:g}, alpha_sa={args.alpha_sa:g}, T={T}" + (f", {masked['mask']}" if masked["mask"] else "")
    if positions is not None:
        return plot_positions(positions, path=args.plot, title=title)
    labels = {"rho": args.arch + (" (all pairs)" if masked["mask"] else ""),
              "rho_tokens": f"{args.arch} ({_named(masked['tokens'])})", "rho_gram": f"{args.arch}, overlap matrix"}
    return plot_profiles({labels[k]: v for k, v in columns.items() if k in labels}, path=args.plot, title=title)


def _gram(args):
    """numeric.gram_profile for ``sigprop profile --gram N`` (needs a finite --T)."""
    from .gram import gram_profile
    if args.T is None:
        raise ValueError("--gram needs a finite --T (the overlap matrix is T x T)")
    with progress(args.gram, "samples") as bar:
        return gram_profile(args.arch, args.depth, beta=args.beta, T=args.T, samples=args.gram, seed=args.seed,
                            rho0=args.rho0, activation=args.activation, alpha_sa=args.alpha_sa, progress=bar,
                            mask=_mask_args(args)["mask"], **_mlp_params(args))


def cmd_diagram(args):
    from .diagram import trainability_diagram
    total = len(args.betas) * len(args.alphas)
    with progress(total, "diagram") as bar:
        diagram = trainability_diagram(args.arch, args.depth, betas=args.betas, alphas=args.alphas, eps=args.eps,
                                       T=args.T, rho0=args.rho0, activation=args.activation,
                                       criterion=args.criterion, progress=bar, mask=_mask_args(args)["mask"],
                                       min_keys=args.min_keys, **_mlp_params(args), **_groups(args),
                                       **_width(args))
    if args.out:
        diagram.plot(args.out)
        print(f"wrote {args.out}", file=sys.stderr)
    if args.csv:
        diagram.to_csv(args.csv)
        print(f"wrote {args.csv}", file=sys.stderr)
    print(json.dumps(diagram.summary()))


def cmd_alpha_c(args):
    from .profile import critical_alpha
    masked = _mask_args(args)
    kw = dict(beta=args.beta, eps=args.eps, T=args.T, rho0=args.rho0, activation=args.activation, mask=masked["mask"],
              **_mlp_params(args), **_groups(args), **_width(args))
    columns = {"critical_alpha": np.atleast_1d(critical_alpha(args.arch, args.depth, **kw))}
    if masked["tokens"] is not None:
        columns["critical_alpha_tokens"] = np.atleast_1d(critical_alpha(args.arch, args.depth, tokens=masked["tokens"],
                                                                        **kw))
    if args.json:
        print(json.dumps({"beta": args.beta.tolist(), **{k: [float(a) for a in v] for k, v in columns.items()}}))
        return
    mask = f", mask={masked['mask']}" if masked["mask"] else ""
    print(f"# smallest alpha_sa with rho after {args.depth} blocks <= 1 - {args.eps:g} ({args.arch}{mask}"
          f"{_width_label(args)})")
    if masked["tokens"] is not None:
        print(f"# alpha_c: all pairs; alpha_c_tokens: among {_named(masked['tokens'])}")
    print(f"{'beta':>8}  {'alpha_c':>12}" + (f"  {'alpha_c_tokens':>14}" if len(columns) > 1 else ""))
    for k, b in enumerate(args.beta):
        print(f"{b:>8.4f}  " + "  ".join(f"{v[k]:>12.6g}" for v in columns.values()))


def cmd_formula(args):
    import derive
    print(derive.formula(args.arch, form=args.form, activation=args.activation))


BENCH_PARTS = ("numpy", "latency", "memory", "sweep")


def _skips(text: str) -> tuple:
    parts = tuple(p for p in text.split(",") if p)
    unknown = sorted(set(parts) - set(BENCH_PARTS))
    if unknown:
        raise argparse.ArgumentTypeError(f"--skip takes {', '.join(BENCH_PARTS)}, got {', '.join(unknown)}")
    return parts


def cmd_bench(args):
    from . import bench
    if args.causal:
        return _bench_causal(bench, args)
    if args.width:
        return _bench_width(bench, args)
    skip = set(args.skip or ())
    result = bench.run(args.arch, args.depth, args.grid, args.naive_points, args.T, args.activation, args.repeats,
                       finite_T=args.finite_T, latency="latency" not in skip, memory="memory" not in skip,
                       sweep="sweep" not in skip, numpy="numpy" not in skip)
    if args.json:
        print(json.dumps(result))
        return
    cpus = result["machine"]["cpus"]
    print(f"fused:  {result['compiled_updates_per_s']:.3e} block updates/s ({args.grid}x{args.grid} grid, "
          f"{args.depth} blocks, with the critical alpha: {result['compiled_seconds']:.3f} s on {cpus} CPUs)")
    if "numpy_updates_per_s" in result:
        print(f"numpy:  {result['numpy_updates_per_s']:.3e} block updates/s (the same diagram, "
              f"{result['numpy_seconds']:.3f} s)")
    print(f"naive:  {result['naive_updates_per_s']:.3e} block updates/s (a plain Python loop with math over "
          f"{args.naive_points} points)")
    print(f"ratio:  {result['ratio']:.0f}x the plain loop")
    if args.finite_T:
        print(f"finite T = {args.finite_T}: {result['finite_T_updates_per_s']:.3e} block updates/s, "
              f"{result['finite_T_cost_ratio']:.2f}x the asymptotic cost "
              f"(moment tables built once in {result['finite_T_table_seconds']:.1f} s)")
    if "first_call_cold_s" in result:
        print(f"first diagram of the README's command: {result['first_call_auto_s']:.2f} s as run (NumPy path: "
              f"too small to load numba); on the fused kernel {result['first_call_cold_s']:.2f} s with an empty "
              f"numba cache, {result['first_call_cached_s']:.2f} s cached")
    if "memory_diagram_peak_mb" in result:
        print(f"2048x2048x60 diagram: {result['memory_diagram_peak_mb']:.0f} MB allocated at the peak "
              f"(process peak resident size {result['memory_process_peak_rss_mb']:.0f} MB)")
    if "sweep_updates_per_s" in result:
        print(f"4-D sweep: {result['sweep_updates']:.1e} block updates in {result['sweep_seconds']:.2f} s")


def _bench_width(bench, args):
    """``sigprop bench --width``: a finite-width diagram against the infinite-width one, and its tables."""
    r = bench.width()
    if args.json:
        print(json.dumps(r))
        return
    grid = r["width_grid"]
    print(f"finite-width diagram: {r['width_arch']}, T = {r['width_T']}, d = {r['width_d']}, d_head = "
          f"{r['width_d_head']}, {grid[0]}x{grid[1]} grid, {r['width_depth']} blocks, with its critical alpha: "
          f"{r['width_diagram_seconds']:.3f} s; infinite width at the same T: "
          f"{r['width_infinite_diagram_seconds']:.3f} s; ratio {r['width_cost_ratio']:.2f}")
    print(f"tables in an empty cache: {r['width_base_table_seconds']:.1f} s per T (shared by every width), "
          f"{r['width_table_seconds']:.1f} s per (T, d, d_head); read back from disk in "
          f"{r['width_table_read_seconds'] * 1e3:.0f} ms")
    grid = r["causal_width_grid"]
    print(f"causal finite-width diagram: pre-ln, T = {r['causal_width_T']} on {r['causal_width_groups']} position "
          f"groups, d = {r['causal_width_d']}, d_head = {r['causal_width_d_head']}, {grid[0]}x{grid[1]} grid, "
          f"{r['causal_width_depth']} blocks: {r['causal_width_diagram_seconds']:.2f} s; infinite width: "
          f"{r['causal_infinite_diagram_seconds']:.2f} s; ratio {r['causal_width_cost_ratio']:.2f} (its causal "
          f"table, read from the disk cache or built once per (d, d_head, T): {r['causal_width_table_seconds']:.1f} s)")
    for run in r["normalized_width_runs"]:
        print(f"normalized-token encoder diagram: pre-ln, T = {r['normalized_width_T']}, d = "
              f"{r['normalized_width_d']}, d_head = {r['normalized_width_d_head']}, {run['grid'][0]}x{run['grid'][1]} "
              f"grid, {run['depth']} blocks, with its critical alpha: {run['normalized_seconds']:.3f} s; infinite "
              f"width: {run['infinite_seconds']:.3f} s; ratio {run['cost_ratio']:.2f} (Gaussian tokens at finite "
              f"width: {run['gaussian_seconds']:.3f} s)")
    print(f"on {r['machine']['cpus']} CPUs, load average {r['machine']['load_average']}")


def _bench_causal(bench, args):
    """``sigprop bench --causal``: the position-resolved theory's profile and diagram timings."""
    result = bench.causal()
    if args.json:
        print(json.dumps(result))
        return
    K = result["groups"]
    print(f"causal profile: pre-LN, T = {result['causal_profile_T']}, {result['causal_profile_depth']} blocks: "
          f"{result['causal_profile_seconds_full']:.2f} s (every position), {result['causal_profile_seconds_grouped']:.2f}"
          f" s ({K} position groups; largest |rho difference| {result['grouped_profile_max_abs_difference']:.1e})")
    grid, small = result["causal_diagram_grid"], result["causal_compare_grid"]
    print(f"causal diagram, {K} position groups: post-LN, T = {result['causal_diagram_T']}, {grid[0]}x{grid[1]} grid, "
          f"{result['causal_diagram_depth']} blocks, with its critical-alpha searches: "
          f"{result['causal_diagram_seconds_grouped']:.1f} s")
    agree = "agree" if result["causal_compare_phases_agree"] else "DIFFER"
    print(f"causal diagram, {small[0]}x{small[1]} grid: {result['causal_compare_seconds_full']:.1f} s every position, "
          f"{result['causal_compare_seconds_grouped']:.2f} s with {K} groups; phases {agree}, largest |rho "
          f"difference| {result['causal_compare_max_abs_rho_difference']:.1e}")
    print(f"every position: {result['causal_seconds_per_point_block_full'] * 1e3:.2f} ms per point and block, "
          f"the grid of a 128x128 diagram ~{result['causal_diagram_128_grid_seconds_full']:.0f} s")
    print(f"on {result['machine']['cpus']} CPUs, load average {result['machine']['load_average']}")


GRAD_COLUMNS = ("query", "key", "value", "collapse")


def grad_table(args) -> dict:
    """The rows of ``sigprop grad``: E||dL/dW||_F^2 for W_Q, W_K, W_V and the collapse variable, per beta."""
    from . import gradients
    finite_T = not args.asymptotic
    kw = dict(d=args.d, T=args.T, q=args.q, p=args.p, sigma_v2=args.sigma_v2, finite_T=finite_T)
    beta = np.atleast_1d(args.beta)
    query = np.atleast_1d(gradients.query_grad_sq_norm(beta, **kw))
    return {
        "d": args.d, "T": args.T, "q": args.q, "p": args.p, "sigma_v2": args.sigma_v2, "finite_T": finite_T,
        "beta_c": gradients.critical_beta(args.q, args.p), "beta": beta.tolist(), "query": query.tolist(),
        "key": np.atleast_1d(gradients.key_grad_sq_norm(beta, **kw)).tolist(),
        "value": np.atleast_1d(gradients.value_grad_sq_norm(beta, **kw)).tolist(),
        "collapse": (query / gradients.collapse_scale(d=args.d, T=args.T, q=args.q, p=args.p,
                                                      sigma_v2=args.sigma_v2)).tolist(),
    }


def cmd_grad(args):
    table = grad_table(args)
    if args.json:
        print(json.dumps(table))
    else:
        theory = "finite-T theory" if table["finite_T"] else "T -> oo moments"
        print(f"# E||dL/dW||_F^2, L = sum G_ti S(X)_ti; d={args.d}, T={args.T}, q={args.q:g}, p={args.p:g}, "
              f"sigma_v2={args.sigma_v2:g}, {theory}; beta_c = {table['beta_c']:.6g}")
        print("# collapse = query / (T d^2 sqrt(ln T) sigma_v2 q (q-p)^2) = beta E[Y2 - 2Y3 + (sum A^2)^2]")
        print(f"{'beta':>8}  " + "  ".join(f"{c:>13}" for c in GRAD_COLUMNS))
        for k, b in enumerate(table["beta"]):
            print(f"{b:>8.4f}  " + "  ".join(f"{table[c][k]:>13.6g}" for c in GRAD_COLUMNS))
    if args.plot:
        _plot_grad(table, args.plot)
        print(f"wrote {args.plot}", file=sys.stderr)


def _plot_grad(table: dict, path):
    """Query (= key) and value gradient norms against beta, beta_c marked."""
    from .plotting import pyplot, save
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    beta = table["beta"]
    left.plot(beta, table["query"], "o-", ms=3, label=r"$W_Q$ (= $W_K$)")
    right.plot(beta, table["value"], "o-", ms=3, color="C2", label=r"$W_V$")
    for ax, name in ((left, "Q"), (right, "V")):
        ax.axvline(table["beta_c"], color="grey", ls=":", lw=1.0, label=r"$\beta_c$")
        ax.set_xlabel(r"$\beta$")
        ax.set_ylabel(rf"$\mathbb{{E}}\,\|\partial L/\partial W_{name}\|_F^2$")
        ax.legend(fontsize=8)
    theory = "finite-T theory" if table["finite_T"] else r"$T \to \infty$ moments"
    fig.suptitle(f"d = {table['d']}, T = {table['T']}, q = {table['q']:g}, p = {table['p']:g}, "
                 f"$\\sigma_v^2$ = {table['sigma_v2']:g} ({theory})", fontsize=10)
    return save(fig, path)


def cmd_figure(args):
    from . import figures
    if args.device:
        os.environ["SIGPROP_DEVICE"] = args.device   # read by verify.torch_view.resolve_device; numeric needs no torch
    path = figures.make(args.which, args.out, quick=args.quick, measure=args.measure)
    print(f"wrote {path}", file=sys.stderr)




def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sigprop", description=(
        "Signal propagation through transformers at initialisation (Giorlandino & Goldt, ICLR 2026): "
        "depth profiles of the token cosine similarity, critical residual strengths and trainability "
        "diagrams from the paper's theory, corrected and extended."))
    sub = parser.add_subparsers(dest="command", metavar="command", required=True)

    p = sub.add_parser("profile", help="cosine similarity rho after every block (table, JSON or plot)")
    _add_model(p)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--plot", metavar="PNG", help="also draw the profile to this file")
    p.add_argument("--gram", type=int, metavar="N", default=0,
                   help="also iterate the whole T x T overlap matrix at infinite width, N score samples "
                        "(numeric.gram_profile; beyond the (q, p) closure, needs --T)")
    p.add_argument("--seed", type=int, default=0, help="seed of the --gram samples")
    _add_mask(p, tokens=True)
    p.add_argument("--positions", action="store_true",
                   help="also print rho of each position with the others after the last block (masked stacks; "
                        "with --plot: rho by position at several depths)")
    p.set_defaults(func=cmd_profile)

    p = sub.add_parser("diagram", help="trainability diagram over (beta, alpha_sa): PNG, CSV and a JSON summary")
    _add_model(p, beta=False, alpha_sa=False)
    p.set_defaults(depth=60)
    p.add_argument("--betas", type=_floats, default=np.linspace(0.05, 3.0, 128),
                   help="beta grid: a,b,c or start:stop:num (default: 0.05:3:128)")
    p.add_argument("--alphas", type=_floats, default=np.linspace(0.0, 4.0, 128),
                   help="alpha_sa grid: a,b,c or start:stop:num (default: 0:4:128)")
    p.add_argument("--eps", type=float, default=0.01, help="rank collapse: rho after the last block > 1 - eps")
    p.add_argument("--criterion", choices=("first", "any"), default="first",
                   help="entropy collapse when the first attention layer (paper, Fig. 1c) or any layer "
                        "condenses (default: first)")
    _add_mask(p, tokens=False)
    p.add_argument("--min-keys", dest="min_keys", type=int, default=None,
                   help="masked stacks: judge entropy collapse on rows with at least this many keys (default: "
                        "those of the last quarter of positions)")
    p.add_argument("--out", metavar="PNG", default="diagram.png", help="image path (default: diagram.png)")
    p.add_argument("--csv", metavar="CSV", help="also write one row per grid point")
    p.set_defaults(func=cmd_diagram)

    p = sub.add_parser("alpha-c", help="critical alpha_sa: smallest residual strength avoiding rank collapse")
    _add_model(p, beta=False, alpha_sa=False)
    p.add_argument("--beta", type=_floats, default=np.array([0.5, 1.0, 1.4]),
                   help="beta values: a,b,c or start:stop:num (default: 0.5,1.0,1.4)")
    p.add_argument("--eps", type=float, default=0.01, help="rank collapse threshold (default: 0.01)")
    _add_mask(p, tokens=True)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_alpha_c)

    p = sub.add_parser("formula", help="a block map as a LaTeX algorithm or a Python function (from derive)")
    p.add_argument("--arch", default="post-ln", choices=check.ARCHITECTURES, help="block architecture")
    p.add_argument("--activation", default="relu", choices=check.ACTIVATIONS, help="MLP activation")
    p.add_argument("--form", choices=("latex", "python"), default="latex", help="output form (default: latex)")
    p.set_defaults(func=cmd_formula)

    p = sub.add_parser("bench", help="fused kernels, the NumPy path and a plain Python loop, in one run")
    p.add_argument("--arch", default="post-ln", choices=check.ARCHITECTURES, help="block architecture")
    p.add_argument("--activation", default="relu", choices=check.ACTIVATIONS, help="MLP activation")
    p.add_argument("--depth", type=int, default=60, help="blocks per grid point (default: 60)")
    p.add_argument("--grid", type=int, default=512, help="grid points per axis (default: 512)")
    p.add_argument("--naive-points", type=int, default=300, help="points in the Python loop (default: 300)")
    p.add_argument("--T", type=_T, default=None, help="sequence length (default: inf)")
    p.add_argument("--repeats", type=int, default=1, help="time the compiled side this often, keep the best")
    p.add_argument("--finite-T", dest="finite_T", type=_T, default=512,
                   help="also time a finite-T diagram at this T against the asymptotic one ('inf' skips; "
                        "default: 512)")
    p.add_argument("--skip", type=_skips, metavar="PART[,PART]",
                   help="leave out parts of the report: numpy, latency (fresh processes, cold and cached JIT), "
                        "memory (a 2048x2048x60 diagram), sweep (a 4-D sweep)")
    p.add_argument("--causal", action="store_true",
                   help="instead: time the position-resolved theory of causal stacks (a profile at T = 1024, 60 "
                        "blocks; an 8x8 causal diagram at T = 256, 60 blocks, and its rate)")
    p.add_argument("--width", action="store_true",
                   help="instead: time a finite-width diagram (pre-LN, T = 512, d = 256, d_head = 64, 128x128, 30 "
                        "blocks) against the infinite-width one, and the width tables' build and read-back; a "
                        "causal one, and an encoder's with normalized tokens")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("grad", help="gradient norms E||dL/dW||^2 of W_Q, W_K, W_V against beta (corrected Result 2)")
    p.add_argument("--beta", type=_floats, default=np.linspace(0.25, 4.0, 16),
                   help="beta values: a,b,c or start:stop:num (default: 0.25:4:16)")
    p.add_argument("--d", type=int, default=256, help="embedding dimension d (default: 256)")
    p.add_argument("--T", type=int, default=512, help="sequence length T, an integer >= 2 (default: 512)")
    p.add_argument("--q", type=float, default=1.0, help="input token norm q = |X_t|^2/d (default: 1)")
    p.add_argument("--p", type=float, default=0.0, help="input token overlap p = X_t.X_s/d, p < q (default: 0)")
    p.add_argument("--sigma_v2", "--sigma-v2", dest="sigma_v2", type=float, default=1.0,
                   help=f"{PARAMETER_HELP['sigma_v2']} (default: 1)")
    p.add_argument("--asymptotic", action="store_true",
                   help="attention moments of the T -> oo theory (zero gradient below beta_c) instead of exact "
                        "finite-T ones")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--plot", metavar="PNG", help="also draw the norms against beta to this file")
    p.set_defaults(func=cmd_grad)

    _add_plugins(sub)

    from .figures import describe as describe_figures, names as figure_names
    p = sub.add_parser("figure", help="reproduce a figure of the paper: " + ", ".join(figure_names()))
    p.add_argument("which", help="figure: " + describe_figures())
    p.add_argument("--out", metavar="PNG", help="image path (default: figure-<which>.png)")
    p.add_argument("--quick", action="store_true", help="small sizes (for tests)")
    p.add_argument("--measure", action="store_true", help="add Monte Carlo measurements (needs torch)")
    p.add_argument("--device", help="device of the figures that use torch: cpu, cuda, cuda:N or auto (sets "
                                    "$SIGPROP_DEVICE; 1e and 5 train at the paper's sizes on a GPU)")
    p.set_defaults(func=cmd_figure)
    return parser


#: Entry-point group of the subcommands other packages provide (verify's need torch). Each entry point is a
#: module with HELP, DESCRIPTION, add_arguments(parser) and run(args); numeric never imports them by name.
COMMANDS = "sigprop.commands"


def _add_plugins(sub) -> None:
    """Register the subcommands of the entry-point group :data:`COMMANDS` (sorted by name)."""
    from importlib.metadata import entry_points
    for ep in sorted(entry_points(group=COMMANDS), key=lambda e: e.name):
        module = ep.load()
        p = sub.add_parser(ep.name, help=module.HELP, description=module.DESCRIPTION)
        module.add_arguments(p)
        p.set_defaults(func=module.run)


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except ValueError as exc:
        print(f"sigprop {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

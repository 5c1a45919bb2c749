"""The torch view of an architecture spec: the network at initialisation, batched over seeds.

One spec, three views (docs/design.md): :mod:`derive.layers` gives every layer kind
its ``torch_init`` (unit-variance weights) and ``torch_forward`` (the weights
scaled by docs/design.md's variances: W_Q, W_K entries N(0, beta sqrt(ln T)/d),
W_V N(0, sigma_v2/d), MLP weights N(0, sigma_w2/fan_in), biases N(0, sigma_b2)).
This module wraps them into an ``nn.Module`` whose weights are ``nn.Parameter``
(so autograd works), with a leading *seed* dimension: ``n_seeds`` independent
initialisations run as one batched tensor program, never a Python loop.

- :func:`build` stacks ``depth`` blocks of a spec, each with its own weights;
- :func:`tokens` draws input sequences with q0 = |X_t|^2/d and cosine
  similarity rho0 (the theory's input state, docs/design.md: q0 = 1, p0 = rho0);
- :func:`resolve_device` picks the device: an explicit argument, else the
  environment variable ``SIGPROP_DEVICE``, else the CPU. A CUDA request
  without CUDA raises ``RuntimeError`` (never a silent fallback).
"""

from __future__ import annotations

import dataclasses
import math
import os

import torch
from torch import nn

from derive.architectures import architecture
from derive.layers import MLP, Layer, Parallel, Residual, SelfAttention, Sequence
from derive.parameters import DEFAULTS
from numeric import validation as check

#: Environment variable naming the default device ("cpu", "cuda", "cuda:1", "auto").
DEVICE_ENV = "SIGPROP_DEVICE"
#: Parameter values used where ``params`` leaves one out: the one table, derive.parameters.DEFAULTS.
DEFAULT_PARAMS = DEFAULTS
_SEP = ":"


# --- checks and device --------------------------------------------------------------

def resolve_device(device=None) -> torch.device:
    """The torch device for ``device`` (``None``: ``$SIGPROP_DEVICE``, else "cpu").

    "auto" means CUDA when ``torch.cuda.is_available()``, else the CPU. An
    explicit CUDA request without CUDA raises ``RuntimeError``: a suite that
    silently ran on the CPU would report CPU numbers as GPU ones.
    """
    source = "argument"
    if device is None:
        device, source = os.environ.get(DEVICE_ENV, "cpu"), f"${DEVICE_ENV}"
    name = str(device).strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        raise RuntimeError(f"unsupported device {device!r} (from {source}): "
                           "use 'cpu', 'cuda', 'cuda:N' or 'auto'") from None
    if dev.type == "cpu":
        return dev
    if dev.type != "cuda":
        raise RuntimeError(f"unsupported device type {dev.type!r} (from {source}): verify runs on 'cpu' or 'cuda'")
    if not torch.cuda.is_available():
        raise RuntimeError(f"CUDA was requested (device={device!r}, from {source}) but torch.cuda.is_available() "
                           f"is False (torch {torch.__version__}); no silent fallback to the CPU: "
                           "ask for device='cpu' or 'auto'")
    if dev.index is not None and dev.index >= torch.cuda.device_count():
        raise RuntimeError(f"CUDA device {dev.index} requested but only {torch.cuda.device_count()} present")
    return dev


def resolve_dtype(dtype) -> torch.dtype:
    """float64 (the default everywhere) or float32 (on a GPU, where a tolerance allows it)."""
    if dtype not in (torch.float64, torch.float32):
        raise ValueError(f"dtype must be torch.float64 or torch.float32, got {dtype!r}")
    return dtype


def make_generator(seed: int | None, generator, device: torch.device) -> torch.Generator:
    """A seeded ``torch.Generator`` on ``device`` (a given one is used as is); every draw is seeded."""
    if generator is not None:
        return generator
    if seed is None:
        raise ValueError("give a seed (int) or a torch.Generator: every random draw in verify is seeded")
    return torch.Generator(device=device).manual_seed(int(seed))


# --- specs ----------------------------------------------------------------------------

def spec_of(spec_or_name, activation: str = "relu", heads: int = 1, mask=None) -> Layer:
    """The spec for a name of :data:`derive.architectures.ARCHITECTURES` (its attention masked by ``mask``)
    or a Layer, with ``heads`` heads."""
    if mask is not None and not isinstance(spec_or_name, str):
        raise ValueError("mask= applies to a named architecture; a spec carries its own masks")
    spec = architecture(spec_or_name, activation, mask=mask)
    heads = check.count("heads", heads)
    return spec if heads == 1 else with_heads(spec, heads)


def with_heads(spec: Layer, heads: int) -> Layer:
    """The same spec with every SelfAttention split into ``heads`` heads (same overlap map)."""
    if isinstance(spec, SelfAttention):
        kv = spec.kv_heads
        return dataclasses.replace(spec, heads=heads, kv_heads=None if kv is None or kv == spec.heads else kv)
    if isinstance(spec, Residual):
        return dataclasses.replace(spec, branch=with_heads(spec.branch, heads))
    if isinstance(spec, Parallel):
        return Parallel(*(with_heads(branch, heads) for branch in spec.branches), alpha=spec.alpha)
    if isinstance(spec, MLP) or not isinstance(spec, Sequence):
        return spec
    return Sequence(*(with_heads(layer, heads) for layer in spec.layers), name=spec.name)


def full_params(spec: Layer, params: dict | None) -> dict:
    """``params`` completed with :data:`DEFAULT_PARAMS`; every parameter the spec uses must be present."""
    values = {**DEFAULT_PARAMS, **(params or {})}
    missing = spec.parameters() - set(values)
    if missing:
        raise ValueError(f"missing parameter(s) {sorted(missing)} for this spec; given: {sorted(values)}")
    for name, value in values.items():
        if not math.isfinite(float(value)):
            raise ValueError(f"parameter {name!r} must be finite, got {value!r}")
    return {name: float(value) for name, value in values.items()}


# --- modules --------------------------------------------------------------------------

def _flatten(weights: dict, prefix: str = ""):
    for key, value in weights.items():
        path = f"{prefix}{_SEP}{key}" if prefix else str(key)
        if isinstance(value, dict):
            yield from _flatten(value, path)
        else:
            yield path, value


def _unflatten(flat) -> dict:
    nested: dict = {}
    for path, value in flat.items():
        node = nested
        *parents, leaf = path.split(_SEP)
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return nested


class Block(nn.Module):
    """One block of a spec with its own weights (unit variance, ``nn.Parameter``), batched over seeds."""

    def __init__(self, spec: Layer, d: int, n_seeds: int, params: dict, generator, dtype, device):
        super().__init__()
        self.spec, self.params = spec, params
        weights = spec.torch_init(d, n_seeds, generator, dtype, device)
        self.weights = nn.ParameterDict({path: nn.Parameter(w) for path, w in _flatten(weights)})

    def forward(self, x):
        return self.spec.torch_forward(x, _unflatten(dict(self.weights.items())), self.params)

    def layer_weights(self) -> dict:
        """The nested weight dict as the spec's ``torch_forward`` reads it."""
        return _unflatten(dict(self.weights.items()))


class Stack(nn.Module):
    """Independent blocks of one spec; x has shape (seeds, [batch...,] T, d)."""

    def __init__(self, blocks, d: int, n_seeds: int):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.d, self.n_seeds = d, n_seeds

    @property
    def params(self) -> dict:
        return self.blocks[0].params if len(self.blocks) else {}

    def _check(self, x):
        if x.dim() < 3 or x.shape[0] != self.n_seeds or x.shape[-1] != self.d:
            raise ValueError(f"input must have shape ({self.n_seeds} seeds, [batch...,] T, {self.d}), "
                             f"got {tuple(x.shape)}")
        check.sequence_length(x.shape[-2], infinite=False)

    def forward(self, x):
        self._check(x)
        for block in self.blocks:
            x = block(x)
        return x

    def trace(self, x):
        """The input and the output of every block: a list of depth + 1 tensors."""
        self._check(x)
        out = [x]
        for block in self.blocks:
            out.append(block(out[-1]))
        return out


def build(spec_or_name, d: int, *, seeds: int, params: dict | None = None, depth: int = 1,
          activation: str = "relu", heads: int = 1, device=None, dtype=torch.float64,
          seed: int | None = 0, generator: torch.Generator | None = None, mask=None) -> Stack:
    """A :class:`Stack` of ``depth`` blocks of ``spec_or_name`` at initialisation.

    ``spec_or_name``: "post-ln" (Alg. 1), "pre-ln" (Alg. 2), "gain-post-ln"
    (Alg. 3), "gain-pre-ln", or any :class:`derive.layers.Layer`. ``seeds``
    independent initialisations share one batched program. ``params`` maps
    beta, alpha_sa, alpha_mlp, sigma_v2, sigma_w2, sigma_b2 to floats
    (defaults as numeric.cosine_profile, beta required by attention).
    """
    d, seeds = check.count("d", d), check.count("seeds", seeds)
    blocks = iter_blocks(spec_or_name, d, seeds=seeds, params=params, depth=depth, activation=activation,
                         heads=heads, device=device, dtype=dtype, seed=seed, generator=generator, mask=mask)
    return Stack(list(blocks), d, seeds)


def iter_blocks(spec_or_name, d: int, *, seeds: int, params: dict | None = None, depth: int = 1,
                activation: str = "relu", heads: int = 1, device=None, dtype=torch.float64,
                seed: int | None = 0, generator: torch.Generator | None = None, mask=None):
    """The blocks of :func:`build`, sampled one at a time (same draws, same order).

    A measurement that runs blocks in turn holds one block's weights at a
    time: 30 blocks at d = 2048 and 8 seeds would need 10 GB at once.
    """
    d = check.count("d", d)
    seeds = check.count("seeds", seeds)
    depth = check.count("depth", depth, minimum=0)
    device, dtype = resolve_device(device), resolve_dtype(dtype)
    spec = spec_of(spec_or_name, activation, heads, mask)
    values = full_params(spec, params)
    generator = make_generator(seed, generator, device)
    for _ in range(depth):
        yield Block(spec, d, seeds, values, generator, dtype, device)


# --- inputs ---------------------------------------------------------------------------

def tokens(seeds: int, T: int, d: int, *, rho0: float = 0.0, q0: float = 1.0, batch: tuple = (),
           kind: str = "basis", device=None, dtype=torch.float64, seed: int | None = 0,
           generator: torch.Generator | None = None) -> torch.Tensor:
    """Input sequences (seeds, *batch, T, d) with |X_t|^2/d = q0 and X_t.X_s/d = q0 rho0 (t != s).

    ``kind="basis"`` (default): X_t = sqrt(d q0) (sqrt(rho0) e_0 + sqrt(1 - rho0) e_(t+1))
    with e_k the standard basis, so the overlaps are *exactly* the theory's
    mean-field state q_ts = p + (q - p) delta_ts (eq. 21), with no O(1/sqrt d)
    input fluctuations; needs T + 1 <= d. Every layer of the specs is
    equivariant under a rotation X_t -> R X_t (its weights are i.i.d. Gaussian,
    LayerNorm without centring is rotation invariant), so any orthonormal frame
    gives outputs with the same law as this one.
    ``kind="frame"``: the same with a random orthonormal frame (QR of a Gaussian
    matrix per sequence), for layers that are not rotation invariant (centring).
    ``kind="gaussian"``: X_t = sqrt(q0) (sqrt(rho0) c + sqrt(1 - rho0) z_t), c, z_t
    i.i.d. N(0, I_d): the overlaps hold in expectation, with O(1/sqrt d)
    fluctuations (any T).
    ``rho0`` may be negative, down to -1/(T-1) (:func:`numeric.validation.rho0`): the
    tokens are then the own parts minus a multiple of their mean (:func:`_anticorrelated`).
    """
    seeds, T, d = check.count("seeds", seeds), check.sequence_length(T, infinite=False), check.count("d", d)
    batch = tuple(check.count("batch size", b) for b in batch)
    rho0, q0 = float(check.rho0(rho0, T)), float(check.positive("q0", q0))
    device, dtype = resolve_device(device), resolve_dtype(dtype)
    shape = (seeds, *batch)
    if kind in ("basis", "frame") and T + 1 > d:
        raise ValueError(f"{kind!r} tokens need T + 1 <= d (T + 1 orthonormal vectors), got T={T}, d={d}; "
                         "use kind='gaussian'")
    if kind == "basis":
        frame = torch.eye(T + 1, d, dtype=dtype, device=device).expand(*shape, T + 1, d) * math.sqrt(d)
    elif kind == "frame":
        generator = make_generator(seed, generator, device)
        frame, _ = torch.linalg.qr(torch.randn(*shape, d, T + 1, generator=generator, dtype=dtype, device=device))
        frame = frame.transpose(-1, -2) * math.sqrt(d)
    elif kind == "gaussian":
        generator = make_generator(seed, generator, device)
        frame = torch.randn(*shape, T + 1, d, generator=generator, dtype=dtype, device=device)
    else:
        raise ValueError(f"kind must be 'basis', 'frame' or 'gaussian', got {kind!r}")
    common, own = frame[..., :1, :], frame[..., 1:, :]
    if rho0 >= 0.0:
        return math.sqrt(q0) * (math.sqrt(rho0) * common + math.sqrt(1.0 - rho0) * own)
    return _anticorrelated(own, rho0, q0)


def _anticorrelated(own, rho0: float, q0: float):
    """Tokens with a negative overlap rho0 >= -1/(T-1): Y_t = own_t - c mean_s own_s, scaled to norm q0.

    For orthonormal own_t (|own_t|^2/d = 1), Y_t.Y_s/d = delta_ts + k/T with k = c^2 - 2c; k = rho0 T/(1 - rho0)
    gives cosine rho0, and c = 1 - sqrt(1 + k) is real because k >= -1 exactly when rho0 >= -1/(T-1).
    """
    T = own.shape[-2]
    k = rho0 * T / (1.0 - rho0)
    c = 1.0 - math.sqrt(max(1.0 + k, 0.0))
    return math.sqrt(q0 / (1.0 + k / T)) * (own - c * own.mean(dim=-2, keepdim=True))

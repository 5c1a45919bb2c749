"""Named architecture specs: the paper's blocks as data (Algorithms 1-3).

``architecture(name, activation="relu")`` returns a :class:`~derive.layers.Sequence`;
every view (SymPy map, compiled NumPy map, torch network) is generated from it.

- ``post-ln`` (Alg. 1, BERT): X -> LN(RES_SA(X)) -> LN(RES_MLP(.))
- ``pre-ln`` (Alg. 2): X -> X + SA(LN(X)) -> . + MLP(LN(.))
- ``gain-post-ln`` (Alg. 3): post-ln with gain-controlled attention
- ``gain-pre-ln``: pre-ln with gain-controlled attention (section 3, Fig. 2)
"""

from __future__ import annotations

from . import parameters
from .kernels import ACTIVATIONS
from .layers import MLP, Layer, LayerNorm, Residual, SelfAttention, Sequence

ARCHITECTURES = parameters.ARCHITECTURES


def post_ln(activation: str = "relu", gain: bool = False, mask=None) -> Sequence:
    """Post-norm block (paper Algorithm 1; Algorithm 3 with ``gain=True``); ``mask`` as :mod:`derive.masks`."""
    return Sequence(
        Residual(SelfAttention(gain=gain, mask=mask), alpha="alpha_sa"),
        LayerNorm(),
        Residual(MLP(activation), alpha="alpha_mlp"),
        LayerNorm(),
        name=("gain-post-ln" if gain else "post-ln"),
    )


def pre_ln(activation: str = "relu", gain: bool = False, mask=None) -> Sequence:
    """Pre-norm block (paper Algorithm 2, corrected; gain-controlled with ``gain=True``); ``mask`` as
    :mod:`derive.masks`."""
    return Sequence(
        Residual(Sequence(LayerNorm(), SelfAttention(gain=gain, mask=mask)), alpha="alpha_sa"),
        Residual(Sequence(LayerNorm(), MLP(activation)), alpha="alpha_mlp"),
        name=("gain-pre-ln" if gain else "pre-ln"),
    )


def architecture(arch, activation: str = "relu", mask=None) -> Layer:
    """The spec of ``arch``: a name from :data:`ARCHITECTURES` (its attention masked by ``mask``: None,
    "causal" or "sliding:W") or a Layer (returned as is)."""
    if isinstance(arch, Layer):
        return arch
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    builders = {"post-ln": lambda: post_ln(activation, mask=mask), "pre-ln": lambda: pre_ln(activation, mask=mask),
                "gain-post-ln": lambda: post_ln(activation, gain=True, mask=mask),
                "gain-pre-ln": lambda: pre_ln(activation, gain=True, mask=mask)}
    if arch not in builders:
        raise ValueError(f"arch must be one of {ARCHITECTURES} or a derive.layers.Layer spec, got {arch!r}")
    return builders[arch]()

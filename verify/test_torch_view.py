"""The torch view itself: shapes, seeding, independence, devices, bad input, inputs with exact overlaps."""

import math

import pytest
import torch

from derive.layers import LayerNorm, SelfAttention, Sequence
from derive.parameters import ARCHITECTURES
from verify import montecarlo as mc
from verify.torch_view import _unflatten, build, resolve_device, tokens

ARCHS = ARCHITECTURES


@pytest.mark.parametrize("arch", ARCHS)
def test_stack_shapes_parameters_and_autograd(arch, device):
    stack = build(arch, 16, seeds=3, depth=2, params={"beta": 1.0}, device=device)
    x = tokens(3, 5, 16, device=device)
    y = stack(x)
    assert y.shape == x.shape and y.dtype == torch.float64
    assert len(stack.blocks) == 2
    assert all(p.requires_grad for p in stack.parameters())
    y.pow(2).sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in stack.parameters())


def test_batched_over_seeds_equals_one_seed_at_a_time(device):
    """The leading seed dimension is a batch of independent networks, not a shared one."""
    stack = build("post-ln", 12, seeds=4, depth=2, params={"beta": 2.0}, device=device)
    x = tokens(4, 6, 12, rho0=0.3, kind="gaussian", device=device, seed=5)
    together = stack(x)
    for s in range(4):
        alone = x[s:s + 1]
        for block in stack.blocks:
            weights = {k: v[s:s + 1] for k, v in block.weights.items()}
            alone = block.spec.torch_forward(alone, _unflatten(weights), block.params)
        torch.testing.assert_close(together[s:s + 1], alone, rtol=1e-12, atol=1e-12)


def test_seeded_and_blocks_independent(device):
    a = build("pre-ln", 8, seeds=2, depth=2, params={"beta": 1.0}, seed=7, device=device)
    b = build("pre-ln", 8, seeds=2, depth=2, params={"beta": 1.0}, seed=7, device=device)
    c = build("pre-ln", 8, seeds=2, depth=2, params={"beta": 1.0}, seed=8, device=device)
    for (name, pa), pb, pc in zip(a.named_parameters(), b.parameters(), c.parameters()):
        assert torch.equal(pa, pb), name
        assert not torch.equal(pa, pc), name
    first, second = (dict(block.weights.items()) for block in a.blocks)
    assert all(not torch.equal(first[k], second[k]) for k in first)


def test_batch_dimension_shares_the_seed_weights(device):
    stack = build("gain-pre-ln", 8, seeds=2, params={"beta": 1.5}, device=device)
    x = tokens(2, 4, 8, batch=(3,), kind="gaussian", device=device)
    y = stack(x)
    assert y.shape == (2, 3, 4, 8)
    torch.testing.assert_close(y[:, 1], stack(x[:, 1]), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", ["basis", "frame"])
def test_tokens_have_exactly_the_mean_field_overlaps(kind, device):
    x = tokens(3, 7, 16, rho0=0.4, q0=2.0, kind=kind, device=device, seed=1)
    gram = x @ x.transpose(-1, -2) / 16
    expected = 2.0 * (0.4 + 0.6 * torch.eye(7, dtype=x.dtype, device=x.device))
    torch.testing.assert_close(gram, expected.expand_as(gram), rtol=0, atol=1e-12)


def test_gaussian_tokens_overlaps_in_expectation(device):
    x = tokens(64, 8, 256, rho0=0.3, kind="gaussian", device=device, seed=2)
    q, p = mc.overlap_samples(x)
    assert abs(q.mean().item() - 1.0) < 0.02 and abs(p.mean().item() - 0.3) < 0.05


def test_overlap_estimator_is_the_pair_average():
    x = torch.randn(2, 5, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    q, p = mc.overlap_samples(x)
    gram = x @ x.transpose(-1, -2) / 3
    off = (gram.sum((-1, -2)) - gram.diagonal(dim1=-2, dim2=-1).sum(-1)) / 20
    torch.testing.assert_close(p, off)
    torch.testing.assert_close(q, gram.diagonal(dim1=-2, dim2=-1).mean(-1))


def test_multi_head_split(device):
    spec = SelfAttention(heads=4)
    stack = build(spec, 16, seeds=2, params={"beta": 1.0}, device=device)
    x = tokens(2, 6, 16, device=device)
    A = spec.torch_attention(x, stack.blocks[0].layer_weights(), stack.params)
    assert A.shape == (2, 4, 6, 6)
    torch.testing.assert_close(A.sum(-1), torch.ones_like(A.sum(-1)))
    assert build("post-ln", 16, seeds=1, heads=4, params={"beta": 1.0}, device=device)(x[:1]).shape == (1, 6, 16)


def test_forward_uses_the_same_attention_as_torch_attention(device):
    """S(X) = A X W_V with A from torch_attention (one place for the score convention)."""
    spec = SelfAttention()
    stack = build(spec, 8, seeds=2, params={"beta": 2.0, "sigma_v2": 1.0}, device=device)
    x = tokens(2, 5, 8, kind="gaussian", device=device)
    w = stack.blocks[0].layer_weights()
    A = spec.torch_attention(x, w, stack.params)[:, 0]
    values = x @ w["W_V"].transpose(-1, -2) / math.sqrt(8)
    torch.testing.assert_close(stack(x), A @ values, rtol=1e-12, atol=1e-12)


def test_gain_control_removes_the_value_mean(device):
    vanilla = build(SelfAttention(), 8, seeds=2, params={"beta": 1.0}, seed=3, device=device)
    gain = build(SelfAttention(gain=True), 8, seeds=2, params={"beta": 1.0}, seed=3, device=device)
    x = tokens(2, 5, 8, kind="gaussian", device=device)
    values = x @ vanilla.blocks[0].layer_weights()["W_V"].transpose(-1, -2) / math.sqrt(8)
    torch.testing.assert_close(vanilla(x) - gain(x), values.mean(-2, keepdim=True).expand_as(values))


# --- devices and bad input ------------------------------------------------------------

def test_cuda_request_without_cuda_raises(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match="CUDA was requested.*no silent fallback"):
        resolve_device("cuda")
    monkeypatch.setenv("SIGPROP_DEVICE", "cuda")
    with pytest.raises(RuntimeError, match=r"\$SIGPROP_DEVICE"):
        resolve_device(None)
    assert resolve_device("auto").type == "cpu"


def test_device_selection(monkeypatch):
    monkeypatch.delenv("SIGPROP_DEVICE", raising=False)
    assert resolve_device(None).type == "cpu"
    monkeypatch.setenv("SIGPROP_DEVICE", "cpu")
    assert resolve_device(None).type == "cpu"
    for bad in ("tpu", "mps", "banana"):
        with pytest.raises(RuntimeError, match="unsupported device"):
            resolve_device(bad)


@pytest.mark.parametrize("call, match", [
    (lambda: mc.profile("post-ln", 2, beta=1.0, T=1, d=8, seeds=2), "T must be an integer >= 2"),
    (lambda: mc.profile("post-ln", 2, beta=1.0, T=4, d=0, seeds=2), "d must be an integer >= 1"),
    (lambda: mc.profile("post-ln", 2, beta=1.0, T=4, d=8, seeds=0), "seeds must be an integer >= 1"),
    (lambda: mc.attention_moments(1.0, T=1, d=8, seeds=2), "T must be an integer >= 2"),
    (lambda: mc.gaussian_moments(1.0, T=16, samples=0), "samples must be an integer >= 1"),
    (lambda: mc.query_gradient(1.0, T=4, d=8, seeds=0), "seeds must be an integer >= 1"),
    (lambda: mc.score_statistics(1.0, T=4, d=0, seeds=2), "d must be an integer >= 1"),
    (lambda: tokens(2, 8, 4), "need T \\+ 1 <= d"),
    (lambda: tokens(2, 4, 8, rho0=1.5), "rho0 must lie in"),
    (lambda: build("post-ln", 8, seeds=2, params={}), "missing parameter"),
    (lambda: build("post-ln", 8, seeds=2, params={"beta": 1.0}, dtype=torch.int64), "dtype must be"),
    (lambda: build("nope", 8, seeds=2, params={"beta": 1.0}), "arch must be one of"),
    (lambda: build(SelfAttention(heads=3), 8, seeds=2, params={"beta": 1.0}), "not divisible"),
])
def test_bad_input_says_why(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_measurement_on_unsupported_device_raises():
    with pytest.raises(RuntimeError, match="unsupported device"):
        mc.profile("post-ln", 1, beta=1.0, T=4, d=8, seeds=2, device="tpu")


def test_stack_rejects_wrong_input_shape(device):
    stack = build(Sequence(LayerNorm()), 8, seeds=2, device=device)
    with pytest.raises(ValueError, match="input must have shape"):
        stack(torch.zeros(3, 4, 8, dtype=torch.float64))
    with pytest.raises(ValueError, match="T must be an integer >= 2"):
        stack(torch.ones(2, 1, 8, dtype=torch.float64))

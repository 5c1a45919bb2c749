"""Real encoders at their own initialisation against the finite-T theory (issue 8).

Reference values: the finite-T theory at T = seq_len with every parameter read from
the modules (verify.adapters). Measurements: rho over independent initialisations
(seeds), frame tokens with exact overlaps q0 = 1, rho0 = 0 (dense vectors: PyTorch's
uniform weights are not rotation invariant, so basis tokens would not do).

Two allowances, each with its reason:

- ``finite_d_allowance`` (the suite's O(1/d)) where the theory's assumptions hold:
  Gaussian weights (BERT's init; PyTorch layers redrawn Gaussian with the same
  variances);
- the issue's accuracy target (0.03 relu, 0.05 gelu) at PyTorch's default init,
  whose uniform (non-Gaussian) weights leave an O(1/d) bias per layer that adds up
  over 24 layers (0.02-0.03 at d = 256 for post-LN relu; the Gaussian control
  below shows none).
"""

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

import numeric
from verify import adapters
from verify.adapters_read import read
from verify.montecarlo import Estimate
from verify.stats import assert_agrees, deviation, finite_d_allowance
from verify.testing import (ENCODER_D, ENCODER_LAYERS, ENCODER_T, FINITE_D_REASON, ISSUE_REASON, TOL,
                            encoder_layers, frame_inputs)

D, L, T = ENCODER_D, ENCODER_LAYERS, ENCODER_T
GAUSS_REASON = FINITE_D_REASON


def gaussian_redraw(layers, seed):
    """The same layers with every weight matrix redrawn Gaussian with its own second moment (biases kept)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in layers:
            for param in layer.parameters():
                if param.dim() == 2:
                    param.copy_(torch.randn(param.shape, generator=generator) * param.pow(2).mean().sqrt())
    return layers


def over_inits(build, seeds, *, T=T, d=D, batch=4):
    """(measured rho Estimate, theory profile averaged over the initialisations)."""
    models = [build(s) for s in seeds]
    measured = adapters.profile_estimate((m, frame_inputs(10_000 + s, T=T, d=d, batch=batch))
                                         for m, s in zip(models, seeds))
    theory = np.mean([adapters.predict_cosine_profile(m, T) for m in models], axis=0)
    return measured, theory


# --- reading -------------------------------------------------------------------------------

def test_reads_pytorch_default_init():
    """xavier-uniform in_proj (1/(2d)), kaiming-uniform a = sqrt(5) (1/(3 fan_in)), uniform biases."""
    d, d_ff = 512, 1024
    (r,) = read(encoder_layers(0, layers=1, d=d, heads=8, d_ff=d_ff))
    rel = 0.03
    assert (r.norm_first, r.activation, r.d, r.heads, r.d_ff, r.eps_attention) == (False, "relu", d, 8, d_ff, 1e-5)
    np.testing.assert_allclose(r.score_scale, 0.5, rtol=rel)          # d * sqrt(1/(2d) * 1/(2d))
    np.testing.assert_allclose(r.value_weights, 1 / 8, rtol=rel)
    np.testing.assert_allclose(r.sigma_v2, 1 / 6, rtol=rel)            # d^2 * 1/(2d) * 1/(3d)
    np.testing.assert_allclose([r.sigma_w2, r.sigma_w2_out], 1 / 3, rtol=rel)
    np.testing.assert_allclose([r.sigma_b2, r.sigma_b2_out], [1 / (3 * d), 1 / (3 * d_ff)], rtol=0.15)
    assert r.sigma_b2_att == 0.0
    np.testing.assert_allclose(r.beta(T), 0.5 / math.sqrt(math.log(T)), rtol=rel)


def test_reads_gelu_pre_ln_and_unbatched_layout():
    layer = encoder_layers(1, layers=1, activation="gelu", norm_first=True, batch_first=False)
    (r,) = read(layer)
    assert (r.activation, r.norm_first, r.batch_first) == ("gelu", True, False)
    x = frame_inputs(3, batch=2)
    moved = copy.deepcopy(layer)
    for m in moved:
        m.self_attn.batch_first = True
    np.testing.assert_allclose(adapters.measure_cosine_profile(layer, x.transpose(0, 1)),
                               adapters.measure_cosine_profile(moved, x), rtol=1e-5)
    np.testing.assert_allclose(adapters.measure_cosine_profile(layer, x[0]),
                               adapters.measure_cosine_profile(moved, x[:1]), rtol=1e-5)


def test_measurement_equals_direct_computation():
    """Hooks on the real forward pass = applying the layers by hand and computing the overlaps."""
    layers = encoder_layers(2, layers=4)
    encoder = nn.TransformerEncoder(copy.deepcopy(layers[0]), 4, enable_nested_tensor=False).eval()
    for mine, theirs in zip(encoder.layers, layers):
        mine.load_state_dict(theirs.state_dict())
    x = frame_inputs(4, rho0=0.2)
    direct, y = [adapters.overlaps(x)], x
    with torch.no_grad():
        for layer in layers:
            y = layer(y)
            direct.append(adapters.overlaps(y))
    want = np.array([p / q for q, p in direct])
    np.testing.assert_allclose(adapters.measure_cosine_profile(layers, x), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(adapters.measure_cosine_profile(encoder, x), want, rtol=1e-5, atol=1e-6)
    assert want[0] == pytest.approx(0.2, abs=1e-5)


def test_cloned_encoder_is_rejected_and_independent_init_fixes_it():
    """nn.TransformerEncoder deep-copies its layer: identical layers collapse much faster than the theory."""
    encoder = nn.TransformerEncoder(encoder_layers(5, layers=1)[0], 3, enable_nested_tensor=False).eval()
    with pytest.raises(ValueError, match="identical weights"):
        adapters.predict_cosine_profile(encoder, T)
    assert adapters.measure_cosine_profile(encoder, frame_inputs(5)).shape == (4,)
    adapters.independent_init(encoder, seed=1)
    (r0, r1, _) = read(encoder)
    assert not torch.equal(r0.handles["q"], r1.handles["q"])
    np.testing.assert_allclose([r0.sigma_v2, r1.sigma_v2], 1 / 6, rtol=0.05)


# --- attention: scores, heads, values --------------------------------------------------------

def _rescale_heads(layer, query=(), value=()):
    """Multiply head h's query rows by query[h] and value rows by value[h] (heads with their own variances)."""
    d, h = layer.self_attn.embed_dim, layer.self_attn.num_heads
    w = layer.self_attn.in_proj_weight
    with torch.no_grad():
        for head, c in enumerate(query):
            w[:d].view(h, -1, d)[head].mul_(c)
        for head, c in enumerate(value):
            w[2 * d:].view(h, -1, d)[head].mul_(c)


def test_score_variance_per_head(device):
    """Within-row variance of the real scores (log A minus its row mean) = beta_h^2 ln T (q - p) q, per head.

    Heads carry their own query scale (x1, x2, x0.5, x3), read as kappa_h = d sqrt(s_Q s_K);
    PyTorch's 1/sqrt(d_h) scaling makes the variance independent of d_h (eq. 9).
    """
    scales, seeds, T_ = (1.0, 2.0, 0.5, 3.0), range(12), 128
    measured, expected = [], []
    for s in seeds:
        (layer,) = encoder_layers(100 + s, layers=1)
        _rescale_heads(layer, query=scales)
        x = frame_inputs(200 + s, T=T_, batch=2)
        with torch.no_grad():
            _, A = layer.self_attn(x, x, x, need_weights=True, average_attn_weights=False)
        logits = A.double().log()
        centred = logits - logits.mean(-1, keepdim=True)
        measured.append((centred.pow(2).sum(-1) / (T_ - 1)).mean(dim=(0, 2)).numpy())
        expected.append(np.square(read([layer])[0].score_scale))
    population = np.square(0.5 * np.array(scales))
    np.testing.assert_allclose(np.mean(expected, axis=0), population, rtol=0.03)
    ratio = Estimate(np.array(measured) / np.array(expected))
    assert_agrees(1.0, ratio, allowance=finite_d_allowance(D), reason=GAUSS_REASON,
                  what="per-head score variance / (beta_h^2 ln T)")


def test_attention_branch_with_heads_and_output_projection(device):
    """(1/d) |S_t|^2 and S_t.S_s of a real attention branch = sigma_v2 (p + (q - p) sum_h w_h M_h) (eqs. 20-23).

    Heads differ in query scale (beta_h) and value scale (w_h); sigma_v2 includes the
    output projection; M_h are the finite-T moments (Y2 for q, Yp for p) at beta_h.
    """
    rho0, T_, seeds = 0.3, 64, range(16)
    query, value = (2.5, 1.0, 4.0, 0.5), (1.0, 2.0, 0.5, 1.5)
    qs, ps, readings = [], [], []
    for s in seeds:
        (layer,) = encoder_layers(300 + s, layers=1)
        _rescale_heads(layer, query=query, value=value)
        x = frame_inputs(400 + s, T=T_, batch=4, rho0=rho0)
        with torch.no_grad():
            out, _ = layer.self_attn(x, x, x, need_weights=False)
        q, p = adapters.overlaps(out)
        qs.append(q)
        ps.append(p)
        readings.append(read([layer])[0])
    r = readings[0]
    betas = np.mean([x.beta(T_) for x in readings], axis=0)
    weights = np.mean([x.value_weights for x in readings], axis=0)
    sigma_v2 = np.mean([x.sigma_v2 for x in readings])
    y2 = sum(w * numeric.ipr(b, q=1.0, p=rho0, T=T_) for b, w in zip(betas, weights))
    yp = sum(w * numeric.ipr_pair(b, q=1.0, p=rho0, T=T_) for b, w in zip(betas, weights))
    assert r.heads == 4 and not np.allclose(weights, 0.25)
    assert_agrees(sigma_v2 * (rho0 + (1 - rho0) * y2), Estimate(np.array(qs)), allowance=finite_d_allowance(D),
                  reason=GAUSS_REASON, what="q of the attention branch")
    assert_agrees(sigma_v2 * (rho0 + (1 - rho0) * yp), Estimate(np.array(ps)), allowance=finite_d_allowance(D),
                  reason=GAUSS_REASON, what="p of the attention branch")


# --- depth profiles at PyTorch's default init (the issue's acceptance) ------------------------

CONFIGS = [  # (norm_first, activation, heads, d_ff, T)
    (False, "relu", 4, 512, 64),
    (False, "gelu", 8, 1024, 128),
    (True, "relu", 8, 1024, 128),
    (True, "gelu", 4, 512, 64),
]


@pytest.mark.parametrize("norm_first, activation, heads, d_ff, T_", CONFIGS)
def test_default_init_profile(norm_first, activation, heads, d_ff, T_, record_property):
    """24 layers, d_model 256: theory within the issue's 0.03 (relu) / 0.05 (gelu) of the measured mean, plus
    k SE (k = 7.0: t with 15 dof, Bonferroni over the 24 layers; SE <= 0.008). The plain deviations, recorded
    as a property, are 0.026, 0.011, 0.005 and 0.011 for the four configurations (README)."""
    measured, theory = over_inits(lambda s: encoder_layers(s, heads=heads, d_ff=d_ff, activation=activation,
                                                           norm_first=norm_first), range(16), T=T_, batch=2)
    record_property("max_abs_deviation", deviation(theory, measured))
    record_property("max_se", float(np.max(measured.se)))
    arch = "pre-LN" if norm_first else "post-LN"
    assert_agrees(theory, measured, allowance=TOL[activation], reason=ISSUE_REASON, skip_first=True,
                  what=f"{arch} {activation} rho profile, {heads} heads, d_ff {d_ff}, T {T_}")
    assert theory[-1] > 0.25  # the check has something to see: rho grows from 0 over the stack


@pytest.mark.parametrize("norm_first, activation", [(False, "relu"), (True, "gelu")])
def test_gaussian_weights_remove_the_bias(norm_first, activation):
    """Control: the same stacks with Gaussian weights of the same variances agree to the suite's O(1/d)."""
    measured, theory = over_inits(lambda s: gaussian_redraw(encoder_layers(s, activation=activation,
                                                                           norm_first=norm_first), 50 + s),
                                  range(16), batch=2)
    assert_agrees(theory, measured, allowance=finite_d_allowance(D, theory), reason=GAUSS_REASON, skip_first=True,
                  what=f"{'pre' if norm_first else 'post'}-LN {activation}, Gaussian weights")


# --- biases and centring ------------------------------------------------------------------------

def _big_biases(layers, seed):
    """Zero-mean biases of variance 0.2 (out_proj, linear1, linear2): a common component in every token."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in layers:
            for module in (layer.self_attn.out_proj, layer.linear1, layer.linear2):
                module.bias.copy_(torch.randn(module.bias.shape, generator=generator) * math.sqrt(0.2))
    return layers


def test_common_bias_survives_centring():
    """Real LayerNorm subtracts each token's feature mean: a zero-mean bias keeps all but 1/d of its square.

    Biases add their variance to q and p (verify.adapters_read); theory and measurement
    agree; the alternative reading "centring removes the common bias component"
    (predicting with the biases zeroed) is rejected by the same data.
    """
    def build(s):
        return _big_biases(gaussian_redraw(encoder_layers(s, layers=8), 60 + s), 70 + s)

    measured, theory = over_inits(build, range(12), batch=2)
    assert_agrees(theory, measured, allowance=finite_d_allowance(D, theory), reason=GAUSS_REASON, skip_first=True,
                  what="post-LN with large biases")
    unbiased = copy.deepcopy(build(0))
    with torch.no_grad():
        for layer in unbiased:
            for module in (layer.self_attn.out_proj, layer.linear1, layer.linear2):
                module.bias.zero_()
    wrong = adapters.predict_cosine_profile(unbiased, T)
    assert wrong[-1] < theory[-1] - 0.1
    with pytest.raises(AssertionError):
        assert_agrees(wrong, measured, allowance=finite_d_allowance(D, theory), reason=GAUSS_REASON,
                      skip_first=True, what="biases dropped")


def test_key_bias_is_exact_and_query_bias_is_rejected():
    (layer,) = encoder_layers(7, layers=1)
    before = adapters.predict_cosine_profile([layer], T)
    x = frame_inputs(8)
    measured = adapters.measure_cosine_profile([layer], x)
    d = layer.self_attn.embed_dim
    with torch.no_grad():
        layer.self_attn.in_proj_bias[d:2 * d].normal_(0.0, 3.0, generator=torch.Generator().manual_seed(1))
    np.testing.assert_allclose(adapters.predict_cosine_profile([layer], T), before, rtol=1e-12)
    np.testing.assert_allclose(adapters.measure_cosine_profile([layer], x), measured, rtol=1e-4)
    with torch.no_grad():
        layer.self_attn.in_proj_bias[:d].fill_(0.1)
    with pytest.raises(ValueError, match="query bias"):
        adapters.predict_cosine_profile([layer], T)


# --- bad input ------------------------------------------------------------------------------------

class _CustomAttention(nn.MultiheadAttention):
    def forward(self, *args, **kwargs):
        return super().forward(*args, **kwargs)


class _CustomLayer(nn.TransformerEncoderLayer):
    def _sa_block(self, x, *args, **kwargs):
        return super()._sa_block(x, *args, **kwargs)


def _with(change):
    layers = encoder_layers(9, layers=2, d=32, heads=2, d_ff=64)
    change(layers)
    return layers


@pytest.mark.parametrize("change, error, match", [
    (lambda ls: setattr(ls[1], "self_attn", _CustomAttention(32, 2, batch_first=True)), TypeError, "layers\\[1\\].self_attn"),
    (lambda ls: ls.__setitem__(0, _CustomLayer(32, 2, 64, dropout=0.0, batch_first=True)), TypeError, "_sa_block"),
    (lambda ls: ls.__setitem__(1, nn.TransformerEncoderLayer(32, 2, 64, dropout=0.1, batch_first=True)), ValueError,
     "layers\\[1\\].*dropout p=0.1 in training mode"),
    (lambda ls: ls.__setitem__(1, nn.TransformerEncoderLayer(64, 2, 64, dropout=0.0, batch_first=True)), ValueError,
     "d_model 64"),
    (lambda ls: setattr(ls[0], "activation", nn.Hardswish()), ValueError, "Hardswish.*no kernel"),
    (lambda ls: setattr(ls[0], "activation", torch.sigmoid), ValueError, "no kernel"),
    (lambda ls: ls[0].norm2.weight.data.fill_(2.0), ValueError, "layers\\[0\\].norm2.*weight"),
    (lambda ls: ls[1].linear2.bias.data.fill_(0.5), ValueError, "linear2.bias.*mean"),
    (lambda ls: ls.__setitem__(0, nn.Linear(32, 32)), TypeError, "layers\\[0\\]: Linear"),
    (lambda ls: setattr(ls[0].self_attn, "bias_k", nn.Parameter(torch.zeros(1, 1, 32))), ValueError,
     "add_bias_kv"),
])
def test_unreadable_modules_are_named(change, error, match):
    layers = _with(change)
    with pytest.raises(error, match=match):
        adapters.predict_cosine_profile(layers, T)


def test_bad_arguments():
    layers = encoder_layers(9, layers=1, d=32, heads=2, d_ff=64)
    for call, match in [(lambda: adapters.predict_cosine_profile(layers, 1), "seq_len"),
                        (lambda: adapters.predict_cosine_profile(layers, T, rho0=1.5), "rho0"),
                        (lambda: adapters.predict_cosine_profile([], T), "empty"),
                        (lambda: adapters.apply_init(layers, -1.0, 1.0, seq_len=T), "beta"),
                        (lambda: adapters.measure_cosine_profile(layers, [[0.0]]), "torch.Tensor")]:
        with pytest.raises((ValueError, TypeError), match=match):
            call()
    with pytest.raises(TypeError, match="cannot read"):
        adapters.predict_cosine_profile(nn.Linear(3, 3), T)


def test_zero_initialised_projections_are_read_not_refused():
    """A zero query (beta = 0) or zero output projection (sigma_v2 = 0) is a valid init: read, not refused."""
    layers = encoder_layers(21, layers=2, d=32, heads=2, d_ff=64)
    with torch.no_grad():
        for layer in layers:
            layer.self_attn.in_proj_weight[:32].zero_()       # every head's query rows
            layer.self_attn.out_proj.weight.zero_()
    rho = adapters.predict_cosine_profile(layers, T)
    assert np.all(np.isfinite(rho)) and rho.shape == (3,)
    r = read(layers)[0]
    assert r.sigma_v2 == 0.0 and np.all(r.beta(T) == 0.0) and r.value_weights == (0.5, 0.5)
    with pytest.raises(ValueError, match=r"layers\[0\]: head 0 has query/key scale beta_h = 0"):
        adapters.apply_init(layers, 0.5, 1.0, seq_len=T)
    assert torch.isfinite(layers[0].self_attn.in_proj_weight).all()


def test_each_layer_takes_the_input_kind_its_attention_sees():
    """adapters.attention_width: normalized tokens where a LayerNorm precedes the attention (pre-LN layers, a
    post-LN layer after a post-LN layer), Gaussian tokens for the stack's input and after a pre-LN layer's
    residual stream, Gaussian everywhere under a sliding window (not tabulated), None at infinite width."""
    from types import SimpleNamespace
    pre, post = (SimpleNamespace(d=64, heads=2, norm_first=first) for first in (True, False))
    kinds = {(64, 32): "gaussian", (64, 32, "normalized"): "normalized"}

    def layers_kinds(readings, window=False):
        return [kinds[adapters.attention_width(readings, i, True, window)] for i in range(len(readings))]

    assert layers_kinds([pre, pre, pre]) == ["normalized"] * 3
    assert layers_kinds([post, post, post]) == ["gaussian", "normalized", "normalized"]
    assert layers_kinds([pre, post, post]) == ["normalized", "gaussian", "normalized"]
    assert layers_kinds([pre, post], window=True) == ["gaussian", "gaussian"]
    assert adapters.attention_width([pre], 0, False) is None


def test_finite_width_profile_of_a_long_context_encoder_is_the_closer_one():
    """Issue 19 through the adapters: pre-LN layers of width 64 with 2 heads at T = 1024 (T/d = 16), set by
    apply_init to beta = 1, alpha_sa = 0.3, weights redrawn Gaussian. With ``finite_width=True`` each layer's
    attention is taken at its own d and d_head, with normalized tokens (pre-LN); its largest deviation from torch
    is less than half the infinite-width one's (measured 0.043 against 0.095, 40 initialisations; at the first
    layer the finite-width theory is 0.008 low, as in README's deep stacks), and the infinite-width profile is
    rejected by the suite's check (Student t, Bonferroni, the declared O(1/d) allowance)."""
    T_long, d, seeds = 1024, 64, 40
    measured, finite, infinite = [], [], []
    for seed in range(seeds):
        torch.manual_seed(seed)
        layers = [nn.TransformerEncoderLayer(d, 2, 4 * d, dropout=0.0, batch_first=True, norm_first=True).double().eval()
                  for _ in range(3)]
        adapters.apply_init(gaussian_redraw(layers, 50 + seed), 1.0, 0.3, seq_len=T_long)
        x = torch.randn(2, T_long, d, dtype=torch.float64, generator=torch.Generator().manual_seed(100 + seed))
        measured.append(adapters.measure_cosine_profile(layers, x))
        finite.append(adapters.predict_cosine_profile(layers, T_long, finite_width=True))
        infinite.append(adapters.predict_cosine_profile(layers, T_long))
    measured, finite, infinite = Estimate(np.array(measured)), np.mean(finite, 0), np.mean(infinite, 0)
    assert np.max(np.abs(finite - measured.mean)) < 0.5 * np.max(np.abs(infinite - measured.mean)), (
        finite, infinite, measured.mean)
    with pytest.raises(AssertionError):
        assert_agrees(infinite, measured, allowance=finite_d_allowance(d, infinite), reason=FINITE_D_REASON,
                      skip_first=True, what="infinite-width theory at T/d = 16")
    with pytest.raises(ValueError, match="at most 512 positions"):
        adapters.predict_cosine_profile(layers, T_long, finite_width=True, mask="causal")

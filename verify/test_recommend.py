"""apply_init, recommend and BERT (issue 8, parts 3-4): the applied initialisation measures as predicted.

BERT tests need the optional ``transformers`` package (models are built from
``BertConfig`` at random initialisation; nothing is downloaded) and are skipped
with that reason without it.
"""

import copy
import dataclasses
import json
import math

import numpy as np
import pytest
import torch

import numeric
from verify import adapters, recommend_cli
from verify.adapters_read import read
from verify.recommend import EncoderConfig, pooled_values, recommend
from verify.montecarlo import Estimate
from verify.stats import assert_agrees, finite_d_allowance
from verify.testing import FINITE_D_REASON as GAUSS_REASON
from verify.testing import ISSUE_REASON, TOL, encoder_layers, frame_inputs


def _transformers():
    return pytest.importorskip("transformers", reason="transformers is not installed (optional extra: the BERT "
                                                      "checks need it; models come from BertConfig, no downloads)")


def _double(layers):
    return [layer.double() for layer in layers]


# --- apply_init is the theory's alpha model ---------------------------------------------------

def test_apply_init_post_ln_is_the_alpha_model():
    """LN(x + SA(x)/alpha) = LN(alpha x + SA(x)): the applied post-LN layer computes the theory's alpha form."""
    (layer,) = _double(encoder_layers(11, layers=1, d=64, heads=4, d_ff=128))
    beta, alpha, T_ = 0.8, 1.7, 32
    reference = adapters.apply_init(copy.deepcopy([layer]), beta, 1.0, seq_len=T_)[0]
    applied = adapters.apply_init(copy.deepcopy([layer]), beta, alpha, seq_len=T_)[0]
    x = frame_inputs(12, T=T_, d=64).double()
    with torch.no_grad():
        h = reference.norm1(alpha * x + reference.self_attn(x, x, x, need_weights=False)[0])
        want = reference.norm2(h + reference.linear2(reference.activation(reference.linear1(h))))
        got = applied(x)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)


def test_apply_init_pre_ln_is_the_alpha_model():
    """Pre-LN: both branches of layer l divided by alpha^l; outputs are the alpha model's / alpha^l."""
    layers = _double(encoder_layers(13, layers=3, d=64, heads=4, d_ff=128, norm_first=True))
    beta, alpha, T_ = 0.6, 1.5, 32
    reference = adapters.apply_init(copy.deepcopy(layers), beta, 1.0, seq_len=T_)
    applied = adapters.apply_init(copy.deepcopy(layers), beta, alpha, seq_len=T_)
    x = frame_inputs(14, T=T_, d=64).double()
    z, y = x, x
    with torch.no_grad():
        for index, (ref, app) in enumerate(zip(reference, applied), start=1):
            n = ref.norm1(z)
            z = alpha * z + ref.self_attn(n, n, n, need_weights=False)[0]
            z = z + ref.linear2(ref.activation(ref.linear1(ref.norm2(z))))
            y = app(y)
            torch.testing.assert_close(y * alpha ** index, z, rtol=1e-5, atol=1e-5)


def test_apply_init_sets_every_head_and_the_branch_scale():
    layers = encoder_layers(15, layers=2, d=64, heads=4, d_ff=128)
    before = read(layers)
    adapters.apply_init(layers, 1.1, 2.0, seq_len=50)
    after = read(layers)
    for b, a in zip(before, after):
        np.testing.assert_allclose(a.beta(50), 1.1, rtol=1e-6)
        np.testing.assert_allclose(a.sigma_v2, b.sigma_v2 / 4.0, rtol=1e-6)
        np.testing.assert_allclose(a.sigma_w2_out, b.sigma_w2_out, rtol=1e-12)


# --- recommend --------------------------------------------------------------------------------

STOCK = EncoderConfig(num_layers=24, d_model=256, nhead=4, dim_feedforward=512)


def test_recommend_keeps_a_trainable_stock_encoder():
    result = recommend(STOCK, 64)
    assert not result.changes_model and result.alpha_sa == 1.0
    assert result.beta == pytest.approx(0.5 / math.sqrt(math.log(64)), rel=0.03)
    assert 0 < result.alpha_critical < 1.0 / (1 + result.margin)
    assert result.rho_recommended[-1] <= 1 - result.eps
    assert "nothing to change" in str(result)


def test_recommend_agrees_with_numeric_critical_alpha_and_diagram():
    """The per-layer search equals numeric.critical_alpha on the model's own (layer-pooled) spec, finite T."""
    result = recommend(dataclasses.replace(STOCK, num_layers=48), 64)
    spec = adapters.spec_of(result.readings[0])
    expected = numeric.critical_alpha(spec, 48, beta=result.beta, T=64, alpha_mlp=1.0,
                                      **pooled_values(result.readings))
    assert result.alpha_critical == pytest.approx(expected, rel=1e-5)
    diagram = result.diagram(betas=[result.beta], alphas=[result.alpha_critical * 0.9, result.alpha_sa])
    assert diagram.phase[:, 0].tolist() == [1, 0]


def test_finite_width_recommendation_is_numerics_finite_width_theory():
    """recommend(finite_width=True) for pre-LN layers of width 64 with 2 heads at T = 1024 (LayerNorm'd tokens
    before every attention layer): its critical alpha_sa is numeric.critical_alpha(d=64, d_head=32,
    inputs="normalized") of the pooled spec, its entropy limit is where the normalized tokens' finite-width IPR
    (numeric.maps.ipr_function) of the first attention layer's input reaches 0.5, and both differ from the
    infinite-width answer (the limit by > 2 %)."""
    from numeric.maps import ipr_function

    config = EncoderConfig(num_layers=6, d_model=64, nhead=2, dim_feedforward=256, norm_first=True)
    finite, infinite = recommend(config, 1024, finite_width=True), recommend(config, 1024)
    spec = adapters.spec_of(finite.readings[0])
    expected = numeric.critical_alpha(spec, 6, beta=finite.beta, T=1024, alpha_mlp=1.0, d=64, d_head=32,
                                      inputs="normalized", **pooled_values(finite.readings))
    assert finite.alpha_critical == pytest.approx(expected, rel=1e-4)
    q_att, p_att, _ = adapters.theory_run(finite.readings[:1], 1024, finite_width=True).attention[0]
    ipr = ipr_function(1024, (64, 32, "normalized"))
    assert ipr(finite.beta_limit, float(q_att), float(p_att), 1024) == pytest.approx(0.5, rel=1e-5)
    assert finite.beta_limit > 1.02 * infinite.beta_limit
    assert finite.finite_width and "finite width (d = 64, d_head = 32)" in str(finite)


def test_config_and_built_model_give_the_same_recommendation():
    from_config = recommend(STOCK, 64)
    from_model = recommend(STOCK.build(seed=3), 64)
    assert from_model.beta == pytest.approx(from_config.beta, rel=0.02)
    assert from_model.alpha_critical == pytest.approx(from_config.alpha_critical, rel=0.05)


def paired_change(runs, apply):
    """Measured rho before minus after ``apply`` on the same model and inputs, one sample per (model, x).

    Pairing removes the seed-to-seed spread that both profiles share (the initial weights and
    inputs), so the change that apply_init makes is measured far more precisely than either profile.
    """
    changes = []
    for model, x in runs:
        before = adapters.measure_cosine_profile(model, x)
        apply(model)
        changes.append(before - adapters.measure_cosine_profile(model, x))
    return Estimate(np.array(changes))


#: Layers at which the applied recommendation is checked: a small Bonferroni family keeps the t
#: multiplier (few initialisations) near 6-10 instead of 15-26 over every layer.
CHECKED = {48: [12, 24, 36, 48], 60: [15, 30, 45, 60]}


def assert_change_measured(result, change, layers, allowance, reason, what):
    """The measured change of rho agrees with the predicted one, and differs from no change at all."""
    predicted = (result.rho_model - result.rho_recommended)[layers]
    assert_agrees(predicted, change[layers], allowance=allowance, reason=reason, what=what)
    with pytest.raises(AssertionError):   # the check can fail: apply_init doing nothing would be caught
        assert_agrees(np.zeros(len(layers)), change[layers], allowance=allowance, reason=reason, what="no change")


def test_applied_recommendation_measures_as_predicted():
    """A 48-layer post-LN stack with query/key scaled up 3x: both knobs change, and the change of rho
    that apply_init makes measures as recommend() predicted (paired over 8 initialisations; the
    allowance is the issue's relu target on each of the two profiles)."""
    T_, depth = 64, 48

    def build(seed):
        layers = encoder_layers(seed, layers=depth)
        d = layers[0].self_attn.embed_dim
        with torch.no_grad():
            for layer in layers:
                layer.self_attn.in_proj_weight[:2 * d].mul_(3.0)
        return layers

    result = recommend(build(500), T_)
    assert result.beta < result.beta_model and result.alpha_sa > 1.0
    runs = [(build(500 + s), frame_inputs(600 + s, T=T_, batch=2)) for s in range(8)]
    change = paired_change(runs, result.apply)
    assert_change_measured(result, change, CHECKED[depth], 2 * TOL["relu"], ISSUE_REASON + " (two profiles)",
                           "change of rho by apply_init")
    measured = adapters.profile_estimate(runs)
    assert_agrees(result.rho_recommended[CHECKED[depth]], measured[CHECKED[depth]], allowance=TOL["relu"],
                  reason=ISSUE_REASON, what="applied recommendation")
    assert measured.mean[-1] < 1 - result.eps


def test_pre_ln_recommendation_is_applied_layer_by_layer():
    """After apply_init a pre-LN stack's layers differ (branch / alpha^l): read per layer, same prediction."""
    layers = encoder_layers(21, layers=12, norm_first=True)
    result = recommend(layers, 64, margin=0.25)
    forced = adapters.theory_run(result.readings, 64, alpha_sa=1.8, beta=result.beta).rho
    adapters.apply_init(layers, result.beta, 1.8, seq_len=64)
    np.testing.assert_allclose(adapters.predict_cosine_profile(layers, 64), forced, atol=1e-4)
    with pytest.raises(ValueError, match="differs across layers"):
        pooled_values(read(layers))


def test_recommend_rejects_bad_arguments():
    with pytest.raises(ValueError, match="margin"):
        recommend(STOCK, 64, margin=-1)
    with pytest.raises(ValueError, match="seq_len"):
        recommend(STOCK, 1)
    for kwargs, match in [({"rho0": 1.5}, "rho0 must lie"), ({"rho0": -0.5}, "rho0 must lie"),
                          ({"rho0": 0.995}, "rank-collapsed before the first layer"),
                          ({"ipr_threshold": 1.5}, "ipr_threshold"), ({"q0": 0.0}, "q0 must be")]:
        with pytest.raises(ValueError, match=match):
            recommend(STOCK, 64, **kwargs)
    with pytest.raises(ValueError, match=r"ipr_threshold must lie in \(1/T, 1\)"):
        recommend(STOCK, 2)                      # the IPR of a row is at least 1/T = 0.5


def test_bert_sequence_longer_than_its_positions_is_refused():
    transformers = _transformers()
    config = transformers.BertConfig(num_hidden_layers=2, hidden_size=64, num_attention_heads=2, intermediate_size=128,
                                     max_position_embeddings=128)
    with pytest.raises(ValueError, match="exceeds the model's 128 position embeddings"):
        recommend(config, 256)


# --- command line -------------------------------------------------------------------------------

def test_cli_text_json_check_and_plot(capsys, tmp_path):
    args = ["--layers", "6", "--d-model", "64", "--heads", "2", "--d-ff", "128", "--seq-len", "32"]
    assert recommend_cli.main(args) == 0
    assert "recommended (margin 25%)" in capsys.readouterr().out
    assert recommend_cli.main(args + ["--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["depth"] == 6 and len(summary["rho_model"]) == 7
    assert recommend_cli.main(args + ["--check", "--norm-first"]) == 0
    out = capsys.readouterr().out
    assert "measured" in out and out.count("\n") > 8
    assert recommend_cli.main(args + ["--margin", "-2"]) == 2
    pytest.importorskip("matplotlib")
    png = tmp_path / "recommend.png"
    assert recommend_cli.main(args + ["--plot", str(png)]) == 0
    assert f"wrote {png}" in capsys.readouterr().out and png.stat().st_size > 10_000
    assert recommend_cli.main(["--layers", "0"]) == 2
    assert recommend_cli.main(["--heads", "3", "--d-model", "64"]) == 2
    assert "divisible by --heads" in capsys.readouterr().err


# --- BERT ----------------------------------------------------------------------------------------

def _bert(seed, layers=24, d=256, heads=4, d_ff=1024):
    from verify.recommend import build_bert
    transformers = _transformers()
    config = transformers.BertConfig(num_hidden_layers=layers, hidden_size=d, num_attention_heads=heads,
                                     intermediate_size=d_ff)
    return build_bert(config, seed)


def _ids(model, seed, T_=64, batch=2):
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, model.config.vocab_size, (batch, T_), generator=generator)


def test_reads_bert_default_init():
    """HF init: every weight N(0, 0.02^2), biases 0, LayerNorm eps 1e-12; post-LN, exact GELU."""
    model = _bert(0, layers=2)
    r = read(model)[0]
    d, s = 256, 0.02 ** 2
    assert (r.kind, r.norm_first, r.activation, r.heads, r.d_ff, r.eps_attention) == ("bert", False, "gelu", 4,
                                                                                      1024, 1e-12)
    np.testing.assert_allclose(r.score_scale, d * s, rtol=0.03)
    np.testing.assert_allclose([r.sigma_v2, r.sigma_w2, r.sigma_w2_out], [(d * s) ** 2, d * s, 1024 * s], rtol=0.03)
    assert r.sigma_b2 == r.sigma_b2_out == r.sigma_b2_att == 0.0


def test_bert_profile_matches_theory():
    """24 BERT layers (d 256) at HF's init, random token ids: theory (rho0 from the embedding tables) vs measurement."""
    T_ = 64
    models = [_bert(s) for s in range(8)]
    measured = adapters.profile_estimate((m, _ids(m, 100 + s)) for s, m in enumerate(models))
    states = [adapters.embedding_state(m, T_) for m in models]
    theory = np.mean([adapters.predict_cosine_profile(m, T_, rho0=r0, q0=q0) for m, (q0, r0) in zip(models, states)],
                     axis=0)
    assert theory[0] == pytest.approx(1 / 3, abs=0.02)  # the token-type row is shared by all tokens
    # The suite's O(1/d) allowance (<= 0.008 here) is stricter than the issue's 0.05 gelu target.
    assert_agrees(theory, measured, allowance=finite_d_allowance(256, theory), reason=GAUSS_REASON,
                  what="BERT rho profile (entry 0: embedding output)")


def test_bert_recommendation_measures_as_predicted():
    """60 BERT layers at HF's init sit inside the margin of rank collapse; the change of rho that the
    recommended alpha_sa makes, applied, measures as predicted (paired over 12 initialisations).

    The model is 128 wide with initializer_range 0.02 sqrt(768/128): every theory parameter (d s for
    the scores and linear1, d_ff s for linear2, (d s)^2 for the values) is then BERT-base's, at a sixth
    of the cost. At d = 128 the measured change is ~15 % smaller than predicted (0.098 against 0.120 at
    layer 30): the O(1/d) allowance of each of the two profiles covers it.
    """
    T_, layers = 64, CHECKED[60]
    transformers = _transformers()
    config = transformers.BertConfig(num_hidden_layers=60, hidden_size=128, num_attention_heads=2,
                                     intermediate_size=512, initializer_range=0.02 * math.sqrt(768 / 128),
                                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    result = recommend(config, T_)
    assert result.rho_model[-1] > 1 - 2 * result.eps
    assert result.alpha_critical > 1 / (1 + result.margin) and result.alpha_sa > 1.0
    assert result.rho_recommended[-1] < result.rho_model[-1] - 0.03
    from verify.recommend import build_bert
    runs = [(m, _ids(m, 200 + s, T_)) for s, m in enumerate(build_bert(config, s) for s in range(12))]
    change = paired_change(runs, result.apply)
    allowance = finite_d_allowance(128, result.rho_model[layers]) + finite_d_allowance(128,
                                                                                        result.rho_recommended[layers])
    assert_change_measured(result, change, layers, allowance, GAUSS_REASON + " (two profiles)",
                           "BERT: change of rho by apply_init")
    measured = adapters.profile_estimate(runs)
    assert_agrees(result.rho_recommended[layers], measured[layers], allowance=TOL["gelu"],
                  reason="issue 8's accuracy target for gelu", what="BERT after apply_init")


def test_bert_bad_input_is_named():
    model = _bert(0, layers=2).train()
    with pytest.raises(ValueError, match=r"encoder.layer.0.*dropout p=0.1 in training mode"):
        adapters.predict_cosine_profile(model, 64)
    model.eval()
    model.encoder.layer[1].intermediate.intermediate_act_fn = torch.nn.Hardswish()
    with pytest.raises(ValueError, match=r"encoder.layer.1.intermediate"):
        adapters.predict_cosine_profile(model, 64)


def test_figure_1d_quick(tmp_path):
    _transformers()
    pytest.importorskip("matplotlib")
    from verify.figures_bert import figure_1d
    path = tmp_path / "figure-1d.png"
    figure_1d(path, quick=True)
    assert path.stat().st_size > 10_000


@pytest.mark.parametrize("field, value, match", [
    ("num_layers", 0, "num_layers must be an integer >= 1"), ("d_model", -1, "d_model must be an integer >= 1"),
    ("activation", "tanh", "activation must be one of"), ("nhead", 3, "nhead = 3 must divide d_model"),
    ("layer_norm_eps", -1e-5, "layer_norm_eps must be >= 0"),
])
def test_encoder_config_is_checked_at_the_boundary(field, value, match):
    """num_layers = 0 ended in an IndexError with NumPy warnings, d_model = -1 and an activation the reader
    does not take in torch's own errors: now a ValueError naming the field, before anything is built."""
    with pytest.raises(ValueError, match=match):
        recommend(EncoderConfig(**{field: value}), 64)

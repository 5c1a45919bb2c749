"""The sigprop command line, through its entry point."""

import json
import subprocess
import sys

import numpy as np
import pytest

import numeric
from numeric.cli import main


def run(capsys, *argv):
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_help_lists_subcommands():
    out = subprocess.run([sys.executable, "-m", "numeric.cli", "--help"], capture_output=True, text=True).stdout
    for command in ("profile", "diagram", "alpha-c", "formula", "bench", "grad", "recommend", "figure"):
        assert command in out


def test_recommend_and_figure_1d_are_registered_without_importing_torch():
    code = ("import sys, numeric.cli as c; p = c.build_parser(); "
            "a = p.parse_args(['recommend', '--model', 'bert', '--layers', '60']); "
            "print(a.layers, a.model, 'torch' in sys.modules); p.parse_args(['figure', '1d'])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["60", "bert", "False"]


def test_console_script_is_installed():
    import shutil
    exe = shutil.which("sigprop") or str(__import__("pathlib").Path(sys.executable).with_name("sigprop"))
    out = subprocess.run([exe, "profile", "--depth", "2", "--json"], capture_output=True, text=True, check=True)
    assert len(json.loads(out.stdout)["rho"]) == 3


def test_profile_table_and_json(capsys):
    rc, out, _ = run(capsys, "profile", "--arch", "pre-ln", "--depth", "5", "--beta", "0.8", "--alpha_sa", "1.5")
    assert rc == 0 and out.count("\n") == 8
    rc, out, _ = run(capsys, "profile", "--arch", "pre-ln", "--depth", "5", "--beta", "0.8", "--alpha-sa", "1.5",
                     "--json")
    want = numeric.cosine_profile("pre-ln", 5, beta=0.8, alpha_sa=1.5)
    np.testing.assert_allclose(json.loads(out)["rho"], want)


def test_profile_plot(capsys, tmp_path):
    path = tmp_path / "p.png"
    rc, _, err = run(capsys, "profile", "--depth", "4", "--plot", str(path))
    assert rc == 0 and path.stat().st_size > 5000 and "wrote" in err


def test_diagram_writes_png_csv_and_summary(capsys, tmp_path):
    png, csv = tmp_path / "d.png", tmp_path / "d.csv"
    rc, out, _ = run(capsys, "diagram", "--depth", "10", "--betas", "0.2:2.5:12", "--alphas", "0:3:10",
                     "--out", str(png), "--csv", str(csv))
    summary = json.loads(out)
    assert rc == 0 and summary["grid"] == [10, 12] and sum(summary["phases"].values()) == 120
    assert png.stat().st_size > 5000 and len(csv.read_text().splitlines()) == 121


def test_alpha_c(capsys):
    rc, out, _ = run(capsys, "alpha-c", "--depth", "30", "--beta", "0.5,1.0", "--json")
    got = json.loads(out)["critical_alpha"]
    np.testing.assert_allclose(got, numeric.critical_alpha("post-ln", 30, beta=[0.5, 1.0]))


@pytest.mark.parametrize("form, marker", [("latex", r"\begin{aligned}"), ("python", "def block(")])
def test_formula(capsys, form, marker):
    rc, out, _ = run(capsys, "formula", "--arch", "gain-post-ln", "--form", form)
    assert rc == 0 and marker in out


def test_bench_json_small(capsys):
    """Every rate is block updates per second of its own timed interval in this run: the fused and NumPy
    sides count grid^2 x depth updates, the naive side naive_points x depth, so the ratio compares equal
    units of work (a rate per grid point or per diagram on either side fails). How fast is not a unit
    test's claim: ``sigprop bench`` reports it."""
    grid, depth, points = 32, 5, 20
    rc, out, _ = run(capsys, "bench", "--json", "--grid", str(grid), "--depth", str(depth), "--naive-points",
                     str(points), "--finite-T", "64", "--skip", "latency,memory,sweep")
    assert rc == 0
    result = json.loads(out)
    assert result["grid"] == [grid, grid] and result["depth"] == depth and result["naive_points"] == points
    assert result["compiled_seconds"] > 0 and result["naive_seconds"] > 0 and result["numpy_seconds"] > 0
    compiled = grid * grid * depth / result["compiled_seconds"]
    naive = points * depth / result["naive_seconds"]
    assert result["compiled_updates_per_s"] == pytest.approx(compiled, rel=1e-12)
    assert result["numpy_updates_per_s"] == pytest.approx(grid * grid * depth / result["numpy_seconds"], rel=1e-12)
    assert result["naive_updates_per_s"] == pytest.approx(naive, rel=1e-12)
    assert result["ratio"] == pytest.approx(compiled / naive, rel=1e-12)
    assert result["finite_T"] == 64 and result["finite_T_updates_per_s"] > 0
    assert result["finite_T_cost_ratio"] == pytest.approx(result["finite_T_seconds"] / result["compiled_seconds"])


def test_bench_skip_names_the_parts(capsys):
    with pytest.raises(SystemExit):
        run(capsys, "bench", "--skip", "latency,gpu")
    assert "--skip" in capsys.readouterr().err


@pytest.mark.parametrize("argv, match", [
    (["profile", "--depth", "-1"], "depth"),
    (["profile", "--beta", "0"], "beta"),
    (["profile", "--sigma_w2", "-1"], "sigma_w2"),
    (["diagram", "--eps", "1.5", "--depth", "2"], "eps"),
    (["alpha-c", "--rho0", "2"], "rho0"),
    (["figure", "7"], "figure"),
    (["grad", "--d", "0"], "d"),
    (["grad", "--T", "1"], "T"),
    (["grad", "--p", "1"], "p"),
    (["grad", "--q", "0.5", "--p", "0.7"], "p"),
    (["grad", "--sigma_v2", "-1"], "sigma_v2"),
    (["grad", "--beta", "0,1"], "beta"),
    (["profile", "--T", "64", "--groups", "16"], "--groups applies to a masked stack"),
    (["profile", "--T", "64", "--causal", "--groups", "4"], "groups must be an integer >= 8"),
    (["profile", "--T", "64", "--d", "0"], "d must be"),
    (["profile", "--T", "64", "--d", "64", "--d-head", "48"], "d_head = 48 must divide d = 64"),
    (["profile", "--d", "64"], "needs a finite T"),
    (["alpha-c", "--T", "64", "--d", "64", "--mask", "sliding:8"], "not in critical_alpha or diagrams"),
    (["profile", "--T", "80", "--d", "64", "--mask", "sliding:8"], "at most 64 positions"),
    (["profile", "--T", "600", "--d", "64", "--causal"], "at most 512 positions"),
])
def test_bad_input_is_a_clear_error(capsys, argv, match):
    rc, _, err = run(capsys, *argv)
    assert rc == 2 and match in err and "error" in err


def test_unknown_choice_is_rejected_by_argparse(capsys):
    with pytest.raises(SystemExit):
        main(["profile", "--arch", "mid-ln"])
    assert "invalid choice" in capsys.readouterr().err


def test_grad_json_is_the_numeric_theory(capsys):
    rc, out, _ = run(capsys, "grad", "--beta", "0.5,2", "--d", "64", "--T", "256", "--p", "0.3", "--q", "1.2",
                     "--sigma-v2", "0.8", "--json")
    got = json.loads(out)
    kw = dict(d=64, T=256, q=1.2, p=0.3, sigma_v2=0.8)
    assert rc == 0 and got["finite_T"] is True and got["beta"] == [0.5, 2.0]
    np.testing.assert_allclose(got["query"], numeric.query_grad_sq_norm([0.5, 2.0], **kw), rtol=1e-14)
    np.testing.assert_allclose(got["key"], numeric.key_grad_sq_norm([0.5, 2.0], **kw), rtol=1e-14)
    np.testing.assert_allclose(got["value"], numeric.value_grad_sq_norm([0.5, 2.0], **kw), rtol=1e-14)
    assert got["beta_c"] == pytest.approx(np.sqrt(2 / (1.2 * 0.9)))
    np.testing.assert_allclose(got["collapse"], np.array(got["query"]) / (256 * 64**2 * np.sqrt(np.log(256)) * 0.8
                                                                         * 1.2 * 0.9**2), rtol=1e-13)


def test_grad_table_and_asymptotic(capsys):
    rc, out, _ = run(capsys, "grad", "--beta", "0.5:3:6", "--asymptotic")
    lines = [line for line in out.splitlines() if not line.startswith("#")]
    assert rc == 0 and len(lines) == 7 and lines[0].split() == ["beta", "query", "key", "value", "collapse"]
    assert "T -> oo" in out and float(lines[1].split()[1]) == 0.0  # beta = 0.5 < beta_c: spread attention
    rc, out, _ = run(capsys, "grad", "--beta", "0.5")
    assert rc == 0 and float(out.splitlines()[-1].split()[1]) > 0  # finite T: small but not zero


def test_grad_plot(capsys, tmp_path):
    path = tmp_path / "g.png"
    rc, _, err = run(capsys, "grad", "--beta", "0.2:4:12", "--plot", str(path))
    assert rc == 0 and path.stat().st_size > 5000 and "wrote" in err


def test_grad_help_explains_every_option():
    from numeric.cli import build_parser
    commands = next(a for a in build_parser()._actions if a.dest == "command").choices
    options = {a.dest: a.help for a in commands["grad"]._actions if a.dest != "help"}
    assert set(options) == {"beta", "d", "T", "q", "p", "sigma_v2", "asymptotic", "json", "plot"}
    assert all(text and "\n" not in text for text in options.values())


def test_causal_profile_with_groups_follows_every_position(capsys):
    """--groups K carries the state on K position groups: the printed rho is the full theory's within 2e-3."""
    argv = ["profile", "--causal", "--T", "96", "--depth", "6", "--beta", "1.2", "--json"]
    full = json.loads(run(capsys, *argv)[1])
    grouped = json.loads(run(capsys, *argv, "--groups", "24")[1])
    np.testing.assert_allclose(grouped["rho"], full["rho"], atol=2e-3)
    assert full["rho"][-1] - full["rho"][0] > 0.3


def test_figure_help_describes_every_registered_figure(capsys):
    """``sigprop figure --help`` lists each figure the registry knows (numeric's and the entry points') with
    its description: a figure registered without a line in numeric.figures.DESCRIPTIONS fails here."""
    import re

    import pytest

    from numeric import cli, figures

    assert set(figures.names()) <= set(figures.DESCRIPTIONS)
    with pytest.raises(SystemExit):
        cli.main(["figure", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for name in figures.names():
        assert re.search(rf"\b{re.escape(name)} \(", text), name


def test_finite_width_profile_and_alpha_c_from_the_command_line(capsys):
    """--d/--d-head reach the finite-width theory: at T/d = 8 with a strong attention branch the profile and
    alpha_c are numeric's finite-width ones (which verify/test_width.py checks against torch), and the profile
    differs from the infinite-width one by more than 0.05."""
    common = ["--arch", "pre-ln", "--depth", "3", "--T", "1024", "--sigma_v2", "4", "--alpha_sa", "0.2", "--json"]
    _, out, _ = run(capsys, "profile", *common, "--d", "128", "--d-head", "64")
    finite = json.loads(out)
    _, out, _ = run(capsys, "profile", *common)
    infinite = np.array(json.loads(out)["rho"])
    assert (finite["d"], finite["d_head"]) == (128, 64)
    expected = numeric.cosine_profile("pre-ln", 3, beta=1.0, T=1024, sigma_v2=4.0, alpha_sa=0.2, d=128, d_head=64)
    assert np.allclose(finite["rho"], expected, rtol=1e-9, atol=1e-12)
    assert np.abs(np.array(finite["rho"]) - infinite).max() > 0.05
    _, out, _ = run(capsys, "alpha-c", "--arch", "pre-ln", "--depth", "4", "--T", "1024", "--sigma_v2", "4",
                    "--beta", "1", "--d", "128", "--d-head", "64", "--json")
    alpha = json.loads(out)["critical_alpha"][0]
    assert alpha == pytest.approx(float(numeric.critical_alpha("pre-ln", 4, beta=1.0, T=1024, sigma_v2=4.0, d=128,
                                                               d_head=64)), rel=1e-6)


def test_normalized_inputs_from_the_command_line(capsys):
    """--inputs normalized reaches the causal profile with tokens of fixed norm (the GPT-2 test's table, d = 64,
    T <= 256): the profile is numeric's with inputs="normalized" and differs from the Gaussian-token one, and so is
    an encoder's (the same table at n_t = n_u = T); without --d it is refused with the parameter named (exit 2)."""
    common = ["--arch", "pre-ln", "--depth", "2", "--T", "256", "--causal", "--groups", "16", "--d", "64", "--d-head",
              "32", "--sigma_v2", "4", "--alpha_sa", "0.2", "--json"]
    _, out, _ = run(capsys, "profile", *common, "--inputs", "normalized")
    normalized = json.loads(out)
    _, out, _ = run(capsys, "profile", *common)
    gaussian = np.array(json.loads(out)["rho"])
    expected = numeric.cosine_profile("pre-ln", 2, beta=1.0, T=256, mask="causal", groups=16, sigma_v2=4.0,
                                      alpha_sa=0.2, d=64, d_head=32, inputs="normalized")
    assert np.allclose(normalized["rho"], expected, rtol=1e-9, atol=1e-12)
    assert np.abs(np.array(normalized["rho"]) - gaussian).max() > 1e-3
    code, _, err = run(capsys, "profile", "--arch", "pre-ln", "--depth", "2", "--T", "64", "--causal", "--inputs",
                       "normalized")
    assert code == 2 and "--inputs normalized needs --d" in err
    encoder = ["--arch", "pre-ln", "--depth", "2", "--T", "256", "--d", "64", "--d-head", "32", "--json"]
    _, out, _ = run(capsys, "profile", *encoder, "--inputs", "normalized")
    expected = numeric.cosine_profile("pre-ln", 2, beta=1.0, T=256, d=64, d_head=32, inputs="normalized")
    assert np.allclose(json.loads(out)["rho"], expected, rtol=1e-9, atol=1e-12)
    _, out, _ = run(capsys, "profile", *encoder)
    assert np.abs(np.array(json.loads(out)["rho"]) - expected).max() > 1e-3

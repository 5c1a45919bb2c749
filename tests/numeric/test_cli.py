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
    for command in ("profile", "diagram", "alpha-c", "formula", "bench", "figure"):
        assert command in out


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
    rc, out, _ = run(capsys, "bench", "--json", "--grid", "32", "--depth", "5", "--naive-points", "20", "--finite-T", "64")
    result = json.loads(out)
    for key in ("compiled_updates_per_s", "naive_updates_per_s", "ratio"):
        assert result[key] > 0
    assert result["ratio"] == pytest.approx(result["compiled_updates_per_s"] / result["naive_updates_per_s"])
    assert result["finite_T"] == 64 and result["finite_T_cost_ratio"] > 0


@pytest.mark.parametrize("argv, match", [
    (["profile", "--depth", "-1"], "depth"),
    (["profile", "--beta", "0"], "beta"),
    (["profile", "--sigma_w2", "-1"], "sigma_w2"),
    (["diagram", "--eps", "1.5", "--depth", "2"], "eps"),
    (["alpha-c", "--rho0", "2"], "rho0"),
    (["figure", "7"], "figure"),
])
def test_bad_input_is_a_clear_error(capsys, argv, match):
    rc, _, err = run(capsys, *argv)
    assert rc == 2 and match in err and "error" in err


def test_unknown_choice_is_rejected_by_argparse(capsys):
    with pytest.raises(SystemExit):
        main(["profile", "--arch", "mid-ln"])
    assert "invalid choice" in capsys.readouterr().err

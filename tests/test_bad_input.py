"""Bad input as a user meets it on the command line: each case exits with status 2 (3 for a bug in ltn) and one
message that names the file, the field and the cause, with no traceback, before anything is computed."""

import os
import subprocess
import sys

import numpy as np
import pytest

from ltn.cli import EXIT_BAD_INPUT, EXIT_INTERNAL_ERROR, main

CONFIG = """name = "bad"
task = "regression"
data = { kind = "sparse_gaussian", n = 4, d = 8 }
network = { kind = "diagonal", depth = 2 }
"""


@pytest.fixture
def no_compute(monkeypatch):
    """Fail the test if `ltn run` gets as far as solving anything."""
    def refuse(*args, **kwargs):
        raise AssertionError("ltn run started computing")

    monkeypatch.setattr("ltn.sweep.run_sweep", refuse)


def config(tmp_path, text=CONFIG, name="config.toml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def refused(capsys, argv, *needles, status=EXIT_BAD_INPUT):
    """Run `ltn argv`; assert the exit status, that stderr names every needle and holds no traceback."""
    assert main(argv) == status
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    for needle in needles:
        assert needle in err, (needle, err)
    return err


@pytest.mark.parametrize("command", ["validate", "run"])
def test_a_directory_or_a_non_utf8_file_is_not_a_config(tmp_path, capsys, command, no_compute):
    refused(capsys, [command, str(tmp_path)], f"{tmp_path}: is a directory")
    binary = tmp_path / "latin1.toml"
    binary.write_bytes('name = "caf\xe9"\n'.encode("latin-1"))
    refused(capsys, [command, str(binary)], f"{binary}: not UTF-8 text", "byte 0xe9 at line 1, column 12")


def test_the_same_config_twice_is_refused_before_loading(tmp_path, capsys, no_compute, monkeypatch):
    path = config(tmp_path)
    monkeypatch.chdir(tmp_path)
    refused(capsys, ["run", path, "./config.toml"], "./config.toml: this config is given twice", f"{path!r}")


@pytest.mark.parametrize("assignment, needle", [
    ("experiment.9.x=1", "experiment is a list of 2 entries; '9' is not one of its indices (0 to 1)"),
    ("experiment.first.task=x", "experiment is a list of 2 entries; 'first' is not one of its indices"),
    ("seeds.2=5", "seeds is a list of 2 entries; '2' is not one of its indices"),
    ("flow..rtol=1e-6", "empty key or key part"),
    ("flow.rtol", "expected key=value"),
    ("network.depth.x=3", "'depth' is not a table"),
])
def test_malformed_set_names_the_assignment(tmp_path, capsys, assignment, needle, no_compute):
    two = "seeds = [0, 1]\n[[experiment]]\n" + CONFIG.replace('name = "bad"', 'name = "a"') + \
          "[[experiment]]\n" + CONFIG.replace('name = "bad"', 'name = "b"')
    path = config(tmp_path, two)
    for command in ("validate", "run"):
        refused(capsys, [command, path, "--set", assignment], f"--set {assignment}: {needle}")


def test_indexing_experiments_of_a_config_without_them(tmp_path, capsys):
    refused(capsys, ["validate", config(tmp_path), "--set", "experiment.0.seeds=[1]"],
            "this config has no [[experiment]] tables to index")


@pytest.mark.parametrize("setting, needle", [
    ("check = { cosine = 2.0 }", "check.cosine: must be <= 1 (a cosine threshold must lie in (0, 1])"),
    ("check = { cosine = 0.0 }", "check.cosine: must be positive"),
    ("flow = { checkpoints = 100_000_000 }", "flow.checkpoints: must be <= 10000"),
    ("flow = { checkpoints = 1e8 }", "flow.checkpoints: must be an integer"),
    ("seeds = [1180591620717411303424]", "seeds: must be integers in [0, 2**32)"),
    ("seeds = [4294967296]", "seeds: must be integers in [0, 2**32)"),
    ("seeds = [-1]", "seeds: must be integers in [0, 2**32)"),
    ('name = "/tmp/elsewhere"', "name: must be a simple file name"),
    ('name = "../elsewhere"', "name: must be a simple file name"),
    ('name = ".."', "name: must be a simple file name"),
])
def test_guards_refuse_before_compute(tmp_path, capsys, setting, needle, no_compute):
    text = CONFIG.replace('name = "bad"\n', "") if setting.startswith("name") else CONFIG
    path = config(tmp_path, f"{setting}\n{text}")
    for command in ("validate", "run"):
        refused(capsys, [command, path], f"{path}: {needle}")


def test_guards_accept_their_boundaries(tmp_path, capsys):
    path = config(tmp_path, CONFIG + "seeds = [0, 4294967295]\ncheck = { cosine = 1.0 }\n"
                  "flow = { checkpoints = 10000 }\n")
    assert main(["validate", path]) == 0


def test_depth_is_bounded(tmp_path, capsys, no_compute):
    path = config(tmp_path, CONFIG.replace("depth = 2", "depth = 100"))
    refused(capsys, ["run", path], f"{path}: network.depth: must be <= 32 (compile time grows with depth), got 100")
    widths = config(tmp_path, CONFIG.replace('"diagonal", depth = 2', f'"fully_connected", widths = {[2] * 40}'))
    refused(capsys, ["run", widths], "network.widths: must hold at most 31 entries")
    assert main(["validate", config(tmp_path, CONFIG.replace("depth = 2", "depth = 32"))]) == 0


def test_a_huge_grid_is_refused_without_expanding_it(tmp_path, capsys, monkeypatch, no_compute):
    def refuse(*args, **kwargs):
        raise AssertionError("the grid was expanded")

    monkeypatch.setattr("ltn.sweep._grid.expand_experiment", refuse)
    scales = ", ".join(str(1 + i / 1000) for i in range(1000))
    path = config(tmp_path, CONFIG.replace("depth = 2", f"depth = {list(range(1, 11))}")
                  + f"init = {{ scale = [{scales}] }}\nseeds = {list(range(1000))}\n")
    for command in ("validate", "run"):
        refused(capsys, [command, path], f"{path}: grid: holds 10,000,000 runs (bad: network.depth x10 * "
                "init.scale x1000 * seeds x1000), more than the 100,000")


def test_names_that_share_file_names_are_refused(tmp_path, capsys, no_compute):
    experiments = "".join(f"[[experiment]]\n{CONFIG.replace('bad', name)}" for name in ("diag L=2", "diag L_2"))
    refused(capsys, ["run", config(tmp_path, experiments)], "experiments 'diag L=2' and 'diag L_2' would write the "
            "same files (both become 'diag_L_2' in file names)")
    # Across two configs run into one folder, and equal names too.
    one = config(tmp_path, CONFIG.replace('"bad"', '"same"'), "one.toml")
    two = config(tmp_path, CONFIG.replace('"bad"', '"same"') + "seeds = [5]\n", "two.toml")
    refused(capsys, ["run", one, two], f"{two}: experiment 'same' clashes with experiment 'same' of {one}")


NPZ_CASES = [
    ("complex X", lambda X, y: dict(X=X + 1j, y=y), "array 'X' is complex (dtype complex128); ltn needs real data"),
    ("non-finite X", lambda X, y: dict(X=np.where(X > 1, np.inf, X), y=y), "X has"),
    ("non-finite y", lambda X, y: dict(X=X, y=np.array([0.0, np.nan, 1.0, 2.0])),
     "y has 1 NaN or infinite entries, the first y[1] = nan"),
    ("y of the wrong length", lambda X, y: dict(X=X, y=y[:3]), "y must have shape (4,) to match X (4, 8)"),
    ("X a vector", lambda X, y: dict(X=X[0], y=y), "X must be a matrix (n, d), got shape (8,)"),
    ("no rows", lambda X, y: dict(X=X[:0], y=y[:0]), "X must have at least one row and one column"),
    ("strings", lambda X, y: dict(X=X.astype(str), y=y), "array 'X' must be numeric"),
    ("no y", lambda X, y: dict(X=X), "lacks array(s) ['y']"),
]


@pytest.mark.parametrize("case, arrays, needle", NPZ_CASES, ids=[c[0] for c in NPZ_CASES])
def test_bad_npz_data_is_named(tmp_path, capsys, case, arrays, needle, no_compute):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "data.npz", **arrays(rng.standard_normal((4, 8)), rng.standard_normal(4)))
    path = config(tmp_path, CONFIG.replace('kind = "sparse_gaussian", n = 4, d = 8', 'kind = "npz", path = "data.npz"'))
    refused(capsys, ["run", path], f"data file '{tmp_path / 'data.npz'}'", needle)


@pytest.mark.parametrize("content, needle", [(b"", "is empty"), (b"X,y\n1,2\n", "is not an .npz archive"),
                                              (None, "is not an .npz archive")])
def test_an_empty_or_non_zip_npz_file_is_named(tmp_path, capsys, content, needle):
    target = tmp_path / "data.npz"
    if content is None:  # a single array saved with np.save under an .npz name
        with open(target, "wb") as handle:
            np.save(handle, np.ones((4, 8)))
    else:
        target.write_bytes(content)
    path = config(tmp_path, CONFIG.replace('kind = "sparse_gaussian", n = 4, d = 8', 'kind = "npz", path = "data.npz"'))
    refused(capsys, ["validate", path], f"data file '{target}' {needle}")


def test_results_errors_and_os_errors_are_bad_input(tmp_path, capsys):
    path = config(tmp_path)
    (tmp_path / "a-file").write_text("")
    refused(capsys, ["run", path, "--out", str(tmp_path / "a-file"), "--no-progress"], "ltn run: ",
            str(tmp_path / "a-file"))


@pytest.mark.parametrize("debug", [[], ["--debug"]])
def test_an_internal_error_is_one_line_and_debug_prints_the_traceback(tmp_path, capsys, monkeypatch, debug):
    def broken(*args, **kwargs):
        raise RuntimeError("an invariant broke\nsecond line")

    monkeypatch.setattr("ltn.sweep.run_sweep", broken)
    path = config(tmp_path)
    if not debug:
        err = refused(capsys, ["run", path, "--no-progress"], "ltn run: internal error (RuntimeError: an invariant "
                      "broke); run with --debug for the traceback", status=EXIT_INTERNAL_ERROR)
        assert "second line" not in err
        return
    for argv in (["--debug", "run", path], ["run", path, "--debug"]):  # before or after the command
        assert main(argv) == EXIT_INTERNAL_ERROR
        err = capsys.readouterr().err
        assert "Traceback" in err and "RuntimeError: an invariant broke" in err and "run with --debug" not in err


def test_usage_errors_exit_2_and_help_lists_the_exit_codes(capsys):
    with pytest.raises(SystemExit) as info:
        main(["run", "--no-such-option"])
    assert info.value.code == 2
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    assert "3  internal error" in capsys.readouterr().out


def test_params_on_another_device_than_the_data_are_named():
    """Two host devices exist only when XLA is told so before it starts: a fresh interpreter."""
    code = """
import jax, jax.numpy as jnp, ltn
net = ltn.Diagonal(3, 2)
params = tuple(jax.device_put(p, jax.devices()[1]) for p in net.init(jax.random.PRNGKey(0), 1.0))
try:
    net.apply(params, jax.device_put(jnp.ones((2, 3)), jax.devices()[0]))
except ValueError as error:
    print(error)
try:  # the flow checks before it traces anything
    ltn.gradient_flow(net, params, jax.device_put(jnp.ones((2, 3)), jax.devices()[0]), jnp.ones(2))
except ValueError as error:
    print("flow:", error)
print(net.apply(params, jax.device_put(jnp.ones((2, 3)), jax.devices()[1])).shape)
"""
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    assert ("the arrays are committed to different devices (params[0] on ['cpu:1']; params[1] on ['cpu:1']; "
            "X on ['cpu:0'])") in result.stdout
    assert "flow: " in result.stdout and result.stdout.count("committed to different devices") == 2
    assert result.stdout.strip().endswith("(2,)")

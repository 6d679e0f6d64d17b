"""The persistent caches: where they live, how they are turned off, that a second process reuses what the first
one compiled (judged by JAX's own cache events, not by timing) and traced (judged by ltn's trace count), and that
a program traced from other values is never reused."""

import json
import os
import subprocess
import sys

import jax
import pytest

import ltn
from ltn._cache import ENV_VAR, cache_dir
from ltn.cli import build_parser


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return monkeypatch


def test_cache_dir_defaults_to_home_cache(clean_env, tmp_path):
    assert cache_dir() == str(tmp_path / "home" / ".cache" / "ltn")


def test_cache_dir_follows_xdg_cache_home(clean_env, tmp_path):
    clean_env.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == str(tmp_path / "xdg" / "ltn")


@pytest.mark.parametrize("value", ["", "relative/cache"])
def test_cache_dir_ignores_an_empty_or_relative_xdg_cache_home(clean_env, tmp_path, value):
    clean_env.setenv("XDG_CACHE_HOME", value)  # the XDG rule: only an absolute path counts
    assert cache_dir() == str(tmp_path / "home" / ".cache" / "ltn")


def test_ltn_cache_dir_wins_over_xdg(clean_env, tmp_path):
    clean_env.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    clean_env.setenv(ENV_VAR, str(tmp_path / "mine"))
    assert cache_dir() == str(tmp_path / "mine")


def test_empty_ltn_cache_dir_turns_the_cache_off(clean_env, tmp_path):
    clean_env.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    clean_env.setenv(ENV_VAR, "")
    before = jax.config.jax_compilation_cache_dir
    assert cache_dir() is None
    assert ltn.enable_compilation_cache() is None
    assert jax.config.jax_compilation_cache_dir == before  # nothing switched on


def test_a_folder_that_cannot_be_used_leaves_the_cache_off(clean_env, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    before = jax.config.jax_compilation_cache_dir
    with pytest.warns(UserWarning, match="compilation cache off: cannot use the folder"):
        assert ltn.enable_compilation_cache(blocker / "cache") is None
    assert jax.config.jax_compilation_cache_dir == before


@pytest.mark.parametrize("argv", [["--no-cache", "validate", "x.toml"], ["validate", "x.toml", "--no-cache"],
                                  ["--no-cache", "run"], ["report", "folder", "--no-cache"]])
def test_no_cache_flag_before_or_after_the_command(argv):
    assert build_parser().parse_args(argv).no_cache is True


def test_cache_is_on_unless_asked_off():
    assert build_parser().parse_args(["run"]).no_cache is False


# A fresh process: counts JAX's compile requests and persistent-cache events while it compiles a jitted
# function and runs one eager operation (a program that compiles in well under JAX's default threshold of one
# second, so it is cached only because ltn lowers that threshold to zero).
WORKER = """
import json, sys
from collections import Counter
import jax
from jax import monitoring
import ltn

events = Counter()
monitoring.register_event_listener(lambda event, **kwargs: events.update([event.rsplit("/", 1)[-1]]))
path = {enable}
f = jax.jit(lambda x: jax.numpy.cos(x) @ x)
x = jax.numpy.arange(6.0).reshape(2, 3)
float(f(x.T @ x).sum() + jax.numpy.sin(x).sum())
print(json.dumps({{"path": path, "config": jax.config.jax_compilation_cache_dir, **events}}))
"""


def _worker(cache: str | None, enable: str) -> dict:
    env = {key: value for key, value in os.environ.items() if key != ENV_VAR}
    if cache is not None:
        env[ENV_VAR] = cache
    output = subprocess.run([sys.executable, "-c", WORKER.format(enable=enable)], env=env, check=True,
                            capture_output=True, text=True).stdout
    return json.loads(output.splitlines()[-1])


def test_a_second_process_compiles_nothing_new(tmp_path):
    cache = str(tmp_path / "cache")
    first = _worker(cache, "ltn.enable_compilation_cache()")
    assert first["path"] == first["config"] == cache
    assert first["compile_requests_use_cache"] >= 2  # the jitted function and the eager sin, at least
    assert first.get("cache_hits", 0) == 0
    assert first["cache_misses"] == first["compile_requests_use_cache"]
    entries = [name for name in os.listdir(cache) if not name.startswith(".")]
    assert len(entries) >= first["cache_misses"]  # every program written, the quick ones too

    second = _worker(cache, "ltn.enable_compilation_cache()")
    assert second["compile_requests_use_cache"] == first["compile_requests_use_cache"]
    assert second["cache_hits"] == second["compile_requests_use_cache"]
    assert second.get("cache_misses", 0) == 0


def test_library_import_alone_does_not_cache(tmp_path):
    cache = str(tmp_path / "cache")
    report = _worker(cache, "None")  # LTN_CACHE_DIR is set, but nobody enables the cache
    assert report["config"] is None
    assert report.get("cache_hits", 0) == report.get("cache_misses", 0) == 0
    assert not os.path.exists(cache)


def test_explicit_path_beats_the_environment(tmp_path):
    report = _worker("", f"ltn.enable_compilation_cache({str(tmp_path / 'explicit')!r})")
    assert report["path"] == report["config"] == str(tmp_path / "explicit")
    assert report["cache_misses"] == report["compile_requests_use_cache"] >= 2


# One flow in a fresh process with the caches in argv[1]: an odeco network whose bases are drawn from argv[2] (the
# same shapes for every seed: only the values, closed over by the program, tell two networks apart); with argv[3]
# "krylov", a few Newton-Krylov steps on a diagonal network above CHORD_MAX_PARAMETERS instead (lineax's GMRES
# calls LAPACK routines that JAX exports only on request).
FLOW_WORKER = """
import json, sys
import jax
import numpy as np
import ltn
from ltn.flow import _gradient_flow

ltn.enable_compilation_cache(sys.argv[1])
rng = np.random.default_rng(int(sys.argv[2]))
bases = tuple(np.linalg.qr(rng.standard_normal((4, 4)))[0] for _ in range(2))
net = ltn.Odeco(np.eye(4), bases)
X = np.random.default_rng(0).standard_normal((3, 4))
y = X @ np.array([1.0, 0.0, -0.5, 0.0])
params0 = net.init(jax.random.PRNGKey(0), scale=0.3)
result = ltn.gradient_flow(net, params0, X, y, solver="tsit5", checkpoints=8)
if sys.argv[3] == "krylov":
    net = ltn.Diagonal(251, 2)
    X = np.random.default_rng(0).standard_normal((3, 251))
    result = ltn.gradient_flow(net, net.init(None, 0.1, kind="theorem"), X, X[:, 0], solver="kvaerno5",
                               max_steps=5, checkpoints=8)
print(json.dumps({"traced": _gradient_flow.TRACE_COUNT["flow"], "beta": np.asarray(result.beta).tolist(),
                  "steps": int(result.stats.steps), "status": int(result.status)}))
"""


def _flow_worker(cache: str, seed: int, solver: str = "explicit") -> dict:
    output = subprocess.run([sys.executable, "-c", FLOW_WORKER, cache, str(seed), solver], check=True,
                            capture_output=True, text=True).stdout
    return json.loads(output.splitlines()[-1])


def test_a_second_process_traces_nothing_and_gets_the_same_flow(tmp_path):
    cache = str(tmp_path / "cache")
    first = _flow_worker(cache, seed=0)
    assert first["traced"] == 1
    assert os.listdir(os.path.join(cache, "programs"))
    second = _flow_worker(cache, seed=0)
    assert second["traced"] == 0  # the flow's program read back: neither traced nor lowered
    assert second == {**first, "traced": 0}  # bit for bit

    # Negative control: another network of the same shapes is traced anew, never served the first one's program.
    other = _flow_worker(cache, seed=1)
    assert other["traced"] == 1
    assert other["beta"] != first["beta"]

    # A damaged entry is traced again and replaced, with the same results.
    for name in os.listdir(os.path.join(cache, "programs")):
        with open(os.path.join(cache, "programs", name), "wb") as file:
            file.write(b"not a program")
    repaired = _flow_worker(cache, seed=0)
    assert repaired == first
    assert _flow_worker(cache, seed=0) == {**first, "traced": 0}


def test_newton_krylov_programs_are_kept_too(tmp_path):
    """A Newton-Krylov leg (GMRES through lineax: LAPACK's `ormqr`, which JAX exports only with its custom-call
    check off) is read back by a second process like any other program, with the same results."""
    from ltn.flow._solvers import CHORD_MAX_PARAMETERS

    assert 2 * 251 > CHORD_MAX_PARAMETERS
    cache = str(tmp_path / "cache")
    first = _flow_worker(cache, seed=0, solver="krylov")
    assert first["traced"] == 2 and first["steps"] == 5  # the odeco flow's program and the Krylov one
    assert _flow_worker(cache, seed=0, solver="krylov") == {**first, "traced": 0}


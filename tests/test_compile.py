"""`ltn._compile.jit`: ltn's programs are compiled with the XLA options chosen for the backend (a brief program with
LLVM's O0), and a JAX without those options gets its defaults instead of an error."""

import jax
import jax.numpy as jnp
import pytest

from ltn import _compile
from ltn._compile import compiler_options, jit


def _loop(x, A):
    """A while loop with a scalar counter: XLA's CPU fusion emitters wrap each such scalar op in a kernel of its
    own (`wrapped_add`), its elemental emitters do not."""

    def body(carry):
        i, v = carry
        return i + 1, jnp.tanh(A @ v) + v[::-1]

    return jax.lax.while_loop(lambda carry: carry[0] < 10, body, (0, x))[1].sum()


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the options are XLA:CPU's")
def test_programs_are_compiled_with_the_cpu_options():
    assert compiler_options() == {"xla_cpu_use_fusion_emitters": False, "xla_backend_optimization_level": 2}
    args = (jnp.ones(8), jnp.eye(8))
    ours = jit(_loop).lower(*args).compile().as_text()
    assert ours == jax.jit(_loop, compiler_options=compiler_options()).lower(*args).compile().as_text()
    assert "wrapped_add" not in ours
    # Negative control: XLA's defaults compile the same function into another program.
    assert "wrapped_add" in jax.jit(_loop).lower(*args).compile().as_text()
    assert float(jit(_loop)(*args)) == float(jax.jit(_loop)(*args))


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the options are XLA:CPU's")
def test_a_brief_program_is_compiled_with_llvm_o0(monkeypatch):
    assert compiler_options(brief=True) == {"xla_cpu_use_fusion_emitters": False, "xla_backend_optimization_level": 0}
    expected = [compiler_options(True), compiler_options()]  # decided (and cached) before jax.jit is watched
    asked = []
    real_jit = jax.jit
    monkeypatch.setattr(jax, "jit", lambda fun, **kwargs: asked.append(kwargs["compiler_options"]) or real_jit(
        fun, **kwargs))
    args = (jnp.ones(8), jnp.eye(8))
    brief, fast = float(jit(_loop, brief=True)(*args)), float(jit(_loop)(*args))
    assert asked == expected
    assert brief == pytest.approx(fast, rel=1e-14)  # the same program but for LLVM's pipeline


def test_an_xla_without_the_option_gets_its_defaults(monkeypatch):
    monkeypatch.setattr(_compile, "_CPU_OPTIONS", {"xla_cpu_no_such_option": False})
    _compile._checked_options.cache_clear()
    try:
        assert compiler_options() is None
        assert float(jit(lambda x: 2 * x)(3.0)) == 6.0
    finally:
        _compile._checked_options.cache_clear()


def test_jit_takes_jax_jit_arguments():
    scaled = jit(lambda x, k: k * x, static_argnums=1)
    assert float(scaled(2.0, 3)) == 6.0
    assert scaled._cache_size() == 1  # the jitted function's own attributes

"""The networks implement the tensor formulation exactly (docs/theory.md §2-4)."""

import dataclasses
import string

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ltn
from ltn.networks import dft_matrix


def orthonormal_columns(rng, k, m, complex_=False):
    A = rng.standard_normal((k, m))
    if complex_:
        A = A + 1j * rng.standard_normal((k, m))
    return np.linalg.qr(A)[0]


def make_networks():
    rng = np.random.default_rng(0)
    nets = [
        ltn.Diagonal(d=5, depth=1),
        ltn.Diagonal(d=6, depth=3),
        ltn.FullyConnected(d=4, widths=()),
        ltn.FullyConnected(d=4, widths=(3, 2)),
        ltn.Convolutional(d=5, depth=3, filter_sizes=(2, 3)),
        ltn.Convolutional(d=5, depth=3),
        ltn.Convolutional(d=6, depth=2),
        ltn.TensorNetwork(rng.standard_normal((4, 2, 3, 2))),
        ltn.Odeco(rng.standard_normal((3, 5)), [orthonormal_columns(rng, k, 3) for k in (3, 4, 5)]),
    ]
    conv = ltn.Convolutional(d=5, depth=3)
    nets.append(ltn.Odeco(*conv.odeco))  # complex decomposition of a real network
    return nets


NETWORKS = make_networks()
IDS = [repr(n) for n in NETWORKS]


def random_params(net, seed=1):
    return net.init(jax.random.PRNGKey(seed), scale=0.7)


def full_contraction(tensor, vectors):
    letters = string.ascii_letters[: tensor.ndim]
    return jnp.einsum(f"{letters}," + ",".join(letters), tensor, *vectors)


def partial_contraction(tensor, vectors, skip):
    letters = string.ascii_letters[: tensor.ndim]
    operands = [v for l, v in enumerate(vectors) if l != skip]
    inputs = [letters] + [letters[l] for l in range(len(vectors)) if l != skip]
    return jnp.einsum(",".join(inputs) + f"->{letters[skip]}", tensor, *operands)


@pytest.mark.parametrize("net", NETWORKS, ids=IDS)
def test_apply_equals_data_tensor_contraction_and_beta(net):
    params = random_params(net)
    X = jax.random.normal(jax.random.PRNGKey(2), (3, net.d))
    flat = [p.reshape(-1) for p in params]
    by_tensor = jnp.stack([full_contraction(net.data_tensor(x), flat) for x in X])
    out = net.apply(params, X)
    assert out.shape == (3,)
    np.testing.assert_allclose(out, by_tensor, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(out, X @ net.beta(params), rtol=1e-13, atol=1e-13)
    # beta[m] = M(e_m)(v_1..v_L)
    by_basis = [full_contraction(net.data_tensor(e), flat) for e in jnp.eye(net.d)]
    np.testing.assert_allclose(net.beta(params), by_basis, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("net", NETWORKS, ids=IDS)
def test_gradient_is_partial_contraction(net):
    params = random_params(net)
    x = jax.random.normal(jax.random.PRNGKey(3), (net.d,))
    grads = jax.grad(lambda p: net.apply(p, x))(params)
    flat = [p.reshape(-1) for p in params]
    tensor = net.data_tensor(x)
    for l in range(net.depth):
        expected = partial_contraction(tensor, flat, l).reshape(net.layer_shapes[l])
        np.testing.assert_allclose(grads[l], expected, rtol=1e-12, atol=1e-12)


def test_fully_connected_beta_is_matrix_product():
    net = ltn.FullyConnected(d=5, widths=(4, 3, 2))
    params = random_params(net)
    assert [p.shape for p in params] == [(5, 4), (4, 3), (3, 2), (2, 1)]
    product = params[0] @ params[1] @ params[2] @ params[3]
    np.testing.assert_allclose(net.beta(params), product[:, 0], rtol=1e-13)
    assert net.num_params == 20 + 12 + 6 + 2


def naive_convolution_output(filters, x):
    """The layer recursion h_l[i] = sum_k v_l[k] h_(l-1)[(i+k) mod d], f = <h_(L-1), v_L>."""
    d = len(x)
    h = np.asarray(x)
    for v in filters[:-1]:
        h = np.array([sum(v[k] * h[(i + k) % d] for k in range(len(v))) for i in range(d)])
    return h @ filters[-1]


@pytest.mark.parametrize("filter_sizes", [(2,), (3, 1), (7, 7), (2, 5, 3)])
def test_convolution_beta_is_circular_convolution_of_padded_filters(filter_sizes):
    d = 7
    net = ltn.Convolutional(d=d, depth=len(filter_sizes) + 1, filter_sizes=filter_sizes)
    params = [np.asarray(p) for p in random_params(net)]
    beta = np.zeros(d)
    beta[0] = 1.0
    for v in params:
        padded = np.zeros(d)
        padded[: len(v)] = v
        beta = np.array([sum(beta[j] * padded[(m - j) % d] for j in range(d)) for m in range(d)])
    np.testing.assert_allclose(net.beta(tuple(params)), beta, rtol=1e-12, atol=1e-13)
    x = np.random.default_rng(4).standard_normal(d)
    np.testing.assert_allclose(net.apply(tuple(params), x), naive_convolution_output(params, x), rtol=1e-12)


@pytest.mark.parametrize("depth", [2, 3, 4])
def test_full_length_convolution_equals_its_dft_odeco_form(depth):
    d = 6
    conv = ltn.Convolutional(d=d, depth=depth)
    S, Us = conv.odeco
    F = dft_matrix(d)
    np.testing.assert_allclose(S, d ** ((depth - 2) / 2) * F)
    odeco = ltn.Odeco(S, Us)
    params = random_params(conv)
    X = jax.random.normal(jax.random.PRNGKey(5), (4, d))
    np.testing.assert_allclose(odeco.apply(params, X), conv.apply(params, X), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(odeco.data_tensor(X[0]), conv.data_tensor(X[0]), atol=1e-12)
    # rho in frequency space: beta = Re(S^T rho) with rho = prod_l U_l^T v_l
    rho = np.prod([U.T @ np.asarray(v) for U, v in zip(Us, params)], axis=0)
    np.testing.assert_allclose((S.T @ rho).imag, 0, atol=1e-12)


def test_odeco_with_identities_is_diagonal():
    d, depth = 5, 3
    diag = ltn.Diagonal(d, depth)
    odeco = ltn.Odeco(np.eye(d), [np.eye(d)] * depth)
    params = random_params(diag)
    X = jax.random.normal(jax.random.PRNGKey(6), (3, d))
    np.testing.assert_allclose(odeco.apply(params, X), diag.apply(params, X), rtol=1e-14)
    np.testing.assert_allclose(odeco.data_tensor(X[0]), diag.data_tensor(X[0]), rtol=1e-14)
    np.testing.assert_array_equal(diag.odeco[0], odeco.odeco[0])


@pytest.mark.parametrize("net", NETWORKS, ids=IDS)
def test_vmap_over_params_matches_loop(net):
    keys = jax.random.split(jax.random.PRNGKey(7), 4)
    batch = jax.vmap(lambda k: net.init(k, scale=0.5))(keys)
    X = jax.random.normal(jax.random.PRNGKey(8), (3, net.d))
    outs = jax.jit(jax.vmap(net.apply, in_axes=(0, None)))(batch, X)
    betas = jax.vmap(net.beta)(batch)
    for i, k in enumerate(keys):
        single = net.init(k, scale=0.5)
        np.testing.assert_allclose(outs[i], net.apply(single, X), rtol=1e-13, atol=1e-14)
        np.testing.assert_allclose(betas[i], net.beta(single), rtol=1e-13, atol=1e-14)


def test_specs_are_hashable_by_content_and_static_under_jit():
    rng = np.random.default_rng(9)
    T = rng.standard_normal((3, 2, 2))
    assert ltn.TensorNetwork(T) == ltn.TensorNetwork(T.copy())
    assert hash(ltn.TensorNetwork(T)) == hash(ltn.TensorNetwork(T.copy()))
    assert ltn.TensorNetwork(T) != ltn.TensorNetwork(T + 1)
    assert ltn.Diagonal(3, 2) == ltn.Diagonal(d=3, depth=2) != ltn.Diagonal(3, 3)
    assert ltn.Convolutional(4, 3) == ltn.Convolutional(4, 3, (4, 4))

    out = jax.jit(lambda p, X, net: net.apply(p, X), static_argnums=2)
    net = ltn.Diagonal(3, 2)
    params = random_params(net)
    out(params, jnp.ones((2, 3)), net)
    out(params, jnp.ones((2, 3)), ltn.Diagonal(3, 2))  # equal spec: cache hit
    assert out._cache_size() == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        net.d_in = 4


@pytest.mark.parametrize("net", [n for n in NETWORKS if n.odeco is not None], ids=lambda n: repr(n))
def test_theorem_init(net):
    S, Us = net.odeco
    eta_bar = np.linspace(0.5, 1.5, S.shape[0])
    if np.iscomplexobj(S):  # DFT decompositions need eta_bar[-j] = eta_bar[j] for real filters
        eta_bar = 0.5 + np.cos(2 * np.pi * np.arange(S.shape[0]) / S.shape[0]) ** 2
    params = net.init(jax.random.PRNGKey(0), scale=0.3, kind="theorem", eta_bar=eta_bar)
    for l, (U, v) in enumerate(zip(Us, params)):
        assert not jnp.iscomplexobj(v)
        expected = 0.3 * eta_bar if l < net.depth - 1 else 0 * eta_bar
        np.testing.assert_allclose(U.T @ np.asarray(v).reshape(-1), expected, atol=1e-13)
    np.testing.assert_allclose(net.beta(params), 0, atol=1e-15)


# ---- bad arguments -----------------------------------------------------------------------------------

BAD_CONSTRUCTIONS = [
    (lambda: ltn.Diagonal(d=3, depth=0), ValueError, "depth"),
    (lambda: ltn.Diagonal(d=0, depth=2), ValueError, "d must be"),
    (lambda: ltn.Diagonal(d=3.5, depth=2), TypeError, "d must be an integer"),
    (lambda: ltn.Convolutional(d=4, depth=0), ValueError, "depth"),
    (lambda: ltn.Convolutional(d=4, depth=3, filter_sizes=(2, 5)), ValueError, r"filter_sizes\[1\] = 5 is longer"),
    (lambda: ltn.Convolutional(d=4, depth=3, filter_sizes=(2,)), ValueError, "depth - 1 = 2 sizes"),
    (lambda: ltn.Convolutional(d=4, depth=2, filter_sizes=(0,)), ValueError, r"filter_sizes\[0\]"),
    (lambda: ltn.FullyConnected(d=4, widths=3), TypeError, "widths"),
    (lambda: ltn.FullyConnected(d=4, widths=(3, 0)), ValueError, r"widths\[1\]"),
    (lambda: ltn.TensorNetwork(np.ones(3)), ValueError, "shape"),
    (lambda: ltn.TensorNetwork(np.full((2, 2), np.nan)), ValueError, "finite"),
    (lambda: ltn.Odeco(np.eye(3), [np.eye(4)]), ValueError, r"Us\[0\] must have m = 3 columns"),
    (lambda: ltn.Odeco(np.eye(3), [np.eye(3), 2 * np.eye(3)]), ValueError, r"Us\[1\] must have orthonormal"),
    (lambda: ltn.Odeco(np.ones(3), [np.eye(3)]), ValueError, "S must have 2 dimensions"),
    (lambda: ltn.Odeco(np.eye(3), np.eye(3)), TypeError, "Us must be a sequence"),
    (lambda: ltn.Odeco(np.eye(3) * 1j, [np.eye(3)]), ValueError, "do not define a real network"),
]


@pytest.mark.parametrize("build, error, match", BAD_CONSTRUCTIONS)
def test_bad_constructor_arguments_raise(build, error, match):
    with pytest.raises(error, match=match):
        build()


def test_bad_params_and_inputs_raise():
    net = ltn.FullyConnected(d=3, widths=(2,))
    params = random_params(net)
    with pytest.raises(ValueError, match="2 layers, got 1"):
        net.beta(params[:1])
    with pytest.raises(ValueError, match=r"params\[1\] must have shape \(2, 1\)"):
        net.beta((params[0], params[1].reshape(-1)))
    with pytest.raises(TypeError, match="tuple of 2 arrays"):
        net.beta({"a": params[0]})
    with pytest.raises(TypeError, match=r"params\[0\] must be an array"):
        net.beta((1.0, params[1]))
    with pytest.raises(ValueError, match=r"X must have shape \(\.\.\., 3\)"):
        net.apply(params, jnp.ones((2, 4)))
    batch = tuple(jnp.stack([p, p]) for p in params)
    assert [b.shape for b in net.check_batch(batch)] == [(2, 3, 2), (2, 2, 1)]
    with pytest.raises(ValueError, match="inits must have layer shapes .* common leading batch axis"):
        net.check_batch((batch[0], batch[1][:1]), "inits")  # batch sizes 2 and 1
    with pytest.raises(ValueError, match="common leading batch axis"):
        net.check_batch(params)  # one run is not a batch
    with pytest.raises(ValueError, match="init kind"):
        net.init(jax.random.PRNGKey(0), kind="xavier")
    with pytest.raises(ValueError, match="orthogonally decomposable"):
        net.init(jax.random.PRNGKey(0), kind="theorem")
    with pytest.raises(ValueError, match="eta_bar must have shape"):
        ltn.Diagonal(3, 2).init(jax.random.PRNGKey(0), kind="theorem", eta_bar=np.ones(2))
    with pytest.raises(ValueError, match="conjugate-symmetric"):
        ltn.Convolutional(4, 2).init(jax.random.PRNGKey(0), kind="theorem", eta_bar=np.arange(1.0, 5.0))


@pytest.mark.parametrize("kind", ["gaussian", "theorem"])
def test_init_scale_must_be_finite_and_non_negative(kind):
    net, key = ltn.Diagonal(3, 2), jax.random.PRNGKey(0)
    for scale in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match=f"scale must be finite and >= 0, got {scale}"):
            net.init(key, scale=scale, kind=kind)
    with pytest.raises(TypeError, match="scale must be a real number"):
        net.init(key, scale=np.ones(2), kind=kind)
    # Zero is the zero initialisation (a stationary point of the flow), allowed.
    assert all(not np.any(np.asarray(p)) for p in net.init(key, scale=0.0, kind=kind))
    # A traced scale (a batch of inits under vmap, as sweeps build them) is left to the batch's builder.
    batch = jax.vmap(lambda s: net.init(key, scale=s, kind=kind))(jnp.array([0.5, 1.0]))
    assert batch[0].shape == (2, 3)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.complex128, jnp.int64])
def test_params_must_be_real_float64(dtype):
    net = ltn.Diagonal(3, 2)
    params = tuple(p.astype(dtype) for p in net.init(jax.random.PRNGKey(0), 1.0))
    message = rf"params\[0\] must be a real array of dtype float64 .* got dtype {jnp.dtype(dtype)}"
    with pytest.raises(TypeError, match=message):
        net.beta(params)
    with pytest.raises(TypeError, match=message.replace("params", "inits")):
        net.check_batch(tuple(p[None] for p in params), "inits")
    if dtype is jnp.int64:
        return  # the flow's own grad refuses integer inputs before it reaches the network
    # As a user meets it: the flow refuses while tracing, before any step (it used to fail inside JAX's VJP).
    X, y = np.eye(2, 3), np.ones(2)
    with pytest.raises(TypeError, match=message):
        ltn.gradient_flow(net, params, X, y, "squared", solver="tsit5", checkpoints=2)


# ---- the "shaped" and "file" initialisations -----------------------------------------------------------


def test_shaped_init_is_azulay_et_al_scale_and_shape():
    """u0 * v0 = scale**2 (their alpha) and (v0 - u0) / (v0 + u0) = shape (their s), in every entry; in U_l^T v_l
    coordinates for an odeco network."""
    scale, shape = 0.3, 0.5
    u, v = ltn.Diagonal(4, 2).init(jax.random.PRNGKey(0), scale=scale, kind="shaped", shape=shape)
    np.testing.assert_allclose(u * v, scale**2, rtol=1e-15)
    np.testing.assert_allclose((v - u) / (v + u), shape, rtol=1e-15)
    rng = np.random.default_rng(0)
    net = ltn.Odeco(rng.standard_normal((3, 3)), [orthonormal_columns(rng, k, 3) for k in (4, 5)])
    params = net.init(jax.random.PRNGKey(0), scale=scale, kind="shaped", shape=shape)
    for U, layer, expected in zip(net.Us, params, (u[0], v[0])):
        np.testing.assert_allclose(U.T @ np.asarray(layer), expected, rtol=1e-13)
    balanced = ltn.Diagonal(4, 2).init(jax.random.PRNGKey(0), scale=scale, kind="shaped")
    np.testing.assert_allclose(balanced, scale, rtol=1e-15)  # shape 0: both layers scale


def test_shaped_init_refuses_what_it_is_not_defined_for():
    key = jax.random.PRNGKey(0)
    with pytest.raises(ValueError, match="depth-2 networks .* got depth 3"):
        ltn.Diagonal(3, 3).init(key, kind="shaped")
    with pytest.raises(ValueError, match="orthogonally decomposable"):
        ltn.FullyConnected(3, (2,)).init(key, kind="shaped")
    for shape in (1.0, -0.1, float("nan")):
        with pytest.raises(ValueError, match=r"shape must be a real number in \[0, 1\)"):
            ltn.Diagonal(3, 2).init(key, kind="shaped", shape=shape)
    with pytest.raises(ValueError, match="shape is only used by kind='shaped'"):
        ltn.Diagonal(3, 2).init(key, kind="gaussian", shape=0.5)
    with pytest.raises(ValueError, match="load_params"):
        ltn.Diagonal(3, 2).init(key, kind="file")


def azulay_limit(X, y, k):
    """Azulay et al. (2021), Thm 4.1, for beta = u+ * v+ - u- * v- from u+ = u- = u0, v+ = v- = v0: the flow ends
    at argmin sum_i q_k(w_i) s.t. X w = y, q_k(x) = k/4 (1 - sqrt(1 + 4x^2/k^2) + 2x/k arcsinh(2x/k)),
    k = 2 (u0^2 + v0^2). Its optimality condition q_k'(w) = arcsinh(2w/k)/2 in range(X^T) gives
    w = k/2 sinh(X^T mu): n equations X w(mu) = y, solved here by Newton (SciPy), independently of ltn.theory."""
    import scipy.optimize

    solution = scipy.optimize.root(lambda mu: X @ (k / 2 * np.sinh(X.T @ mu)) - y, np.zeros(len(y)), tol=1e-14,
                                   jac=lambda mu: X @ ((k / 2 * np.cosh(X.T @ mu))[:, None] * X.T))
    assert solution.success
    return k / 2 * np.sinh(X.T @ solution.x)


def test_shaped_flow_ends_at_azulay_et_al_limit_and_at_the_exact_odeco_prediction():
    """Their "unbiased" diagonal model as an odeco network (S = [I; -I], U_l = I): the flow from the shaped init
    ends where their closed form says, and so does ltn.predict's exact odeco limit for this (non-theorem) init."""
    from ltn.data import sparse_regression

    d, scale, shape = 6, 0.3, 0.5
    problem = sparse_regression(seed=0, n=3, d=d, sparsity=2)
    net = ltn.Odeco(np.vstack([np.eye(d), -np.eye(d)]), (np.eye(2 * d), np.eye(2 * d)))
    params0 = net.init(jax.random.PRNGKey(0), scale=scale, kind="shaped", shape=shape)
    assert not np.any(np.asarray(net.beta(params0)))  # unbiased: beta(0) = 0
    u0, v0 = (scale * np.sqrt((1 - s) / (1 + s)) for s in (shape, -shape))
    expected = azulay_limit(problem.X, problem.y, 2 * (u0**2 + v0**2))
    balanced = azulay_limit(problem.X, problem.y, 4 * scale**2)  # shape 0 at the same scale: another limit
    assert np.linalg.norm(expected - balanced) > 1e-2 * np.linalg.norm(expected)  # measured 0.11

    flow = ltn.gradient_flow(net, params0, problem.X, problem.y, "squared", solver="tsit5")
    assert flow.status_name == "converged"
    # measured 7.6e-11 (the flow's rtol 1e-11 over a plateau-free path)
    np.testing.assert_allclose(flow.beta, expected, rtol=0, atol=1e-9 * np.abs(expected).max())
    prediction = ltn.predict(net, problem.X, problem.y, "squared", init=params0)
    assert prediction.exact
    np.testing.assert_allclose(prediction.beta, expected, rtol=0, atol=1e-12)  # measured 5.6e-14 relative


def test_file_init_reproduces_a_saved_gaussian_init(tmp_path):
    net = ltn.FullyConnected(4, (3, 2))
    params = net.init(jax.random.PRNGKey(5), scale=0.7)
    path = tmp_path / "init.npz"
    np.savez(path, **{f"layer{l}": np.asarray(p) for l, p in enumerate(params)})
    assert ltn.networks.params_in_file(net, path) is None
    loaded = ltn.networks.load_params(net, path)
    for a, b in zip(loaded, params):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(ltn.networks.load_params(net, path, scale=0.5)[1], 0.5 * np.asarray(params[1]))
    # Several initialisations along a leading axis: entry i is the init of seed i.
    batch = [net.init(jax.random.PRNGKey(seed), scale=0.7) for seed in range(3)]
    np.savez(path, **{f"layer{l}": np.stack([np.asarray(p[l]) for p in batch]) for l in range(net.depth)})
    assert ltn.networks.params_in_file(net, path) == 3
    for a, b in zip(ltn.networks.load_params(net, path, index=2), batch[2]):
        np.testing.assert_array_equal(a, b)


def test_file_init_refuses_a_file_that_does_not_fit(tmp_path):
    net, path = ltn.Diagonal(3, 2), tmp_path / "init.npz"

    def refused(match, index=None, **arrays):
        np.savez(path, **arrays)
        with pytest.raises(ValueError, match=match):
            ltn.networks.load_params(net, path, index=index)

    good = np.ones(3)
    refused(r"lacks array\(s\) \['layer1'\]", layer0=good)
    refused(r"holds array\(s\) \['layer2'\] besides", layer0=good, layer1=good, layer2=good)
    refused(r"layer0 \(4,\), layer1 \(3,\), but the network's layers have shapes \(\(3,\), \(3,\)\)",
            layer0=np.ones(4), layer1=good)
    refused("array 'layer1' is complex", layer0=good, layer1=good * 1j)
    refused(r"layer1 has 1 NaN or infinite entries, the first layer1\[2\] = nan", layer0=good,
            layer1=np.array([1, 1, np.nan]))
    refused("holds one initialisation .* no entry 0", index=0, layer0=good, layer1=good)
    refused("holds 2 initialisations, so it has no entry 2", index=2, layer0=np.ones((2, 3)), layer1=np.ones((2, 3)))
    refused("choose one with index", layer0=np.ones((2, 3)), layer1=np.ones((2, 3)))
    with pytest.raises(FileNotFoundError, match="init file .* does not exist"):
        ltn.networks.load_params(net, tmp_path / "missing.npz")

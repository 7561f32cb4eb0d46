"""GRAM's volume contrastive loss and temperature against NumPy / PyTorch oracles.

Oracles: a float64 NumPy port of the released formula (stack the [B1, B2, k, k] Gram tensor, det,
sqrt; missing modalities dropped from each Gram matrix), PyTorch's own label-smoothed cross-entropy,
and a float64 PyTorch port of `forward_ret` with the `no_grad` gathers of the released code (W = 1)
for the 'reference' gradients.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from gram_jax import losses
from gram_jax.losses.cross_entropy import smoothed_cross_entropy
from gram_jax.losses.inputs import LossInputs
from gram_jax.models.temperature import Temperature, is_temperature_path


def unit(x):
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def make_batch(b=12, d=16, k=3, seed=0, aligned=0.0):
    """Unit anchors [b, d] and others [k-1, b, d]; `aligned` > 0 pulls each tuple together."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(b, d))
    anchor = unit(aligned * base + rng.normal(size=(b, d)))
    others = unit(aligned * base[None] + rng.normal(size=(k - 1, b, d)))
    return anchor, others


def np_volumes(anchor, others, present=None):
    """float64 [B1, B2]: sqrt(det G) of (anchor_i, present vectors of tuple j)."""
    anchor, others = np.float64(anchor), np.float64(others)
    m, b2, _ = others.shape
    out = np.zeros((anchor.shape[0], b2))
    for j in range(b2):
        keep = [p for p in range(m) if present is None or present[p, j]]
        for i in range(anchor.shape[0]):
            a = np.stack([anchor[i]] + [others[p, j] for p in keep])
            out[i, j] = np.sqrt(max(np.linalg.det(a @ a.T), 0.0))
    return out


def np_smoothed_ce(logits, labels, eps):
    logp = logits - logits.max(1, keepdims=True)
    logp = logp - np.log(np.exp(logp).sum(1, keepdims=True))
    nll = -logp[np.arange(len(labels)), labels]
    return (1 - eps) * nll - eps * logp.mean(1)


def np_volume_loss(anchor, others, tau, eps, present=None):
    vol = np_volumes(anchor, others, present)
    labels = np.arange(vol.shape[0])
    a2d = np_smoothed_ce(-vol / tau, labels, eps).mean()
    d2a = np_smoothed_ce(-vol.T / tau, labels, eps).mean()
    return 0.5 * (a2d + d2a), a2d, d2a, vol


@pytest.mark.parametrize("k", [3, 4])
def test_volume_loss_matches_numpy_oracle(k):
    anchor, others = make_batch(b=12, d=16, k=k, seed=k, aligned=1.5)
    present = np.random.default_rng(1).random((k - 1, 12)) > 0.25
    present[:, 0] = False  # a sample whose data modalities are all missing
    loss, aux = losses.volume_contrastive_loss(
        anchor, list(others), temperature=0.07, present=present
    )
    want, a2d, d2a, vol = np_volume_loss(anchor, others, 0.07, 0.1, present)
    np.testing.assert_allclose(loss, want, rtol=2e-5)
    np.testing.assert_allclose(aux["loss_a2d"], a2d, rtol=2e-5)
    np.testing.assert_allclose(aux["loss_d2a"], d2a, rtol=2e-5)
    np.testing.assert_allclose(aux["logits_a2d"], -vol / 0.07, atol=2e-4)
    np.testing.assert_allclose(aux["logits_d2a"], -vol.T / 0.07, atol=2e-4)
    np.testing.assert_allclose(aux["positive_volume"], np.diag(vol).mean(), atol=1e-5)
    assert aux["logits_a2d"].shape == (12, 12)


def test_dropping_a_modality_equals_the_smaller_tuple():
    """present all-False for subtitles gives exactly the 3-modality loss (nothing substituted)."""
    anchor, others = make_batch(b=10, d=16, k=4, seed=3, aligned=1.0)
    present = np.ones((3, 10), bool)
    present[2] = False
    l4, _ = losses.volume_contrastive_loss(anchor, others, temperature=0.1, present=present)
    l3, _ = losses.volume_contrastive_loss(anchor, others[:2], temperature=0.1)
    np.testing.assert_allclose(l4, l3, rtol=1e-6)


@pytest.mark.torch
def test_smoothed_cross_entropy_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(7, 11)).astype(np.float32) * 5
    labels = rng.integers(0, 11, 7)
    for eps in (0.0, 0.1, 0.3):
        want = torch.nn.functional.cross_entropy(
            torch.tensor(logits, dtype=torch.float64),
            torch.tensor(labels),
            label_smoothing=eps,
            reduction="none",
        ).numpy()
        got = smoothed_cross_entropy(jnp.asarray(logits), jnp.asarray(labels), eps)
        np.testing.assert_allclose(got, want, rtol=1e-5)


def torch_released_loss(torch, anchor, others, tau, eps):
    """float64 port of `forward_ret` (volume part) on one rank: gathered copies are detached."""
    t = torch.tensor(anchor, dtype=torch.float64, requires_grad=True)
    o = torch.tensor(others, dtype=torch.float64, requires_grad=True)

    def volume(lang, data):  # lang [B1, D], data [m, B2, D] -> [B1, B2]
        vecs_b = data.permute(1, 0, 2)  # [B2, m, D]
        b1, b2, m = lang.shape[0], vecs_b.shape[0], vecs_b.shape[1]
        g = torch.zeros(b1, b2, m + 1, m + 1, dtype=torch.float64)
        g[:, :, 0, 0] = (lang * lang).sum(-1)[:, None]
        cross = torch.einsum("id,jpd->ijp", lang, vecs_b)
        g[:, :, 0, 1:] = cross
        g[:, :, 1:, 0] = cross
        g[:, :, 1:, 1:] = torch.einsum("jpd,jqd->jpq", vecs_b, vecs_b)[None]
        return torch.sqrt(torch.abs(torch.det(g)))

    targets = torch.arange(anchor.shape[0])
    vol = volume(t, o.detach())  # rows: local anchors, columns: gathered (no grad) data
    vol_t = volume(t.detach(), o).T  # rows: local data, columns: gathered (no grad) anchors
    ce = torch.nn.functional.cross_entropy
    loss = 0.5 * (
        ce(-vol / tau, targets, label_smoothing=eps)
        + ce(-vol_t / tau, targets, label_smoothing=eps)
    )
    loss.backward()
    return loss.item(), t.grad.numpy(), o.grad.numpy()


@pytest.mark.torch
def test_reference_mode_matches_released_code_in_torch():
    torch = pytest.importorskip("torch")
    anchor, others = make_batch(b=8, d=12, k=3, seed=5, aligned=1.0)
    want_loss, want_ga, want_go = torch_released_loss(torch, anchor, others, 0.07, 0.1)

    def f(a, o):
        return losses.volume_contrastive_loss(a, o, temperature=0.07, gather_mode="reference")[0]

    loss, (ga, go) = jax.value_and_grad(f, argnums=(0, 1))(anchor, others)
    np.testing.assert_allclose(loss, want_loss, rtol=1e-5)
    np.testing.assert_allclose(ga, want_ga, rtol=2e-3, atol=2e-4)
    np.testing.assert_allclose(go, want_go, rtol=2e-3, atol=2e-4)


def test_reference_mode_trains_one_side_per_direction():
    """A2D term: gradient only on the anchor; D2A term: only on the data. 'global' trains both."""
    anchor, others = make_batch(b=8, d=12, k=3, seed=6, aligned=1.0)

    def term(mode, name):
        def f(a, o):
            return losses.volume_contrastive_loss(a, o, temperature=0.07, gather_mode=mode)[1][name]

        return jax.grad(f, argnums=(0, 1))(anchor, others)

    ga, go = term("reference", "loss_a2d")
    assert float(jnp.abs(ga).max()) > 1e-3 and float(jnp.abs(go).max()) == 0.0
    ga, go = term("reference", "loss_d2a")
    assert float(jnp.abs(ga).max()) == 0.0 and float(jnp.abs(go).max()) > 1e-3
    for name in ("loss_a2d", "loss_d2a"):
        ga, go = term("global", name)
        assert float(jnp.abs(ga).max()) > 1e-3 and float(jnp.abs(go).max()) > 1e-3


def test_global_gradient_matches_finite_differences():
    """The exact ('global') gradient against central differences of the float64 NumPy oracle."""
    anchor, others = make_batch(b=6, d=8, k=3, seed=7, aligned=1.0)
    tau = 0.2

    def f(a, o):
        return losses.volume_contrastive_loss(a, o, temperature=tau)[0]

    ga, go = jax.grad(f, argnums=(0, 1))(anchor, others)
    h = 1e-5
    for idx in [(0, 0), (3, 5), (5, 7)]:
        plus, minus = np.float64(anchor), np.float64(anchor)
        plus[idx] += h
        minus[idx] -= h
        fd = np_volume_loss(plus, others, tau, 0.1)[0] - np_volume_loss(minus, others, tau, 0.1)[0]
        np.testing.assert_allclose(ga[idx], fd / (2 * h), rtol=2e-3, atol=2e-5)
    for idx in [(0, 1, 2), (1, 4, 0)]:
        plus, minus = np.float64(others), np.float64(others)
        plus[idx] += h
        minus[idx] -= h
        fd = np_volume_loss(anchor, plus, tau, 0.1)[0] - np_volume_loss(anchor, minus, tau, 0.1)[0]
        np.testing.assert_allclose(go[idx], fd / (2 * h), rtol=2e-3, atol=2e-5)


def test_loss_is_finite_for_collinear_and_identical_tuples():
    anchor, others = make_batch(b=6, d=8, k=3, seed=8)
    others = np.stack([anchor, anchor])  # every positive tuple has volume 0

    def f(a, o):
        return losses.volume_contrastive_loss(a, o, temperature=0.07)[0]

    loss, grads = jax.value_and_grad(f, argnums=(0, 1))(anchor, others)
    assert np.isfinite(loss) and all(np.isfinite(g).all() for g in grads)


def test_temperature_parametrisations_and_gradient():
    t = Temperature()
    np.testing.assert_allclose(t(), 0.07, rtol=1e-6)
    t.log_temperature[...] = jnp.log(1e-4)
    np.testing.assert_allclose(t(), 0.01, rtol=1e-6)  # clamped at min_value
    t.log_temperature[...] = jnp.log(5.0)
    np.testing.assert_allclose(t(), 1.0, rtol=1e-6)  # clamped at max_value
    ref = Temperature(parametrization="reference")
    np.testing.assert_allclose(ref(), 0.07, rtol=1e-6)
    ref.temperature[...] = jnp.asarray(-0.5)
    np.testing.assert_allclose(ref(), -0.5)  # the released plain divisor is not clamped

    anchor, others = make_batch(b=8, d=12, k=3, seed=9, aligned=1.0)
    model = Temperature(0.1)
    graphdef, params = nnx.split(model, nnx.Param)

    def f(p):
        m = nnx.merge(graphdef, p)
        return losses.volume_contrastive_loss(anchor, others, temperature=m)[0]

    grad = jax.grad(f)(params)
    want = (
        np_volume_loss(anchor, others, 0.1 * np.exp(1e-4), 0.1)[0]
        - np_volume_loss(anchor, others, 0.1 * np.exp(-1e-4), 0.1)[0]
    ) / 2e-4
    np.testing.assert_allclose(grad["log_temperature"][...], want, rtol=2e-3)


def test_temperature_fixed_and_weight_decay_paths():
    class Owner(nnx.Module):
        def __init__(self):
            self.proj = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
            self.temperature = Temperature()

    params = nnx.state(Owner(), nnx.Param)
    paths = [tuple(p) for p, _ in nnx.to_flat_state(params)]
    flagged = sorted(p for p in paths if is_temperature_path(p))
    assert flagged == [("temperature", "log_temperature")]
    fixed = Temperature(0.05, learnable=False)
    assert not jax.tree.leaves(nnx.state(fixed, nnx.Param))
    np.testing.assert_allclose(fixed(), 0.05, rtol=1e-6)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(parametrization="softplus"), "parametrization"),
        (dict(init=0.001), "min_value"),
        (dict(init=-1.0), "positive"),
    ],
)
def test_temperature_rejects_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Temperature(**kwargs)


def test_volume_loss_rejects_bad_inputs():
    anchor, others = make_batch(b=4, d=8, k=3)
    with pytest.raises(ValueError, match="gather_mode"):
        losses.volume_contrastive_loss(anchor, others, temperature=0.1, gather_mode="all")
    with pytest.raises(ValueError, match="anchor"):
        losses.volume_contrastive_loss(anchor[:3], others, temperature=0.1)
    with pytest.raises(ValueError, match="present"):
        losses.volume_contrastive_loss(
            anchor, others, temperature=0.1, present=np.ones((3, 4), bool)
        )
    with pytest.raises(ValueError, match="mesh"):
        losses.volume_contrastive_loss(anchor, others, temperature=0.1, gather_mode="local")
    with pytest.raises(ValueError, match="temperature"):
        losses.volume_contrastive_loss(anchor, others, temperature=np.ones(2))


def test_registry_volume_entry_equals_direct_call():
    anchor, others = make_batch(b=8, d=12, k=4, seed=11, aligned=1.0)
    present = np.random.default_rng(2).random((3, 8)) > 0.3
    emb = {"text": anchor, "video": others[0], "audio": others[1], "subtitle": others[2]}
    pres = {"video": present[0], "audio": present[1], "subtitle": present[2]}
    got, _ = losses.LOSSES["volume"](
        LossInputs(
            emb,
            pres,
            order=("video", "audio", "subtitle"),
            temperature=0.07,
            rng=jax.random.key(0),
        )
    )
    want, _ = losses.volume_contrastive_loss(anchor, others, temperature=0.07, present=present)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert set(losses.LOSSES) == {
        "volume",
        "cosine_anchor",
        "cosine_all_pairs",
        "sigmoid",
        "symile",
        "area",
    }
    with pytest.raises(ValueError, match="'depth'"):
        losses.LOSSES["volume"](LossInputs(emb, order=("video", "depth"), temperature=0.07))

"""Baseline losses against float64 NumPy oracles written from the papers' definitions, plus a
PyTorch port of Symile's O(N^2) algorithm (roll-based candidate blocks) for the all-present case.

Missing-modality semantics checked here: a pair term (cosine, sigmoid) uses exactly the samples
where both modalities are present; Symile and area use samples with every modality present (Symile's
O(N^2) candidates need only their own two rows present).
"""

from __future__ import annotations

import itertools

import jax
import numpy as np
import pytest

from gram_jax import losses
from gram_jax.losses.inputs import LossInputs


def unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def make_embeddings(b=10, d=12, names=("text", "video", "audio"), seed=0, missing=0.25):
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(b, d))
    emb = {n: unit(base + rng.normal(size=(b, d))).astype(np.float32) for n in names}
    present = {n: rng.random(b) > missing for n in names[1:]}
    if missing:
        present[names[1]][0] = False  # at least one sample with a missing pair
    return emb, present


def np_ce(logits, labels, eps, valid=None):
    """Per-row smoothed cross-entropy over the columns where `valid` (float64)."""
    logits = np.where(valid, logits, -np.inf) if valid is not None else logits
    m = logits.max(1, keepdims=True)
    logp = logits - m - np.log(np.exp(logits - m).sum(1, keepdims=True))
    nll = -logp[np.arange(len(labels)), labels]
    uniform = -np.where(np.isfinite(logp), logp, 0.0).sum(1) / np.isfinite(logp).sum(1)
    return (1 - eps) * nll + eps * uniform


def np_clip_pair(x, y, tau, eps):
    labels = np.arange(len(x))
    logits = np.float64(x) @ np.float64(y).T / tau
    return 0.5 * (np_ce(logits, labels, eps).mean() + np_ce(logits.T, labels, eps).mean())


def both(present, a, b):
    ones = np.ones_like(next(iter(present.values())))
    return present.get(a, ones) & present.get(b, ones)


@pytest.mark.parametrize("name", ["cosine_anchor", "cosine_all_pairs"])
def test_cosine_infonce_matches_oracle(name):
    emb, present = make_embeddings(seed=1)
    tau, eps = 0.07, 0.1
    loss, aux = losses.LOSSES[name](LossInputs(emb, present, temperature=tau, label_smoothing=eps))
    names = ("text", "video", "audio")
    pairs = (
        [(0, 1), (0, 2)] if name == "cosine_anchor" else list(itertools.combinations(range(3), 2))
    )
    want = []
    for p, q in pairs:
        keep = both(present, names[p], names[q])
        term = np_clip_pair(emb[names[p]][keep], emb[names[q]][keep], tau, eps)
        np.testing.assert_allclose(aux[f"loss_{names[p]}_{names[q]}"], term, rtol=1e-5)
        want.append(term)
    np.testing.assert_allclose(loss, np.mean(want), rtol=1e-5)


def test_sigmoid_matches_siglip_oracle():
    emb, present = make_embeddings(seed=2)
    tau, bias = 0.1, -10.0
    loss, aux = losses.LOSSES["sigmoid"](LossInputs(emb, present, temperature=tau), bias=bias)
    want = []
    for m in ("video", "audio"):
        keep = both(present, "text", m)
        t, x = np.float64(emb["text"][keep]), np.float64(emb[m][keep])
        logits = t @ x.T / tau + bias
        sign = 2 * np.eye(len(t)) - 1
        term = np.sum(np.logaddexp(0.0, -sign * logits)) / len(t)  # -log sigmoid(z)
        np.testing.assert_allclose(aux[f"loss_text_{m}"], term, rtol=1e-5)
        want.append(term)
    np.testing.assert_allclose(loss, np.mean(want), rtol=1e-5)


def symile_permutations(rng, m, n):
    """The documented derivation: permutation (anchor a, modality i) from split(rng, m*m)[a*m+i]."""
    keys = jax.random.split(rng, m * m)
    return np.stack([np.asarray(jax.random.permutation(k, n)) for k in keys]).reshape(m, m, n)


@pytest.mark.parametrize("modalities", [3, 4])
def test_symile_o_n_matches_oracle(modalities):
    names = ("text", "video", "audio", "subtitle")[:modalities]
    emb, present = make_embeddings(b=10, names=names, seed=3)
    rng, tau, eps = jax.random.key(11), 0.1, 0.1
    loss, aux = losses.LOSSES["symile"](
        LossInputs(emb, present, order=names[1:], temperature=tau, rng=rng, label_smoothing=eps)
    )
    n = 10
    perms = symile_permutations(rng, modalities, n)
    x = np.stack([np.float64(emb[k]) for k in names])  # [M, N, D]
    pres = np.stack([np.ones(n, bool)] + [present[k] for k in names[1:]])
    row_ok = pres.all(0)
    terms = []
    for a in range(modalities):
        rest = [i for i in range(modalities) if i != a]
        cand = np.prod([x[i][perms[a, i]] for i in rest], axis=0)
        cand_ok = np.all([pres[i][perms[a, i]] for i in rest], axis=0)
        logits = x[a] @ cand.T
        np.fill_diagonal(logits, np.sum(x[a] * np.prod(x[rest], axis=0), axis=1))
        valid = np.broadcast_to(cand_ok, (n, n)).copy()
        np.fill_diagonal(valid, True)
        ce = np_ce(logits / tau, np.arange(n), eps, valid)
        term = ce[row_ok].mean()
        np.testing.assert_allclose(aux[f"loss_anchor_{names[a]}"], term, rtol=1e-5)
        terms.append(term)
    np.testing.assert_allclose(loss, np.mean(terms), rtol=1e-5)


def test_symile_o_n_squared_matches_oracle_with_missing():
    emb, present = make_embeddings(b=8, seed=4)
    tau, eps = 0.1, 0.1
    loss, _ = losses.LOSSES["symile"](
        LossInputs(emb, present, temperature=tau, label_smoothing=eps),
        negative_sampling="n_squared",
    )
    names = ("text", "video", "audio")
    x = [np.float64(emb[k]) for k in names]
    pres = [np.ones(8, bool), present["video"], present["audio"]]
    row_ok = pres[0] & pres[1] & pres[2]
    terms = []
    for a in range(3):
        p, q = [i for i in range(3) if i != a]
        logits = np.einsum("id,jd,kd->ijk", x[a], x[p], x[q]).reshape(8, 64) / tau
        valid = np.broadcast_to((pres[p][:, None] & pres[q][None, :]).reshape(-1), (8, 64))
        ce = np_ce(logits, np.arange(8) * 9, eps, valid)
        terms.append(ce[row_ok].mean())
    np.testing.assert_allclose(loss, np.mean(terms), rtol=1e-5)


@pytest.mark.torch
def test_symile_o_n_squared_matches_symile_algorithm_in_torch():
    """The roll-based candidate blocks of Symile's 3-modality O(N^2) path, plain CE."""
    torch = pytest.importorskip("torch")
    emb, _ = make_embeddings(b=6, seed=5, missing=0.0)
    loss, _ = losses.LOSSES["symile"](
        LossInputs(emb, temperature=0.2, label_smoothing=0.0), negative_sampling="n_squared"
    )
    reps = [torch.tensor(emb[k], dtype=torch.float64) for k in ("text", "video", "audio")]
    total = 0.0
    for a in range(3):
        y, z = (reps[i] for i in range(3) if i != a)
        blocks = []
        for _ in range(y.shape[0]):
            blocks.append(y * z)
            z = torch.roll(z, shifts=1, dims=0)
        logits = reps[a] @ torch.cat(blocks).T / 0.2  # positive of row i at column i (block 0)
        total += torch.nn.functional.cross_entropy(logits, torch.arange(6)).item()
    np.testing.assert_allclose(loss, total / 3, rtol=1e-5)


@pytest.mark.parametrize("form", ["area", "reference"])
def test_area_loss_matches_triangle_oracle(form):
    emb, present = make_embeddings(seed=6)
    tau, eps = 0.1, 0.1
    loss, aux = losses.LOSSES["area"](
        LossInputs(emb, present, temperature=tau, label_smoothing=eps), area_form=form
    )
    keep = present["video"] & present["audio"]
    t, v, a = (np.float64(emb[k][keep]) for k in ("text", "video", "audio"))
    u = t[:, None] - v[None]  # [i, j, D]
    w = t[:, None] - a[None]
    sq = np.sum(u * u, -1) * np.sum(w * w, -1) - np.sum(u * w, -1) ** 2  # (2 * area)^2
    area = 0.5 * np.sqrt(np.maximum(sq, 0)) if form == "area" else 0.5 * sq
    labels = np.arange(len(t))
    a2d = np_ce(-area / tau, labels, eps).mean()
    d2a = np_ce(-area.T / tau, labels, eps).mean()
    np.testing.assert_allclose(aux["loss_a2d"], a2d, rtol=2e-5)
    np.testing.assert_allclose(aux["loss_d2a"], d2a, rtol=2e-5)
    np.testing.assert_allclose(loss, 0.5 * (a2d + d2a), rtol=2e-5)
    np.testing.assert_allclose(aux["positive_area"], np.diag(area).mean(), rtol=1e-4)
    valid_rows = np.flatnonzero(keep)
    sub = np.asarray(aux["logits_a2d"])[np.ix_(valid_rows, valid_rows)]
    np.testing.assert_allclose(sub, -area / tau, rtol=1e-4, atol=1e-4)


def test_registry_functions_are_differentiable_and_finite():
    emb, present = make_embeddings(seed=7)
    for name, fn in losses.LOSSES.items():

        def f(e, fn=fn):
            return fn(LossInputs(e, present, temperature=0.07, rng=jax.random.key(0)))[0]

        grads = jax.jit(jax.grad(f))(emb)
        for key, g in grads.items():
            assert np.isfinite(np.asarray(g)).all(), (name, key)
            assert float(np.abs(np.asarray(g)).max()) > 0, (name, key)


def test_baselines_reject_bad_settings():
    emb, present = make_embeddings(seed=8)
    with pytest.raises(ValueError, match="rng"):
        losses.LOSSES["symile"](LossInputs(emb, present, temperature=0.1))
    with pytest.raises(ValueError, match="n_squared"):
        losses.LOSSES["symile"](
            LossInputs(
                {**emb, "subtitle": emb["audio"]},
                order=("video", "audio", "subtitle"),
                temperature=0.1,
            ),
            negative_sampling="n_squared",
        )
    with pytest.raises(ValueError, match="exactly 2"):
        losses.LOSSES["area"](LossInputs(emb, order=("video",), temperature=0.1))
    with pytest.raises(ValueError, match="pairs"):
        losses.LOSSES["sigmoid"](LossInputs(emb, temperature=0.1), pairs="some")
    with pytest.raises(ValueError, match=r"present\['video'\]"):
        LossInputs(emb, {"video": np.ones(3, bool)}, order=("video",), temperature=0.1).stacked()
    with pytest.raises(ValueError, match="distinct"):
        LossInputs(emb, order=("text", "video"), temperature=0.1)
    with pytest.raises(ValueError, match="gather_mode"):
        LossInputs(emb, temperature=0.1, gather_mode="all")

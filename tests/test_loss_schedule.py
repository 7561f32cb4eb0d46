"""Symmetry breakers (gram_jax.losses.schedule): the hybrid and staged losses against values
computed by hand from the formulas (Gram determinant, smoothed InfoNCE), and the weight schedule."""

from __future__ import annotations

import math

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from gram_jax.losses import LOSSES, LossInputs
from gram_jax.losses import schedule as loss_schedule


def _cfg(**kw):
    base = dict(
        name="volume",
        matching_weight=0.5,
        cosine_weight=0.0,
        cosine_pairs="anchor",
        cosine_warmup_steps=0,
        matching_start_step=0,
        matching_ramp_steps=0,
    )
    return ml_collections.ConfigDict({**base, **kw})


def _weights(cfg, step):
    return {k: float(v) for k, v in loss_schedule.loss_weights(cfg, jnp.int32(step)).items()}


def test_default_weights_are_the_papers_recipe():
    for step in (0, 7, 10_000):
        assert _weights(_cfg(), step) == {"main": 1.0, "cosine": 0.0, "matching": 0.5}
    assert not loss_schedule.uses_cosine_term(_cfg())


def test_staged_and_matching_schedule_by_hand():
    cfg = _cfg(
        cosine_weight=0.25, cosine_warmup_steps=10, matching_start_step=10, matching_ramp_steps=4
    )
    # Steps 0..9: the cosine term alone; from 10: volume + 0.25 cosine. Matching ramps over
    # steps 10, 11, 12, 13 to 0.5: 0.125, 0.25, 0.375, 0.5.
    assert _weights(cfg, 0) == {"main": 0.0, "cosine": 1.0, "matching": 0.0}
    assert _weights(cfg, 9) == {"main": 0.0, "cosine": 1.0, "matching": 0.0}
    assert _weights(cfg, 10) == {"main": 1.0, "cosine": 0.25, "matching": 0.125}
    assert _weights(cfg, 11)["matching"] == 0.25
    assert _weights(cfg, 13)["matching"] == 0.5
    assert _weights(cfg, 500)["matching"] == 0.5
    step_start = _cfg(matching_start_step=3)
    assert [_weights(step_start, s)["matching"] for s in (2, 3)] == [0.0, 0.5]


def test_bad_keys_are_named():
    with pytest.raises(ValueError, match="config.loss.cosine_pairs='pairs'"):
        loss_schedule.check_schedule(_cfg(cosine_pairs="pairs"))
    with pytest.raises(ValueError, match="config.loss.cosine_warmup_steps"):
        loss_schedule.check_schedule(_cfg(cosine_warmup_steps=-1))


# ----------------------------------------------------------------------------- by-hand oracle
def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _volume(*vectors):
    g = np.array([[float(np.dot(a, b)) for b in vectors] for a in vectors])
    return math.sqrt(max(np.linalg.det(g), 0.0))


def _smoothed_ce(logits, eps):
    """Mean over rows of PyTorch's label-smoothed cross-entropy, positive on the diagonal."""
    out = []
    for i, row in enumerate(logits):
        logz = math.log(sum(math.exp(v) for v in row))
        logp = [v - logz for v in row]
        out.append((1 - eps) * -logp[i] + eps * -sum(logp) / len(row))
    return sum(out) / len(out)


def _by_hand(t, v, a, tau, eps, pairs):
    n = len(t)
    vol = [[-_volume(t[i], v[j], a[j]) / tau for j in range(n)] for i in range(n)]
    volume_loss = 0.5 * (_smoothed_ce(vol, eps) + _smoothed_ce(np.array(vol).T, eps))
    emb = {"t": t, "v": v, "a": a}
    terms = []
    for p, q in pairs:
        cos = [[float(np.dot(emb[p][i], emb[q][j])) / tau for j in range(n)] for i in range(n)]
        terms.append(0.5 * (_smoothed_ce(cos, eps) + _smoothed_ce(np.array(cos).T, eps)))
    return volume_loss, sum(terms) / len(terms)


@pytest.mark.parametrize(
    "cosine_pairs, pairs",
    [("anchor", [("t", "v"), ("t", "a")]), ("all_pairs", [("t", "v"), ("t", "a"), ("v", "a")])],
)
def test_hybrid_and_staged_losses_equal_the_hand_computed_values(cosine_pairs, pairs):
    rng = np.random.default_rng(0)
    t, v, a = (_unit(rng.normal(size=(4, 5))) for _ in range(3))
    tau, eps, lam = 0.2, 0.1, 0.3
    vol_ref, cos_ref = _by_hand(t, v, a, tau, eps, pairs)
    embeddings = {"text": jnp.asarray(t), "video": jnp.asarray(v), "audio": jnp.asarray(a)}
    inputs = LossInputs(embeddings, temperature=tau, label_smoothing=eps)
    cfg = _cfg(cosine_weight=lam, cosine_pairs=cosine_pairs, cosine_warmup_steps=5)
    for step, expected in ((0, cos_ref), (4, cos_ref), (5, vol_ref + lam * cos_ref)):
        total, terms, _, _ = loss_schedule.scheduled_contrastive(
            LOSSES["volume"], inputs, loss_cfg=cfg, step=step, main_name="volume"
        )
        assert float(total) == pytest.approx(expected, rel=1e-5)
        assert float(terms["loss_volume"]) == pytest.approx(vol_ref, rel=1e-5)
        assert float(terms["loss_cosine"]) == pytest.approx(cos_ref, rel=1e-5)


def test_a_sign_flip_changes_the_cosine_term_but_not_the_volume():
    """Why the cosine term breaks the symmetry: flipping every audio vector leaves the volume loss
    unchanged and raises the cosine term (positives now point away from their text)."""
    rng = np.random.default_rng(1)
    t = _unit(rng.normal(size=(6, 8)))
    v = _unit(t + 0.3 * rng.normal(size=t.shape))
    a = _unit(t + 0.3 * rng.normal(size=t.shape))
    cfg = _cfg(cosine_weight=1.0)
    out = {}
    for name, audio in (("aligned", a), ("flipped", -a)):
        emb = {"text": jnp.asarray(t), "video": jnp.asarray(v), "audio": jnp.asarray(audio)}
        _, terms, _, _ = loss_schedule.scheduled_contrastive(
            LOSSES["volume"], LossInputs(emb, temperature=0.1), loss_cfg=cfg, step=0,
            main_name="volume",
        )  # fmt: skip
        out[name] = {k: float(x) for k, x in terms.items()}
    assert out["flipped"]["loss_volume"] == pytest.approx(out["aligned"]["loss_volume"], rel=1e-5)
    assert out["flipped"]["loss_cosine"] > out["aligned"]["loss_cosine"] + 1.0

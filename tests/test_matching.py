"""Hard negatives and the matching (DAM) loss.

Oracles: the released sampler's distribution written out in NumPy (softmax + 1e-4, positive zeroed,
renormalised), checked with a chi-square goodness-of-fit test over many draws, and PyTorch's
cross-entropy for the matching loss.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from gram_jax import losses
from gram_jax.losses import matching


def released_weights(logits, positive):
    """NumPy float64 port of the released sampler's weights, normalised to probabilities."""
    logits = np.float64(logits)
    p = np.exp(logits - logits.max(1, keepdims=True))
    p = p / p.sum(1, keepdims=True) + 1e-4
    p[np.arange(len(positive)), positive] = 0.0
    return p / p.sum(1, keepdims=True)


def test_draws_follow_the_released_distribution_and_skip_the_positive():
    rng = np.random.default_rng(0)
    b, n, draws = 3, 8, 40000
    logits_a2d = rng.normal(size=(b, n)).astype(np.float32) * 2.0
    logits_d2a = rng.normal(size=(b, n)).astype(np.float32) * 2.0
    # Rows are shard 1 of a batch split in blocks of 3: positives at columns 3, 4, 5.
    positive = np.arange(3, 6, dtype=np.int32)
    keys = jax.random.split(jax.random.key(42), draws)
    sample = jax.jit(
        jax.vmap(
            lambda k: matching.sample_hard_negatives(
                k, logits_a2d, logits_d2a, positive_index=positive
            )
        )
    )
    neg_data, neg_text = (np.asarray(x) for x in sample(keys))
    assert neg_data.shape == (draws, b) and neg_data.dtype == np.int32
    for drawn, logits in ((neg_data, logits_a2d), (neg_text, logits_d2a)):
        assert not np.any(drawn == positive[None, :]), "a positive was drawn as a negative"
        want = released_weights(logits, positive)
        for r in range(b):
            counts = np.bincount(drawn[:, r], minlength=n)
            allowed = want[r] > 0
            _, p_value = stats.chisquare(counts[allowed], want[r][allowed] * draws)
            assert p_value > 1e-3, (r, counts, want[r] * draws)


def test_no_nan_when_a_row_is_masked_except_one_entry():
    n = 6
    logits = np.full((3, n), -np.inf, np.float32)
    logits[0, 0] = 1.0  # only the positive is finite: uniform 1e-4 floor over the negatives
    logits[1, 4] = 1.0  # only a negative is finite: it takes (almost) all the mass
    # row 2 entirely -inf: softmax taken as 0, uniform floor
    logw = np.asarray(matching.hard_negative_log_weights(jnp.asarray(logits), jnp.arange(3)))
    assert not np.isnan(logw).any()
    assert np.isneginf(logw[np.arange(3), np.arange(3)]).all()
    np.testing.assert_allclose(np.exp(logw[0, 1:]), 1e-4, rtol=1e-5)
    np.testing.assert_allclose(np.exp(logw[1, 4]), 1.0 + 1e-4, rtol=1e-5)
    neg_data, neg_text = matching.sample_hard_negatives(
        jax.random.key(1), jnp.asarray(logits), jnp.asarray(logits)
    )
    assert np.all(np.asarray(neg_data) != np.arange(3))
    assert neg_data[1] == 4 and neg_text[1] == 4


def test_invalid_columns_are_never_drawn():
    logits = np.zeros((4, 8), np.float32)
    valid = np.array([True] * 6 + [False] * 2)
    keys = jax.random.split(jax.random.key(3), 2000)
    neg, _ = jax.jit(
        jax.vmap(lambda k: matching.sample_hard_negatives(k, logits, logits, column_valid=valid))
    )(keys)
    assert np.asarray(neg).max() < 6


def test_hard_negatives_from_volume_logits_prefer_close_tuples():
    """End to end with the loss's aux: the most-confusable tuple is drawn most often."""
    rng = np.random.default_rng(4)
    anchor = rng.normal(size=(6, 16))
    anchor /= np.linalg.norm(anchor, axis=1, keepdims=True)
    others = anchor[None] + 0.3 * rng.normal(size=(2, 6, 16))
    others[:, 1] = others[:, 0] + 0.01 * rng.normal(size=(2, 16))  # tuple 1 ~ tuple 0
    others /= np.linalg.norm(others, axis=-1, keepdims=True)
    _, aux = losses.volume_contrastive_loss(anchor, others, temperature=0.05)
    keys = jax.random.split(jax.random.key(5), 4000)
    neg_data, _ = jax.jit(
        jax.vmap(lambda k: matching.sample_hard_negatives(k, aux["logits_a2d"], aux["logits_d2a"]))
    )(keys)
    counts = np.bincount(np.asarray(neg_data)[:, 0], minlength=6)
    assert counts.argmax() == 1 and counts[0] == 0


def test_matching_batch_layout():
    neg_data = jnp.array([5, 6, 7], jnp.int32)
    neg_text = jnp.array([0, 1, 2], jnp.int32)
    batch = matching.build_matching_batch(neg_data, neg_text, positive_index=jnp.arange(3, 6))
    np.testing.assert_array_equal(batch["text_index"], [3, 4, 5, 3, 4, 5, 0, 1, 2])
    np.testing.assert_array_equal(batch["data_index"], [3, 4, 5, 5, 6, 7, 3, 4, 5])
    np.testing.assert_array_equal(batch["labels"], [1, 1, 1, 0, 0, 0, 0, 0, 0])


@pytest.mark.torch
def test_matching_loss_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(6)
    logits = rng.normal(size=(9, 2)).astype(np.float32) * 3
    labels = np.array([1] * 3 + [0] * 6, np.int32)
    want = torch.nn.functional.cross_entropy(
        torch.tensor(logits, dtype=torch.float64), torch.tensor(labels, dtype=torch.long)
    ).item()
    np.testing.assert_allclose(matching.matching_loss(logits, labels), want, rtol=1e-5)


def test_sampler_and_matching_reject_bad_shapes():
    with pytest.raises(ValueError, match="N >= 2"):
        matching.sample_hard_negatives(jax.random.key(0), jnp.zeros((1, 1)), jnp.zeros((1, 1)))
    with pytest.raises(ValueError, match="one shape"):
        matching.sample_hard_negatives(jax.random.key(0), jnp.zeros((2, 4)), jnp.zeros((2, 3)))
    with pytest.raises(ValueError, match="positive_index"):
        matching.sample_hard_negatives(
            jax.random.key(0), jnp.zeros((2, 4)), jnp.zeros((2, 4)), positive_index=jnp.arange(3)
        )
    with pytest.raises(ValueError, match=r"\[M, 2\]"):
        matching.matching_loss(jnp.zeros((4, 3)), jnp.zeros(4, jnp.int32))

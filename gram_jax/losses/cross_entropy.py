"""Row-wise cross-entropy pieces shared by the volume loss and the baseline losses.

Most functions work on [b, N] logits whose rows are (local) samples and whose columns are candidates
of the global batch; `labels` give the positive column of each row (`offset + arange(b)` for a
contrastive batch, see `gram_jax.losses.gather`). They return per-row values so that gather modes
can sum rows across shards before taking the mean.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

# A large finite negative instead of -inf for masked logits: -inf * 0 in the smoothing term is NaN.
MASKED_LOGIT = -1e9


def smoothed_cross_entropy(
    logits: jax.Array,
    labels: jax.Array,
    label_smoothing: float = 0.0,
    column_valid: jax.Array | None = None,
) -> jax.Array:
    """Per-row cross-entropy with PyTorch-style label smoothing.

    The target of row r is `(1 - eps) * onehot(labels[r]) + eps / N_valid * uniform` over the valid
    columns, as `torch.nn.functional.cross_entropy(..., label_smoothing=eps)` does (N_valid = N when
    no column is masked).

    Args:
      logits: float[b, N] (computed in float32).
      labels: int32[b], positive column per row.
      label_smoothing: eps in [0, 1).
      column_valid: optional bool[N] (or [b, N]); False columns are excluded from the softmax and
        from the uniform part of the target (e.g. samples whose modality is missing).

    Returns:
      float32[b] loss per row.
    """
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing={label_smoothing}: expected a value in [0, 1)")
    logits = logits.astype(jnp.float32)
    if column_valid is not None:
        valid = jnp.broadcast_to(column_valid, logits.shape)
        logits = jnp.where(valid, logits, MASKED_LOGIT)
    logp = jax.nn.log_softmax(logits, axis=-1)
    nll = -jnp.take_along_axis(logp, labels[:, None].astype(jnp.int32), axis=-1)[:, 0]
    if label_smoothing == 0.0:
        return nll
    if column_valid is None:
        uniform = -jnp.mean(logp, axis=-1)
    else:
        count = jnp.maximum(jnp.sum(valid, axis=-1), 1)
        uniform = -jnp.sum(jnp.where(valid, logp, 0.0), axis=-1) / count
    return (1.0 - label_smoothing) * nll + label_smoothing * uniform


def masked_mean(values: jax.Array, mask: jax.Array | None) -> jax.Array:
    """Mean of float[N] `values` over the True entries of bool[N] `mask` (all entries if None).

    Returns 0.0 (not NaN) when no entry is selected, so a batch where a pair is entirely missing
    contributes nothing rather than poisoning the step.
    """
    values = values.astype(jnp.float32)
    if mask is None:
        return jnp.mean(values)
    mask = mask.astype(jnp.float32)
    return jnp.sum(values * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def positive_labels(offset: jax.Array, rows: int) -> jax.Array:
    """int32[rows]: the positive column of each local row, `offset + arange(rows)`."""
    return offset + jnp.arange(rows, dtype=jnp.int32)

"""The matching (DAM, data-anchor matching) loss and its volume-based hard negatives.

Reference: `model/gram.py` lines 485-525 (paper Sec. 3.3, data-anchor matching). For each anchor
(text) one negative data tuple is drawn with probability proportional to softmax(-Vol / tau) + 1e-4
over all tuples of the global batch, its own positive excluded; symmetrically one negative text per
data tuple. The fusion encoder then classifies a 3B batch: (pos text, pos data) -> 1,
(pos text, neg data) -> 0, (neg text, pos data) -> 0, with plain 2-way cross-entropy. The released
code draws each negative with a per-sample `torch.multinomial(...).item()` host loop; here one
`jax.random.categorical` call per direction draws all of them on device.

Indexing: logits are [B, N] with rows = the B samples this call draws for (all of the global batch
under 'global', one shard's rows under shard_map) and columns = the N samples of the global batch.
Row r's positive is column `positive_index[r]`; the default `arange(B)` is right when the rows are
the whole batch (B = N) or the first shard. A shard with offset `o` (= shard index x B) passes
`positive_index = o + arange(B)`. The returned indices are column indices into the global batch, so
the caller gathers the negative texts / condition tokens from the all-gathered (global) arrays.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

# Added to every softmax weight, as the released code does, so every non-positive candidate keeps a
# chance to be drawn even when the softmax underflows.
WEIGHT_FLOOR = 1e-4


def hard_negative_log_weights(
    logits: jax.Array, positive_index: jax.Array, column_valid: jax.Array | None = None
) -> jax.Array:
    """float32[B, N]: log(softmax(logits) + 1e-4), -inf at the positive (and at invalid columns).

    Finite wherever a draw is allowed, even when a logits row is entirely -inf (its softmax is then
    taken as 0, leaving the uniform 1e-4 floor), so sampling never produces NaN.
    """
    logits = logits.astype(jnp.float32)
    b, n = logits.shape
    row_max = jnp.max(logits, axis=-1, keepdims=True)
    finite_row = jnp.isfinite(row_max)
    shifted = jnp.where(finite_row, logits - jnp.where(finite_row, row_max, 0.0), -jnp.inf)
    expd = jnp.exp(shifted)
    probs = expd / jnp.maximum(jnp.sum(expd, axis=-1, keepdims=True), jnp.finfo(jnp.float32).tiny)
    allowed = jnp.arange(n, dtype=jnp.int32)[None, :] != positive_index[:, None]
    if column_valid is not None:
        allowed = allowed & jnp.broadcast_to(column_valid.astype(bool), (b, n))
    return jnp.where(allowed, jnp.log(probs + WEIGHT_FLOOR), -jnp.inf)


def sample_hard_negatives(
    rng: jax.Array,
    logits_a2d: jax.Array,
    logits_d2a: jax.Array,
    *,
    positive_index: jax.Array | None = None,
    column_valid: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Draws one hard negative per row in each direction (module docstring for the indexing).

    Args:
      rng: a PRNG key.
      logits_a2d: float[B, N], row = anchor, columns = data tuples (-Vol / tau).
      logits_d2a: float[B, N], row = data tuple, columns = anchors.
      positive_index: optional int32[B], the positive column of each row (default arange(B)).
      column_valid: optional bool[N]; False columns (e.g. padding) are never drawn.

    Returns:
      (neg_data_index int32[B]: for anchor r, a data tuple != its positive;
       neg_text_index int32[B]: for data tuple r, an anchor != its positive). No gradient flows.
    """
    if logits_a2d.ndim != 2 or logits_a2d.shape != logits_d2a.shape:
        raise ValueError(
            f"sample_hard_negatives: expected logits_a2d and logits_d2a of one shape [B, N], got "
            f"{logits_a2d.shape} and {logits_d2a.shape}"
        )
    b, n = logits_a2d.shape
    if n < 2:
        raise ValueError(f"sample_hard_negatives: need N >= 2 columns to draw a negative, got {n}")
    if positive_index is None:
        if b > n:
            raise ValueError(
                f"sample_hard_negatives: B={b} rows > N={n} columns; pass positive_index"
            )
        positive_index = jnp.arange(b, dtype=jnp.int32)
    positive_index = jnp.asarray(positive_index, jnp.int32)
    if positive_index.shape != (b,):
        raise ValueError(f"positive_index: expected int32[{b}], got shape {positive_index.shape}")
    key_data, key_text = jax.random.split(rng)
    logits_a2d = jax.lax.stop_gradient(logits_a2d)
    logits_d2a = jax.lax.stop_gradient(logits_d2a)
    neg_data = jax.random.categorical(
        key_data, hard_negative_log_weights(logits_a2d, positive_index, column_valid), axis=-1
    )
    neg_text = jax.random.categorical(
        key_text, hard_negative_log_weights(logits_d2a, positive_index, column_valid), axis=-1
    )
    return neg_data.astype(jnp.int32), neg_text.astype(jnp.int32)


def build_matching_batch(
    neg_data_index: jax.Array, neg_text_index: jax.Array, *, positive_index: jax.Array | None = None
) -> dict[str, jax.Array]:
    """Index arrays of the 3B matching batch (released order: pos/pos, pos/neg data, neg text/pos).

    Args:
      neg_data_index, neg_text_index: int32[B] from `sample_hard_negatives`.
      positive_index: int32[B] global index of each row's own sample (default arange(B)).

    Returns:
      {'text_index': int32[3B], 'data_index': int32[3B], 'labels': int32[3B]} where text_index /
      data_index index the global batch (texts; condition tokens of the data tuple) and labels are
      [1] * B + [0] * 2B.
    """
    b = neg_data_index.shape[0]
    if neg_text_index.shape != (b,):
        raise ValueError(
            f"neg_text_index: expected shape ({b},) like neg_data_index, got {neg_text_index.shape}"
        )
    pos = jnp.arange(b, dtype=jnp.int32) if positive_index is None else positive_index
    pos = jnp.asarray(pos, jnp.int32)
    return {
        "text_index": jnp.concatenate([pos, pos, neg_text_index.astype(jnp.int32)]),
        "data_index": jnp.concatenate([pos, neg_data_index.astype(jnp.int32), pos]),
        "labels": jnp.concatenate([jnp.ones(b, jnp.int32), jnp.zeros(2 * b, jnp.int32)]),
    }


def matching_loss(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Plain 2-way cross-entropy of the matching head (no smoothing, no class weights).

    Args:
      logits: float[3B, 2] (computed in float32); labels: int32[3B] in {0, 1}.

    Returns:
      float32[] mean loss.
    """
    if logits.ndim != 2 or logits.shape[-1] != 2 or labels.shape != logits.shape[:1]:
        raise ValueError(
            f"matching_loss: expected logits [M, 2] and labels [M], got {logits.shape} and "
            f"{labels.shape}"
        )
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    return -jnp.mean(jnp.take_along_axis(logp, labels[:, None].astype(jnp.int32), axis=-1))

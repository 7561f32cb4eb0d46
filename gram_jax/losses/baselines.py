"""Baseline alignment losses for the ablations, all with the `LOSSES` registry signature
`fn(inputs: LossInputs, *, <own options>) -> (loss float32[], aux dict)` (`gram_jax.losses.inputs`).

- `cosine_anchor_loss`: symmetric cosine InfoNCE between the anchor and each data modality
  (text-video + text-audio: the "anchor everything to text" recipe of ImageBind, VAST...).
- `cosine_all_pairs_loss`: the same over every unordered pair of modalities (video-audio included).
- `sigmoid_loss`: SigLIP's pairwise sigmoid loss, logits = cos / tau + bias, label +1 on matched
  pairs and -1 elsewhere, summed over columns and averaged over rows; `bias` is a keyword (SigLIP
  inits it to -10 and learns it; the caller owns that parameter).
- `symile_loss`: Symile (Saporta et al., NeurIPS 2024): the multilinear inner product
  MIP(x, y, z) = sum_d x_d y_d z_d of all modalities; each modality in turn is the anchor and must
  pick its positive among candidates built from the other modalities: `negative_sampling='n'`
  (default, O(N) negatives: each non-anchor modality is shuffled by its own random permutation, the
  diagonal holds the positive MIP), or `'n_squared'` (every combination of rows of the two
  non-anchor modalities; 3 modalities). Symile's total is the mean of the per-anchor CEs.
- `area_loss`: TRIANGLE (Cicchetti et al., NeurIPS 2025): GRAM's two-direction loss with the area of
  the triangle (t_i, v_j, a_j) in place of the volume; exactly 3 modalities.

The same `label_smoothing` (0.1, GRAM's setting) applies to every softmax loss by default so that an
ablation changes only the alignment measure; pass 0.0 for the original papers' plain cross-entropy.

Missing modalities (never replaced by a fake vector): a pair term (cosine, sigmoid) uses exactly the
samples where both of its modalities are present, as rows and as columns; Symile and area use the
samples with every modality present as rows, and candidates whose own rows are all present.
Gather modes behave as for the volume loss (`gram_jax.losses.gather`): each softmax term has local
rows against gathered columns, so in 'reference' mode each direction trains only its row side.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp

from gram_jax.losses.cross_entropy import masked_mean, positive_labels, smoothed_cross_entropy
from gram_jax.losses.gather import apply_gathered
from gram_jax.losses.inputs import LossInputs
from gram_jax.volume import pairwise_triangle_area


def _pair_terms(local, gathered, offset, pairs, tau, eps):
    """Per-row smoothed InfoNCE of both directions of each pair (p, q) of modality positions."""
    rows = local["emb"].shape[0]
    labels = positive_labels(offset, rows)
    out = {}
    for p, q in pairs:
        row_valid = local["present"][:, p] & local["present"][:, q]
        for src, dst in ((p, q), (q, p)):
            logits = local["emb"][:, src] @ gathered["emb"][:, dst].T / tau
            # A column needs its own pair complete: its index is the positive of some row.
            col_valid = gathered["present"][:, src] & gathered["present"][:, dst]
            ce = smoothed_cross_entropy(logits, labels, eps, column_valid=col_valid)
            out[f"ce_{src}_{dst}"] = jnp.where(row_valid, ce, 0.0)
        out[f"valid_{p}_{q}"] = row_valid
    return out


def _pair_loss(inputs: LossInputs, pairs):
    names = inputs.names
    tau = inputs.tau()
    out = apply_gathered(
        lambda lo, ga, off: _pair_terms(lo, ga, off, pairs, tau, inputs.label_smoothing),
        inputs.stacked(),
        gather_mode=inputs.gather_mode,
        mesh=inputs.mesh,
        batch_axes=inputs.batch_axes,
    )
    aux, terms = {"temperature": tau}, []
    for p, q in pairs:
        valid = out[f"valid_{p}_{q}"]
        pq = masked_mean(out[f"ce_{p}_{q}"], valid)
        qp = masked_mean(out[f"ce_{q}_{p}"], valid)
        aux[f"loss_{names[p]}_{names[q]}"] = 0.5 * (pq + qp)
        terms.append(0.5 * (pq + qp))
    return jnp.mean(jnp.stack(terms)), aux


def cosine_anchor_loss(inputs: LossInputs):
    """Symmetric cosine InfoNCE of (anchor, m) for every m in `order`, averaged over pairs.

    aux: 'loss_<anchor>_<m>' per pair, 'temperature'.
    """
    return _pair_loss(inputs, [(0, i + 1) for i in range(len(inputs.order))])


def cosine_all_pairs_loss(inputs: LossInputs):
    """Symmetric cosine InfoNCE over every unordered pair of (anchor, *order), averaged.

    aux: 'loss_<m1>_<m2>' per pair, 'temperature'.
    """
    return _pair_loss(inputs, list(itertools.combinations(range(len(inputs.names)), 2)))


def sigmoid_loss(inputs: LossInputs, *, bias=-10.0, pairs="anchor"):
    """SigLIP's sigmoid loss per pair: -1/N sum_ij log sigmoid(z_ij (cos_ij / tau + bias)).

    Args:
      bias: float or float32[] (learnable in SigLIP, init -10).
      pairs: 'anchor' (anchor with each modality of `order`) or 'all' (every unordered pair).
      `inputs.label_smoothing` does not apply (no softmax). Both directions are summed and halved,
      which equals one direction in 'global' mode but lets 'reference' mode train both sides.

    Returns:
      (loss, aux) with 'loss_<m1>_<m2>' per pair, 'temperature', 'bias'.
    """
    if pairs not in ("anchor", "all"):
        raise ValueError(f"sigmoid_loss pairs={pairs!r}: expected 'anchor' or 'all'")
    names = inputs.names
    index_pairs = (
        [(0, i + 1) for i in range(len(inputs.order))]
        if pairs == "anchor"
        else list(itertools.combinations(range(len(names)), 2))
    )
    tau = inputs.tau()
    bias = jnp.asarray(bias, jnp.float32)
    tensors = inputs.stacked()

    def per_rows(local, gathered, offset):
        labels = positive_labels(offset, local["emb"].shape[0])
        n = gathered["emb"].shape[0]
        sign = jnp.where(jnp.arange(n)[None, :] == labels[:, None], 1.0, -1.0)
        out = {}
        for p, q in index_pairs:
            for src, dst in ((p, q), (q, p)):
                logits = local["emb"][:, src] @ gathered["emb"][:, dst].T / tau + bias
                valid = (local["present"][:, src] & local["present"][:, dst])[:, None] & (
                    gathered["present"][:, src] & gathered["present"][:, dst]
                )[None, :]
                nll = -jax.nn.log_sigmoid(sign * logits)
                out[f"sum_{src}_{dst}"] = jnp.sum(jnp.where(valid, nll, 0.0), axis=1)
            out[f"valid_{p}_{q}"] = local["present"][:, p] & local["present"][:, q]
        return out

    out = apply_gathered(
        per_rows,
        tensors,
        gather_mode=inputs.gather_mode,
        mesh=inputs.mesh,
        batch_axes=inputs.batch_axes,
    )
    aux, terms = {"temperature": tau, "bias": bias}, []
    for p, q in index_pairs:
        term = 0.5 * (
            masked_mean(out[f"sum_{p}_{q}"], out[f"valid_{p}_{q}"])
            + masked_mean(out[f"sum_{q}_{p}"], out[f"valid_{p}_{q}"])
        )
        aux[f"loss_{names[p]}_{names[q]}"] = term
        terms.append(term)
    return jnp.mean(jnp.stack(terms)), aux


def symile_loss(inputs: LossInputs, *, negative_sampling="n"):
    """Symile: cross-entropy over multilinear inner products, each modality the anchor in turn.

    Args:
      inputs: as the module docstring; logits = MIP / tau. `inputs.rng` is required for
        negative_sampling='n': the candidates of anchor modality a take modality i's rows in the
        order `jax.random.permutation(jax.random.split(rng, M * M)[a * M + i], N)` (M modalities;
        the same key on every shard gives every shard the same global permutation).
      negative_sampling: 'n' (N-1 negatives per row, from independently permuted non-anchor rows) or
        'n_squared' (N^2 - 1 negatives: all combinations; needs exactly 3 modalities).

    Returns:
      (loss, aux) with 'loss_anchor_<m>' per anchor modality and 'temperature'.
    """
    names = inputs.names
    m = len(names)
    if negative_sampling not in ("n", "n_squared"):
        raise ValueError(
            f"symile negative_sampling={negative_sampling!r}: expected 'n' or 'n_squared'"
        )
    if negative_sampling == "n_squared" and m != 3:
        raise ValueError(f"symile negative_sampling='n_squared' needs 3 modalities, got {names}")
    if negative_sampling == "n" and inputs.rng is None:
        raise ValueError(
            "symile negative_sampling='n': pass LossInputs(rng=<PRNG key>) for the permutations"
        )
    tau = inputs.tau()
    label_smoothing = inputs.label_smoothing
    tensors = inputs.stacked()
    n_total = tensors["emb"].shape[0]
    if negative_sampling == "n":
        # A fresh permutation per (anchor, modality), as Symile redraws them for every anchor;
        # stored [N, M*M] so it shards like the rest and is gathered back whole inside.
        keys = jax.random.split(inputs.rng, m * m)
        tensors["perm"] = jnp.stack([jax.random.permutation(k, n_total) for k in keys], axis=1)

    def per_rows(local, gathered, offset):
        rows = local["emb"].shape[0]
        labels = positive_labels(offset, rows)
        row_valid = jnp.all(local["present"], axis=1)
        out = {"valid": row_valid}
        for a in range(m):
            rest = [i for i in range(m) if i != a]
            x = local["emb"][:, a]
            positive = jnp.sum(x * jnp.prod(local["emb"][:, rest], axis=1), axis=-1)
            if negative_sampling == "n":
                perm = gathered["perm"]
                cand = jnp.prod(
                    jnp.stack([gathered["emb"][perm[:, a * m + i], i] for i in rest]), axis=0
                )
                cand_valid = jnp.all(
                    jnp.stack([gathered["present"][perm[:, a * m + i], i] for i in rest]), axis=0
                )
                logits = x @ cand.T
                is_pos = jnp.arange(n_total)[None, :] == labels[:, None]
                logits = jnp.where(is_pos, positive[:, None], logits) / tau
                col_valid = jnp.where(is_pos, True, cand_valid[None, :])
                ce = smoothed_cross_entropy(logits, labels, label_smoothing, column_valid=col_valid)
            else:
                y, z = (gathered["emb"][:, i] for i in rest)
                # [b, N, N] over all (y_j, z_k) combinations; the positive is (j, k) = (i, i).
                logits = jnp.einsum("bd,jd,kd->bjk", x, y, z) / tau
                pres_y, pres_z = (gathered["present"][:, i] for i in rest)
                col_valid = (pres_y[:, None] & pres_z[None, :]).reshape(-1)
                ce = smoothed_cross_entropy(
                    logits.reshape(rows, -1),
                    labels * (n_total + 1),
                    label_smoothing,
                    column_valid=col_valid,
                )
            out[f"ce_{a}"] = jnp.where(row_valid, ce, 0.0)
        return out

    out = apply_gathered(
        per_rows,
        tensors,
        gather_mode=inputs.gather_mode,
        mesh=inputs.mesh,
        batch_axes=inputs.batch_axes,
    )
    aux = {"temperature": tau}
    terms = []
    for a in range(m):
        term = masked_mean(out[f"ce_{a}"], out["valid"])
        aux[f"loss_anchor_{names[a]}"] = term
        terms.append(term)
    return jnp.mean(jnp.stack(terms)), aux


def area_loss(inputs: LossInputs, *, area_form="area"):
    """TRIANGLE: logits = -area(t_i, v_j, a_j) / tau, both directions as the volume loss.

    Args:
      area_form: 'area' (the triangle's area) or 'reference' (2 * area^2, what the released TRIANGLE
        code feeds its softmax); see `gram_jax.volume.pairwise_triangle_area`.

    Returns:
      (loss, aux) with 'logits_a2d', 'logits_d2a' ([N, N], as the volume loss's, so the matching
      loss can draw hard negatives from them), 'loss_a2d', 'loss_d2a', 'positive_area',
      'temperature'.
    """
    if len(inputs.order) != 2:
        raise ValueError(
            f"area loss needs exactly 2 data modalities (a triangle), got {inputs.order}"
        )
    tau = inputs.tau()
    label_smoothing = inputs.label_smoothing
    tensors = inputs.stacked()

    def per_rows(local, gathered, offset):
        labels = positive_labels(offset, local["emb"].shape[0])

        def areas(anchors, tuples):
            return pairwise_triangle_area(
                anchors["emb"][:, 0], tuples["emb"][:, 1], tuples["emb"][:, 2], form=area_form
            )

        area_a2d = areas(local, gathered)
        area_d2a = area_a2d.T if gathered is local else areas(gathered, local).T
        col_valid = jnp.all(gathered["present"], axis=1)
        row_valid = jnp.all(local["present"], axis=1)
        ce = {
            name: jnp.where(
                row_valid,
                smoothed_cross_entropy(
                    -area / tau, labels, label_smoothing, column_valid=col_valid
                ),
                0.0,
            )
            for name, area in (("a2d", area_a2d), ("d2a", area_d2a))
        }
        positive = jnp.take_along_axis(area_a2d, labels[:, None], axis=1)[:, 0]
        return {
            "ce_a2d": ce["a2d"],
            "ce_d2a": ce["d2a"],
            "positive": positive,
            "valid": row_valid,
            "logits_a2d": -area_a2d / tau,
            "logits_d2a": -area_d2a / tau,
        }

    out = apply_gathered(
        per_rows,
        tensors,
        gather_mode=inputs.gather_mode,
        mesh=inputs.mesh,
        batch_axes=inputs.batch_axes,
    )
    loss_a2d = masked_mean(out["ce_a2d"], out["valid"])
    loss_d2a = masked_mean(out["ce_d2a"], out["valid"])
    aux = {
        "logits_a2d": out["logits_a2d"],
        "logits_d2a": out["logits_d2a"],
        "loss_a2d": loss_a2d,
        "loss_d2a": loss_d2a,
        "positive_area": masked_mean(jax.lax.stop_gradient(out["positive"]), out["valid"]),
        "temperature": tau,
    }
    return 0.5 * (loss_a2d + loss_d2a), aux

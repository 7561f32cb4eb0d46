"""The three gather modes on 8 fake CPU devices: 'local' equals 'global' in loss and gradients
(<= 1e-5 relative), 'reference' is the same with or without a mesh, and bad set-ups get clear
errors.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, NamedSharding, PartitionSpec

from gram_jax import losses
from gram_jax.losses import gather
from gram_jax.losses.inputs import LossInputs


def unit(x):
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def make_mesh(shape, names):
    return jax.make_mesh(shape, names, axis_types=(AxisType.Auto,) * len(names))


def batch(b=16, d=12, k=3, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(b, d))
    anchor = unit(base + rng.normal(size=(b, d)))
    others = unit(base[None] + rng.normal(size=(k - 1, b, d)))
    present = rng.random((k - 1, b)) > 0.2
    return anchor, others, present


def rel_err(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def loss_and_grads(mode, mesh, batch_axes, anchor, others, present):
    def f(a, o, tau):
        loss, aux = losses.volume_contrastive_loss(
            a,
            o,
            temperature=tau,
            present=present,
            gather_mode=mode,
            mesh=mesh,
            batch_axes=batch_axes,
        )
        return loss, aux

    fn = jax.jit(jax.value_and_grad(f, argnums=(0, 1, 2), has_aux=True))
    return fn(anchor, others, jnp.float32(0.07))


@pytest.mark.parametrize(
    "shape, names, batch_axes",
    [((8,), ("data",), ("data",)), ((4, 2), ("data", "fsdp"), ("data", "fsdp"))],
)
def test_local_equals_global_on_8_devices(shape, names, batch_axes):
    mesh = make_mesh(shape, names)
    anchor, others, present = batch(b=16, k=4, seed=1)
    spec = PartitionSpec(batch_axes)
    anchor_s = jax.device_put(anchor, NamedSharding(mesh, spec))
    others_s = jax.device_put(others, NamedSharding(mesh, PartitionSpec(None, batch_axes)))
    (g_loss, g_aux), g_grads = loss_and_grads("global", None, batch_axes, anchor, others, present)
    (l_loss, l_aux), l_grads = loss_and_grads(
        "local", mesh, batch_axes, anchor_s, others_s, present
    )
    assert rel_err(l_loss, g_loss) <= 1e-5
    for got, want in zip(l_grads, g_grads, strict=True):
        assert rel_err(got, want) <= 1e-5
    for key in ("logits_a2d", "logits_d2a", "loss_a2d", "loss_d2a", "positive_volume"):
        assert rel_err(l_aux[key], g_aux[key]) <= 1e-5, key
    # The local logits stay row-sharded: each device holds its [b, N] block.
    assert l_aux["logits_a2d"].sharding.shard_shape((16, 16)) == (16 // int(np.prod(shape)), 16)


def test_reference_with_mesh_equals_reference_without():
    mesh = make_mesh((8,), ("data",))
    anchor, others, present = batch(b=16, seed=2)
    (r_loss, _), r_grads = loss_and_grads("reference", None, ("data",), anchor, others, present)
    (m_loss, _), m_grads = loss_and_grads("reference", mesh, ("data",), anchor, others, present)
    assert rel_err(m_loss, r_loss) <= 1e-5
    for got, want in zip(m_grads, r_grads, strict=True):
        assert rel_err(got, want) <= 1e-5
    # Same loss value as 'global', different gradients (half the paths are detached).
    (g_loss, _), g_grads = loss_and_grads("global", None, ("data",), anchor, others, present)
    assert rel_err(r_loss, g_loss) <= 1e-6
    assert rel_err(r_grads[1], g_grads[1]) > 0.05


@pytest.mark.parametrize("name", ["cosine_anchor", "cosine_all_pairs", "sigmoid", "symile", "area"])
def test_baselines_local_equals_global(name):
    mesh = make_mesh((8,), ("data",))
    anchor, others, present = batch(b=16, seed=3)
    emb = {"text": anchor, "video": others[0], "audio": others[1]}
    pres = {"video": present[0], "audio": present[1]}

    def run(mode):
        def f(e):
            inputs = LossInputs(
                e, pres, temperature=0.1, gather_mode=mode, mesh=mesh, rng=jax.random.key(7)
            )
            return losses.LOSSES[name](inputs)[0]

        return jax.jit(jax.value_and_grad(f))(emb)

    g_loss, g_grads = run("global")
    l_loss, l_grads = run("local")
    assert rel_err(l_loss, g_loss) <= 1e-5
    for key in emb:
        assert rel_err(l_grads[key], g_grads[key]) <= 1e-5, key


def test_apply_gathered_offsets_and_outputs():
    """fn sees its shard's rows, the full gathered batch and the right offset in every mode."""
    mesh = make_mesh((8,), ("data",))
    x = jnp.arange(16, dtype=jnp.float32)[:, None] * jnp.ones((1, 3))

    def fn(local, gathered, offset):
        rows = local["x"].shape[0]
        return {
            "row_id": offset + jnp.arange(rows),
            "matches": local["x"][:, 0] == gathered["x"][offset + jnp.arange(rows), 0],
            "total": jnp.broadcast_to(jnp.sum(gathered["x"][:, 0]), (rows,)),
        }

    for mode, m in (("global", None), ("local", mesh), ("reference", mesh)):
        out = gather.apply_gathered(fn, {"x": x}, gather_mode=mode, mesh=m)
        np.testing.assert_array_equal(out["row_id"], np.arange(16))
        assert bool(jnp.all(out["matches"]))
        np.testing.assert_allclose(out["total"], 120.0)


def test_apply_gathered_errors_name_the_problem():
    mesh = make_mesh((8,), ("data",))

    def fn(local, gathered, offset):
        return {"y": local["x"]}

    with pytest.raises(ValueError, match="gather_mode"):
        gather.apply_gathered(fn, {"x": jnp.ones((8, 2))}, gather_mode="allgather")
    with pytest.raises(ValueError, match="needs a mesh"):
        gather.apply_gathered(fn, {"x": jnp.ones((8, 2))}, gather_mode="local")
    with pytest.raises(ValueError, match="not divisible"):
        gather.apply_gathered(fn, {"x": jnp.ones((12, 2))}, gather_mode="local", mesh=mesh)
    with pytest.raises(ValueError, match="not in the mesh"):
        gather.apply_gathered(
            fn, {"x": jnp.ones((8, 2))}, gather_mode="local", mesh=mesh, batch_axes=("fsdp",)
        )
    with pytest.raises(ValueError, match="leading batch axis"):
        gather.apply_gathered(fn, {"x": jnp.ones((8, 2)), "y": jnp.ones((4, 2))})

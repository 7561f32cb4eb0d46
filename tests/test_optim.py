"""The optimizer: which leaves get weight decay and which lr; schedules, clipping, accumulation."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from flax import nnx

from gram_jax import optim
from gram_jax.config.defaults import trainer_defaults
from gram_jax.models import layers
from gram_jax.models.gram import GramModel, tiny_model_config
from gram_jax.models.temperature import Temperature


class Tower(nnx.Module):
    """A small real tower built from the project's layers and flax's own norms."""

    def __init__(self, rngs):
        self.embed = layers.Embed(11, 8, rngs=rngs)
        self.frame_embedding = nnx.Param(jnp.zeros((4, 8)))
        self.proj = layers.Dense(8, 8, axes=("embed", "mlp"), rngs=rngs)
        self.norm = layers.LayerNorm(8, rngs=rngs)
        self.rms = nnx.RMSNorm(8, rngs=rngs)
        self.flax_ln = nnx.LayerNorm(8, rngs=rngs)
        self.head = nnx.Linear(8, 4, use_bias=False, rngs=rngs)

    def __call__(self, ids):
        x = self.embed(ids) + self.frame_embedding[...].sum(0)
        return self.head(self.flax_ln(self.rms(self.norm(self.proj(x)))))


class TwoTowers(nnx.Module):
    def __init__(self, rngs):
        self.vision = Tower(rngs)
        self.text = Tower(rngs)
        self.temperature = Temperature(0.07)

    def loss(self, ids):
        return jnp.sum(self.vision(ids) ** 2 + self.text(ids) ** 2) / self.temperature()


def _model():
    return TwoTowers(nnx.Rngs(0))


def _flat(tree):
    return {
        "/".join(str(getattr(k, "key", k)) for k in p): v
        for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]
    }


def test_decay_mask_excludes_norms_biases_embeddings_and_temperature():
    mask = _flat(optim.weight_decay_mask(_model()))
    decayed = sorted(k for k, v in mask.items() if v)
    assert decayed == [
        "text/head/kernel",
        "text/proj/kernel",
        "vision/head/kernel",
        "vision/proj/kernel",
    ]
    # Every norm parameter (project LayerNorm, flax RMSNorm and LayerNorm) is excluded.
    for key in ("norm/scale", "norm/bias", "rms/scale", "flax_ln/scale", "flax_ln/bias"):
        assert mask[f"vision/{key}"] is False, key
    assert mask["temperature/log_temperature"] is False
    assert mask["vision/embed/embedding"] is False
    assert mask["vision/frame_embedding"] is False


def test_decay_embeddings_switch_restores_reference_behaviour():
    mask = _flat(optim.weight_decay_mask(_model(), decay_embeddings=True))
    assert mask["vision/embed/embedding"] is True
    assert mask["vision/frame_embedding"] is True
    assert mask["vision/norm/scale"] is False


def test_group_labels_from_default_config_pattern():
    groups = trainer_defaults().optim.lr_groups.to_dict()
    labels = _flat(optim.group_labels(_model(), groups))
    assert {k for k, v in labels.items() if v == "vision"} == {
        k for k in labels if k.startswith("vision/")
    }
    assert labels["text/proj/kernel"] == "default"
    assert labels["temperature/log_temperature"] == "default"


def _train_once(optim_overrides, schedule=None, total_steps=10, steps=1):
    model = _model()
    config = trainer_defaults()
    config.optim.update(optim_overrides)
    if schedule:
        config.schedule.update(schedule)
    tx, schedules = optim.make_optimizer(config.optim, config.schedule, total_steps, model)
    graphdef, params = nnx.split(model, nnx.Param)
    pure = nnx.to_pure_dict(params)
    opt_state = tx.init(pure)
    ids = jnp.arange(6) % 11

    def loss(p):
        st = jax.tree.map(lambda x: x, params)
        nnx.replace_by_pure_dict(st, p)
        return nnx.merge(graphdef, st).loss(ids)

    history = [pure]
    for _ in range(steps):
        grads = jax.grad(loss)(pure)
        updates, opt_state = tx.update(grads, opt_state, pure)
        pure = optax.apply_updates(pure, updates)
        history.append(pure)
    return history, schedules, jax.grad(loss)


def test_per_group_learning_rates_match_adamw_step():
    # Constant schedule, no warm-up, no decay: the first AdamW step moves each weight by lr
    # (times the sign of its gradient); vision leaves at 5e-7, the rest at 2e-5.
    history, schedules, _ = _train_once(
        {"weight_decay": 0.0}, schedule={"name": "constant", "warmup_fraction": 0.0}
    )
    before, after = _flat(history[0]), _flat(history[1])
    vision = np.abs(after["vision/proj/kernel"] - before["vision/proj/kernel"])
    text = np.abs(after["text/proj/kernel"] - before["text/proj/kernel"])
    moved_v, moved_t = vision[vision > 0], text[text > 0]
    np.testing.assert_allclose(moved_v, 5e-7, rtol=1e-2)
    np.testing.assert_allclose(moved_t, 2e-5, rtol=1e-2)
    assert float(schedules["vision"](3)) == pytest.approx(5e-7)
    assert float(schedules["default"](3)) == pytest.approx(2e-5)


def test_weight_decay_applies_only_to_masked_leaves():
    # With zero gradients Adam's update is 0, so any change is weight decay: lr * wd * w.
    model = _model()
    config = trainer_defaults()
    config.schedule.update({"name": "constant", "warmup_fraction": 0.0})
    config.optim.weight_decay = 0.5
    tx, _ = optim.make_optimizer(config.optim, config.schedule, 10, model)
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    params = jax.tree.map(lambda x: x + 1.0, params)  # non-zero everywhere (biases start at 0)
    zeros = jax.tree.map(jnp.zeros_like, params)
    updates, _ = tx.update(zeros, tx.init(params), params)
    changed = {k: bool(np.any(v != 0)) for k, v in _flat(updates).items()}
    mask = _flat(optim.weight_decay_mask(model))
    assert changed == mask
    upd, par = _flat(updates), _flat(params)
    expected = -2e-5 * 0.5 * par["text/proj/kernel"]
    np.testing.assert_allclose(upd["text/proj/kernel"], expected, rtol=1e-6)


def test_warmup_linear_schedule_is_the_reference_formula():
    schedule = optim.make_schedule({"name": "warmup_linear", "warmup_fraction": 0.1}, 1.0, 100)
    # reference utils/sched.py: x/0.1 below 0.1, then (x - 1)/(0.1 - 1), floored at 0
    for step in (0, 5, 10, 20, 55, 99, 100, 120):
        x = step / 100
        expected = x / 0.1 if x < 0.1 else max((x - 1) / (0.1 - 1), 0.0)
        assert float(schedule(step)) == pytest.approx(expected, abs=1e-6), step


def test_cosine_schedule_warms_up_then_decays_to_floor():
    schedule = optim.make_schedule(
        {"name": "cosine", "warmup_steps": 10, "end_factor": 0.1}, 2.0, 110
    )
    assert float(schedule(0)) == 0.0
    assert float(schedule(10)) == pytest.approx(2.0)
    assert float(schedule(60)) == pytest.approx(0.2 + 0.9 * 2.0 * 0.5, rel=1e-4)
    assert float(schedule(110)) == pytest.approx(0.2, rel=1e-5)


def test_unknown_schedule_is_named():
    with pytest.raises(ValueError, match="config.schedule.name"):
        optim.make_schedule({"name": "linear_warmup"}, 1.0, 10)


def test_gradient_clipping_bounds_the_update():
    # Adam's first update is lr * sign(g) whatever the norm, so look at the clipped gradient
    # through Adam's first moment instead.
    model = _model()
    config = trainer_defaults()
    config.optim.update({"grad_clip_norm": 1e-3, "weight_decay": 0.0})
    tx, _ = optim.make_optimizer(config.optim, config.schedule, 10, model)
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    grads = jax.tree.map(lambda x: jnp.full_like(x, 3.0), params)
    _, state = tx.update(grads, tx.init(params), params)
    adam_states = [
        s
        for s in jax.tree.leaves(state, is_leaf=lambda s: isinstance(s, optax.ScaleByAdamState))
        if isinstance(s, optax.ScaleByAdamState)
    ]
    mu_norm = optax.tree.norm([s.mu for s in adam_states])
    # mu = (1 - b1) * clipped grad, and the clipped gradient has global norm 1e-3
    assert float(mu_norm) == pytest.approx(0.1 * 1e-3, rel=1e-4)


def test_gradient_accumulation_averages_micro_batches():
    model = _model()
    config = trainer_defaults()
    config.optim.update({"accumulation_steps": 2, "weight_decay": 0.0})
    config.schedule.update({"name": "constant", "warmup_fraction": 0.0})
    tx, schedules = optim.make_optimizer(config.optim, config.schedule, 10, model)
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    state = tx.init(params)
    g1 = jax.tree.map(lambda x: jnp.full_like(x, 1.0), params)
    g2 = jax.tree.map(lambda x: jnp.full_like(x, -3.0), params)
    u1, state = tx.update(g1, state, params)
    assert all(float(jnp.abs(u).max()) == 0.0 for u in jax.tree.leaves(u1))
    u2, state = tx.update(g2, state, params)
    # the mean gradient -1 gives the first Adam update +lr on every leaf
    flat = _flat(u2)
    np.testing.assert_allclose(flat["text/proj/kernel"], 2e-5, rtol=1e-3)
    np.testing.assert_allclose(flat["vision/proj/kernel"], 5e-7, rtol=1e-3)
    # the schedule counts optimizer updates: train step 5 is update 2
    assert float(schedules["default"](5)) == pytest.approx(2e-5)


def test_bad_group_config_is_named():
    config = trainer_defaults()
    with pytest.raises(KeyError, match="lr_groups.bad"):
        optim.make_optimizer(
            ml_collections.ConfigDict(dict(config.optim, lr_groups={"bad": {"lr": 1.0}})),
            config.schedule,
            10,
            _model(),
        )


def test_gram_model_groups_and_decay():
    # The real (tiny) GramModel: only the vision tower is in the 5e-7 group (the reference's
    # 'visual' parameters), and no norm, bias, embedding table or temperature is decayed.
    model = nnx.eval_shape(lambda: GramModel(tiny_model_config(), rngs=nnx.Rngs(0)))
    labels = _flat(optim.group_labels(model, trainer_defaults().optim.lr_groups.to_dict()))
    vision = {k for k, v in labels.items() if v == "vision"}
    assert vision and vision == {k for k in labels if k.startswith("vision/")}
    assert any(k.startswith("condition_tokens/video/") for k in labels)  # fusion side: base lr
    reasons = {
        "/".join(map(str, path)): optim.decay_reason(path, p, owner)
        for path, (p, owner) in optim.param_paths(model).items()
    }
    assert reasons["contra_temperature/log_temperature"] == "temperature"
    norms = [k for k, r in reasons.items() if r == "norm"]
    assert norms and all(k.endswith(("scale", "bias")) for k in norms)
    assert reasons["audio/layers/self_attn/grep_a"] == "vector"  # [layers, heads] gate
    assert reasons["audio/pos_conv/weight_v"] == "decay"  # a conv kernel, not a table
    assert reasons["audio/pos_conv/weight_g"] == "vector"
    assert reasons["vision/pos_embed"] == reasons["bert/embeddings/word/embedding"] == "embedding"
    decayed = [k for k, r in reasons.items() if r == "decay"]
    assert all(k.endswith(("kernel", "weight_v")) for k in decayed), decayed

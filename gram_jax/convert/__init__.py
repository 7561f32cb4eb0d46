"""PyTorch weights -> Flax params (``hf_bert``, ``eva``, ``beats``, ``gram_release``) and the
``gram-convert`` command (``cli``); see docs/checkpoints.md."""

"""PyTorch weights -> Flax params (``hf_bert``, ``eva``, ``beats``, ``gram_release``), the
converted-weights file (``params_file``: its writer, reader and the accounted load into a model)
and the conversion behind ``gram-convert`` (``weights``); see docs/checkpoints.md."""

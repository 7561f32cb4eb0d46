"""Flax NNX models of GRAM.

- ``layers``: attention, MLP, LayerNorm, dropout/drop-path, pre-LN block (re-exports ``axes`` and
  ``stacking``: logical axis names, activation constraints, scan-over-layers with remat).
- ``bert``: the Hugging Face-compatible BERT (text, subtitles, fusion encoder).
- ``vit``: the EVA-compatible vision tower; ``audio``: the BEATs-compatible audio tower.
- ``heads``: projection heads, fusion condition tokens, matching head.
- ``config``: ``model_config`` (every key documented); ``gram``: ``GramModel`` and
  ``build_model`` / ``split_model`` / ``merge_model`` (the module <-> pure-dict state round trip the
  trainer and the evaluators share).
- ``modalities``: the modality names and the reference's Gram order (``data_modalities``).

Submodules are imported on use (``from gram_jax.models.gram import GramModel``) so that importing
one tower does not build the others.
"""

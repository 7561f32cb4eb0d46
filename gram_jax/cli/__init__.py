"""The console scripts, one module each: flags -> one library call -> exit code.

``gram-train`` (`train`), ``gram-eval`` (`eval`), ``gram-rank`` (`rank`), ``gram-convert``
(`convert`); ``gram-data`` lives with the data pipelines (`data_pipelines.cli`). Exit codes:
`exit_codes`.
"""

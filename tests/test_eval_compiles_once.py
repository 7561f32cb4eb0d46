"""A run that evaluates twice compiles each evaluation function once (per input shape).

Every evaluation used to wrap a fresh closure in `jax.jit`, so each one traced and compiled the
encoders again (minutes per evaluation on the 1.2 B-parameter paper model). The run's `EvalModel`
now holds one jitted encode and one jitted match. Counted with JAX's own compile log
(``jax_log_compiles``: one "Compiling jit(<name>) with global shapes ..." line per compilation), in
this process, without the persistent compilation cache the other trainer tests share.
"""

import collections
import json
import logging
import re

import jax
import pytest

from experiments import base_config
from gram_jax.train import train_and_evaluate

_COMPILING = re.compile(r"Compiling jit\((encode|match)\) with global shapes and types (.*)")


class _CompileLog(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.compiles: collections.Counter = collections.Counter()

    def emit(self, record: logging.LogRecord) -> None:
        found = _COMPILING.match(record.getMessage())
        if found:
            # Function name + the shape signature (up to the argument mapping that follows).
            self.compiles[(found.group(1), found.group(2).split(". Argument mapping")[0])] += 1


@pytest.fixture
def compile_log():
    handler = _CompileLog()
    logger = logging.getLogger("jax._src.interpreters.pxla")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    with jax.log_compiles(True):
        yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


def test_two_evaluations_compile_each_encoder_once(tmp_path, compile_log):
    config = base_config.get_config("runlocal")
    config.mesh.update(dict(data=4, fsdp=1, model=2))
    config.total_steps = 2
    config.checkpoint_steps = 2
    config.eval_every = 1  # evaluations after step 1 and at the end (step 2)
    train_and_evaluate(config, tmp_path)

    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2]
    names = {name for name, _ in compile_log.compiles}
    # runlocal's retrieval evaluator scores by volume, cosine and the matching re-rank.
    assert names == {"encode", "match"}, compile_log.compiles
    again = {key: n for key, n in compile_log.compiles.items() if n > 1}
    assert not again, f"compiled more than once for the same shapes: {again}"

"""One of two `jax.distributed` processes reading the pipeline (run by test_pipeline_multiprocess).

The process layout comes from JAX (grain's ShardByJaxProcess inside the pipeline): no explicit
process_index is passed. Writes what the test checks as JSON to ``--out``:
  - eval: the valid ``index`` values of this process over the real MSR-VTT test annotations;
  - train: this process's first training batch (index, caption_index) and the global batch that
    ``jax.make_array_from_process_local_data`` assembles from both processes (gathered back).
"""

from __future__ import annotations

import argparse
import json

import jax
import numpy as np
from absl import flags
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from data_pipelines import pipeline
from data_pipelines.config import data_config


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--coordinator", required=True)
    parser.add_argument("--process-id", type=int, required=True)
    parser.add_argument("--layout", required=True, help="JSON of data_config overrides (clips)")
    parser.add_argument("--msrvtt", required=True, help="real MSR-VTT test annotation file")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    flags.FLAGS.mark_as_parsed()
    jax.distributed.initialize(
        coordinator_address=args.coordinator, num_processes=2, process_id=args.process_id
    )
    assert jax.process_count() == 2 and jax.local_device_count() == 4
    eval_config = data_config(
        dataset="msrvtt",
        annotations={"test": args.msrvtt},
        modalities=("text",),
        caption_mode="first",
        eval_batch_size=96,
    )
    valid = []
    for batch in pipeline.make_eval_iterator(eval_config, "test"):
        valid += batch["index"][batch["valid"]].tolist()
    num_eval_batches = pipeline.num_eval_batches(eval_config, "test")

    layout = json.loads(args.layout)
    train_config = data_config(
        **layout,
        modalities=("video", "audio", "text"),
        num_frames=2,
        image_size=32,
        batch_size=8,  # one global batch = all 8 (record, caption) samples; 4 rows per process
        num_epochs=1,
    )
    local = next(pipeline.make_train_iterator(train_config))
    mesh = Mesh(np.array(jax.devices()), ("data",))
    sharding = NamedSharding(mesh, PartitionSpec("data"))
    global_batch = {
        key: jax.make_array_from_process_local_data(sharding, local[key])
        for key in ("index", "caption_index", "video", "audio", "text_ids")
    }
    gathered = {
        key: np.asarray(multihost_utils.process_allgather(value, tiled=True))
        for key, value in global_batch.items()
    }
    result = {
        "process_index": jax.process_index(),
        "eval_valid_index": valid,
        "num_eval_batches": num_eval_batches,
        "local_index": local["index"].tolist(),
        "local_caption": local["caption_index"].tolist(),
        "global_shapes": {k: list(v.shape) for k, v in global_batch.items()},
        "global_index": gathered["index"].tolist(),
        "global_caption": gathered["caption_index"].tolist(),
        # The rows this process contributed must sit at its place in the global array.
        "local_rows_match": bool(
            np.array_equal(
                gathered["video"][4 * jax.process_index() : 4 * (jax.process_index() + 1)],
                local["video"],
            )
        ),
    }
    with open(args.out, "w") as f:
        json.dump(result, f)
    jax.distributed.shutdown()


if __name__ == "__main__":
    main()

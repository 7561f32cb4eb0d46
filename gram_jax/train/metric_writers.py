"""clu metric writers that work without TensorFlow, plus JSON-lines evaluation records.

clu 0.0.12's `clu.metric_writers` (and `clu.periodic_actions`, which imports it) pulls in TensorFlow
through `clu.metric_writers.summary_writer` (clu 0.0.12). `install_tensorboardx_backend()`
registers a module under that name whose `SummaryWriter` is `TensorboardXWriter` (the same
TensorBoard event files, written by tensorboardX) before clu is imported, so the rest of clu --
`AsyncMultiWriter`, `LoggingWriter`, `create_default_writer`, `periodic_actions.ReportProgress` --
works unchanged. When TensorFlow is importable, clu's own writer is used.

The console: `configure_console(verbosity)` shows our own lines (`report_step`, summaries, warnings)
at the default verbosity 0 and leaves orbax's, clu's and absl's INFO lines (checkpoint manager
registrations, handler fallbacks, the clu scalar dumps) to ``--verbosity=1``.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import os
import sys
import types
from collections.abc import Mapping
from typing import Any

import numpy as np

from gram_jax.train import workdir as workdir_paths

_SUMMARY_MODULE = "clu.metric_writers.summary_writer"


def _tensorboardx_writer_class():
    # lazy: tensorboardX is only needed when TensorFlow is absent (the fallback backend).
    from tensorboardX import SummaryWriter as TBXSummaryWriter  # noqa: PLC0415

    # Not a subclass of clu's MetricWriter: importing clu.metric_writers.interface runs the package
    # __init__, which needs this class first. It is registered as a virtual subclass afterwards.
    class TensorboardXWriter:
        """clu MetricWriter writing TensorBoard event files under `logdir` with tensorboardX."""

        def __init__(self, logdir: str):
            self._writer = TBXSummaryWriter(logdir=str(logdir), flush_secs=30)

        def write_summaries(self, step, values, metadata=None):
            for key, value in values.items():
                self._writer.add_scalar(key, float(np.asarray(value)), int(step))

        def write_scalars(self, step, scalars):
            for key, value in scalars.items():
                self._writer.add_scalar(key, float(np.asarray(value)), int(step))

        def write_images(self, step, images):
            for key, value in images.items():
                # clu passes [N, H, W, C] (or [H, W, C]) images.
                array = np.asarray(value)
                if array.ndim == 4:
                    self._writer.add_images(key, array, int(step), dataformats="NHWC")
                else:
                    self._writer.add_image(key, array, int(step), dataformats="HWC")

        def write_videos(self, step, videos):
            for key, value in videos.items():
                # clu: [N, T, H, W, C]; tensorboardX wants [N, T, C, H, W].
                self._writer.add_video(key, np.moveaxis(np.asarray(value), -1, 2), int(step))

        def write_audios(self, step, audios, *, sample_rate):
            for key, value in audios.items():
                array = np.asarray(value)  # [N, T, C]
                self._writer.add_audio(key, array[0, :, 0], int(step), sample_rate=sample_rate)

        def write_texts(self, step, texts):
            for key, value in texts.items():
                self._writer.add_text(key, str(value), int(step))

        def write_histograms(self, step, arrays, num_buckets=None):
            for key, value in arrays.items():
                bins = num_buckets if num_buckets else "tensorflow"
                self._writer.add_histogram(key, np.asarray(value), int(step), bins=bins)

        def write_hparams(self, hparams):
            flat = {
                k: v if isinstance(v, int | float | str | bool) else str(v)
                for k, v in hparams.items()
            }
            self._writer.add_text("hparams", json.dumps(flat, indent=1, sort_keys=True), 0)

        def flush(self):
            self._writer.flush()

        def close(self):
            self._writer.close()

    return TensorboardXWriter


def install_tensorboardx_backend() -> None:
    """Makes `import clu.metric_writers` work without TensorFlow (idempotent)."""
    if _SUMMARY_MODULE in sys.modules or "clu.metric_writers" in sys.modules:
        return
    if importlib.util.find_spec("tensorflow") is not None:
        return
    module = types.ModuleType(_SUMMARY_MODULE)
    module.SummaryWriter = _tensorboardx_writer_class()
    sys.modules[_SUMMARY_MODULE] = module
    # lazy: clu.metric_writers may only be imported after the backend module is registered.
    from clu.metric_writers import interface  # noqa: PLC0415

    interface.MetricWriter.register(module.SummaryWriter)


def create_writer(workdir: str | os.PathLike, *, just_logging: bool = False):
    """clu's default writer: TensorBoard events in `workdir` plus absl logging, asynchronous.

    `just_logging=True` for non-zero processes (only process 0 writes event files). A ``gs://``
    workdir gets its events through tensorboardX's own GCS writer (google-cloud-storage; each flush
    uploads the whole event file, which an object store cannot append to).
    """
    install_tensorboardx_backend()
    # lazy: clu.metric_writers may only be imported after install_tensorboardx_backend().
    from clu import metric_writers  # noqa: PLC0415

    return metric_writers.create_default_writer(
        str(workdir), just_logging=just_logging, asynchronous=True
    )


def report_progress(total_steps: int, writer):
    """clu's ReportProgress (steps/s, ETA, uptime) writing to `writer`."""
    install_tensorboardx_backend()
    # lazy: clu.periodic_actions imports clu.metric_writers (after install_tensorboardx_backend()).
    from clu import periodic_actions  # noqa: PLC0415

    return periodic_actions.ReportProgress(num_train_steps=total_steps, writer=writer)


# Libraries whose INFO lines are chatter at the default verbosity (all log through these names).
# tensorboardX logs one INFO line per metric whose tag it renames (every "R@1" becomes "R_1").
# gcsfs and fsspec log their read-ahead caches and client set-up at INFO (gs:// workdirs).
CHATTY_LOGGERS = ("absl", "orbax", "jax", "etils", "grain", "tensorboardX", "gcsfs", "fsspec")
PROGRESS_KEYS = ("loss", "grad_norm", "temperature", "lr_default")


def configure_console(verbosity: int = 0) -> None:
    """Console levels: ours at INFO; the CHATTY_LOGGERS at WARNING unless `verbosity` >= 1."""
    logging.getLogger().setLevel(logging.INFO)
    for name in ("gram_jax", "data_pipelines"):
        logging.getLogger(name).setLevel(logging.INFO)
    if verbosity < 1:
        for name in CHATTY_LOGGERS:
            logger = logging.getLogger(name)
            logger.setLevel(logging.WARNING)
            if not any(isinstance(f, _NoTraceback) for f in logger.filters):
                logger.addFilter(_NoTraceback())


class _NoTraceback(logging.Filter):
    """Keeps a library's error line but drops its traceback (ours follows, in one line)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.exc_info = None
        record.exc_text = None
        return True


def report_step(step: int, total: int, scalars: Mapping[str, float], bar=None) -> str:
    """One progress line ("step 40/400: loss 1.234, ..."): on the tqdm `bar` when there is one
    (interactive), else logged. Returns the line."""
    shown = {k: scalars[k] for k in PROGRESS_KEYS if k in scalars}
    shown.update({k: v for k, v in scalars.items() if k.startswith("data/skipped_") and v})
    text = ", ".join(f"{k} {v:.4g}" for k, v in shown.items())
    if bar is not None:
        bar.n = step
        bar.set_postfix_str(text, refresh=True)
    else:
        logging.getLogger("gram_jax.train").info("step %d/%d: %s", step, total, text)
    return text


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    array = np.asarray(value) if not isinstance(value, str) else None
    if array is not None and array.ndim == 0 and array.dtype.kind in "fiub":
        number = array.item()
        if isinstance(number, float) and not math.isfinite(number):
            return str(number)  # JSON has no NaN/inf
        return number
    if array is not None and array.ndim > 0 and array.dtype.kind in "fiub":
        return array.tolist()
    return value


def append_jsonl(path: str | os.PathLike, record: Mapping[str, Any]) -> None:
    """Appends one JSON object as a line to `path` (W/metrics.jsonl; local or gs://)."""
    line = json.dumps(_jsonable(record), sort_keys=True) + "\n"
    workdir_paths.append_text(workdir_paths.resolve(path), line)

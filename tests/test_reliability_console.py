"""Issue 14, the console: our lines at the default verbosity, library INFO chatter at 1."""

import logging

import pytest
from absl import logging as absl_logging

from gram_jax.train import metric_writers


@pytest.fixture
def _restore_loggers():
    names = ("", "gram_jax", "data_pipelines", *metric_writers.CHATTY_LOGGERS)
    saved = {n: (logging.getLogger(n).level, list(logging.getLogger(n).filters)) for n in names}
    yield
    for name, (level, filters) in saved.items():
        logger = logging.getLogger(name)
        logger.setLevel(level)
        logger.filters[:] = filters


def _emit(caplog):
    caplog.clear()
    # orbax logs through absl (logger "absl"), e.g. its CheckpointManager registration lines.
    absl_logging.info("CheckpointManager created, primary_host=0")
    try:
        raise ValueError("disk full")
    except ValueError:
        absl_logging.exception("Save Finalize thread failed.")
    logging.getLogger("gram_jax.train").info("step 4/4: loss 1.45")
    return caplog.records


@pytest.mark.usefixtures("_restore_loggers")
def test_default_console_shows_our_lines_and_hides_library_chatter(caplog):
    metric_writers.configure_console(0)
    with caplog.at_level(logging.INFO):
        records = _emit(caplog)
    shown = [r.getMessage() for r in records]
    assert "step 4/4: loss 1.45" in shown
    assert "CheckpointManager created, primary_host=0" not in shown
    (error,) = [r for r in records if r.getMessage() == "Save Finalize thread failed."]
    assert error.exc_info is None  # the error line stays, its traceback goes


@pytest.mark.usefixtures("_restore_loggers")
def test_verbosity_1_shows_library_info_lines(caplog):
    metric_writers.configure_console(1)
    with caplog.at_level(logging.INFO):
        shown = [r.getMessage() for r in _emit(caplog)]
    assert "CheckpointManager created, primary_host=0" in shown and "step 4/4: loss 1.45" in shown


def test_progress_line_names_loss_and_masked_items():
    text = metric_writers.report_step(
        40, 400, {"loss": 1.2345, "grad_norm": 0.5, "loss_volume": 1.0, "data/skipped_audio": 3}
    )
    assert text == "loss 1.234, grad_norm 0.5, data/skipped_audio 3"

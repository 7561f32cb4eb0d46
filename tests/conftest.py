"""Test set-up: 8 fake CPU devices, float32 matmuls at full precision, deterministic paths.

The XLA flag must be set before jax initialises its backends, i.e. before any test module
imports jax; conftest.py is imported by pytest first, so this is the place.
"""

import os
import pathlib

os.environ.setdefault("JAX_PLATFORMS", "cpu")
_flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in _flags:
    os.environ["XLA_FLAGS"] = (_flags + " --xla_force_host_platform_device_count=8").strip()
# Nothing may download from a hub at test time.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402

from data_pipelines.reference_media import REFERENCE_DATA_DIR  # noqa: E402


@pytest.fixture(scope="session")
def reference_data() -> pathlib.Path:
    """data_pipelines/reference_data: the real annotations and 4 media clips (committed)."""
    if not (REFERENCE_DATA_DIR / "media" / "videos").is_dir():
        pytest.fail(f"the committed reference data is missing: expected {REFERENCE_DATA_DIR}")
    return REFERENCE_DATA_DIR

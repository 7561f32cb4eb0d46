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

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data" / "gram_reference"


@pytest.fixture(scope="session")
def shared_data() -> pathlib.Path:
    """Path of ../shared/data/gram_reference (real annotations and media clips)."""
    if not SHARED_DATA.is_dir():
        pytest.fail(f"real fixtures missing: expected the directory {SHARED_DATA}")
    return SHARED_DATA

"""Shared test helpers: locating ../shared, quiet Caffe logging."""
import os
import sys
from pathlib import Path

import pytest

# Caffe logs every layer it builds to stderr; keep warnings and errors only.
os.environ.setdefault("GLOG_minloglevel", "2")

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))   # the project's modules (nets, layers, ...) import from anywhere


def shared_dir():
    """The shared data folder: $FCN_SHARED, else ../shared beside the repo."""
    return Path(os.environ.get("FCN_SHARED", REPO.parent / "shared"))


@pytest.fixture
def shared_data():
    """Path of shared/data; skips (with the reason listed by -ra) when absent."""
    d = shared_dir() / "data"
    if not d.is_dir():
        pytest.skip(f"SHARED DATA MISSING: {d} not found (set FCN_SHARED to the shared folder)")
    return d

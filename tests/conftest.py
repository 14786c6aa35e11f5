import os

import pytest

# Two cores here and in CI: keep torch from oversubscribing when tests run beside each other.
os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path, monkeypatch):
    """Every test writes its store and outputs under a temporary PRUNE_NAS_HOME."""
    monkeypatch.setenv("PRUNE_NAS_HOME", str(tmp_path / "home"))
    yield

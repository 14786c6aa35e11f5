import os

import pytest

# Two cores here and in CI: keep torch from oversubscribing when tests run beside each other.
os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """Tiny models and least-squares problems: on 2 shared cores a second thread only adds synchronisation
    cost. One torch thread and one BLAS thread (threadpoolctl) for the whole session; session scope so that
    module-scoped fixtures that train (test_evaluate's table) run under it too."""
    import numpy  # noqa: F401  (load numpy's BLAS before limiting it)
    import torch
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(1, user_api="blas"):
            yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path, monkeypatch):
    """Every test writes its store and outputs under a temporary PRUNE_NAS_HOME."""
    monkeypatch.setenv("PRUNE_NAS_HOME", str(tmp_path / "home"))
    yield

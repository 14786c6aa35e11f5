import os
from pathlib import Path

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


@pytest.fixture
def rank_pid():
    """``rank_pid(parent, rank)``: the pid of the rank ``--nproc`` launched with RANK=rank among ``parent``'s
    children, or None while it has not started (read from /proc; skips where there is none)."""
    if not Path("/proc/self/task").is_dir():
        pytest.skip("finds a rank's process through /proc")

    def find(parent: int, rank: int) -> int | None:
        for task in Path(f"/proc/{parent}/task").iterdir():
            for child in (task / "children").read_text().split():
                try:
                    env = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
                except OSError:
                    continue
                if f"RANK={rank}".encode() in env:
                    return int(child)
        return None

    return find

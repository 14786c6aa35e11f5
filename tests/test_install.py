"""A built wheel, installed without ``-e``, works from an empty folder and writes nothing into site-packages.

The wheel is built from a copy of the tracked tree (so the checkout gets no ``build/``); the fresh venv sees
the test environment's dependencies through a ``.pth`` line (no download, no torch reinstall) but not its
editable prune_nas, so every import comes from the installed wheel.
"""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _tracked_copy(dest: Path) -> Path:
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    for rel in filter(None, files.decode().split("\0")):
        src, dst = REPO / rel, dest / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            os.symlink(os.readlink(src), dst)
        elif src.is_file():
            shutil.copy2(src, dst)
    return dest


def _snapshot(folder: Path) -> dict[str, float]:
    return {str(p): p.stat().st_mtime for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    if not (REPO / ".git").exists():
        pytest.skip("needs a git checkout to know the tracked files")
    tmp = tmp_path_factory.mktemp("wheel")
    src = _tracked_copy(tmp / "src")
    wheels = tmp / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "--disable-pip-version-check", "-w", str(wheels), str(src)], check=True,
                   capture_output=True)
    (wheel,) = wheels.glob("prune_nas-*.whl")
    env_dir = tmp / "venv"
    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    purelib = Path(subprocess.run([str(py), "-c",
                                   "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                  env=_clean_env(), capture_output=True, text=True,
                                  check=True).stdout.strip())
    # Dependencies from the test environment; its own (editable) prune_nas is not visible from there.
    (purelib / "deps-from-test-env.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    subprocess.run([str(py), "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
                    "--disable-pip-version-check", str(wheel)], env=_clean_env(), check=True,
                   capture_output=True)
    return env_dir, purelib


def _clean_env() -> dict[str, str]:
    # No PYTHONPATH (it would put a checkout before the wheel) and no PRUNE_NAS_HOME (outputs go to
    # ./artifacts).
    env = {k: v for k, v in os.environ.items() if k not in ("PRUNE_NAS_HOME", "PYTHONPATH")}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return env


def _run(env_dir: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(env_dir / "bin" / "prune-nas"), *args], cwd=cwd, env=_clean_env(),
                          capture_output=True, text=True, timeout=600)


def test_wheel_runs_from_an_empty_folder(installed, tmp_path):
    env_dir, purelib = installed
    work = tmp_path / "empty"
    work.mkdir()
    before = _snapshot(purelib)
    where = subprocess.run([str(env_dir / "bin" / "python"), "-c",
                            "import prune_nas; print(prune_nas.__file__)"],
                           cwd=work, env=_clean_env(), capture_output=True, text=True, check=True).stdout
    assert str(purelib) in where, where  # the wheel, not the checkout

    info = _run(env_dir, work, "genome", "info", "vgg16-a", "--json")
    assert info.returncode == 0, info.stderr
    assert json.loads(info.stdout)["params"] == 5_397_034
    listing = _run(env_dir, work, "genome", "list")
    assert listing.returncode == 0 and "vgg16-a" in listing.stdout and "sss-resnet41" in listing.stdout
    helped = _run(env_dir, work, "run", "table4_slimming", "--help")
    assert helped.returncode == 0 and "--scale" in helped.stdout
    dry = _run(env_dir, work, "run", "table4_slimming", "--scale", "smoke", "--dry-run")
    assert dry.returncode == 0, dry.stderr

    found = _run(env_dir, work, "discover", "--method", "slimming", "--epochs", "1", "--width", "0.125",
                 "--no-progress", "--threads", "1")
    assert found.returncode == 0, found.stderr
    written = sorted((work / "artifacts" / "genomes" / "discovered").glob("*.json"))
    assert written, found.stdout
    again = _run(env_dir, work, "genome", "info", written[0].stem)  # found by name from the working folder
    assert again.returncode == 0, again.stderr
    assert _snapshot(purelib) == before, "something was written into site-packages"

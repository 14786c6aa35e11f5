"""Every ``>>>`` example in the package's docstrings runs and prints what it says it prints.

Examples train at most a tiny model for an epoch on synthetic data (seconds in all); they write only under
temporary folders (the autouse ``PRUNE_NAS_HOME`` of conftest.py and the working directory set here).
"""

import doctest
import importlib
import pkgutil
import re
from pathlib import Path

import pytest

import prune_nas

# __main__ runs the command line when imported
MODULES = ["prune_nas"] + sorted(m.name for m in pkgutil.walk_packages(prune_nas.__path__, "prune_nas.")
                                 if m.name != "prune_nas.__main__")
PROMPT = re.compile(r"^\s*>>> ", re.MULTILINE)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    module = importlib.import_module(name)
    tests = doctest.DocTestFinder().find(module)
    found = sum(len(t.examples) for t in tests)
    # A `>>>` the finder does not reach (a comment, a string that is not a docstring) would never run
    written = len(PROMPT.findall(Path(module.__file__).read_text()))
    assert found == written, f"{name}: {written} examples written, {found} found in docstrings"
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in tests:
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{name}: {result.failed} of {result.attempted} examples failed (output above)"


def test_the_package_has_examples():
    modules = [importlib.import_module(n) for n in MODULES]
    assert sum(len(PROMPT.findall(Path(m.__file__).read_text())) for m in modules) >= 50

"""The examples in the package's docstrings run as part of the normal suite, so they cannot go stale.

Every module under `relayer/` is imported by walking the package, and each one that has examples runs them:
a module that gains a doctest is tested without being listed anywhere.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil
from types import ModuleType

import pytest

import relayer

_FINDER = doctest.DocTestFinder(exclude_empty=True)


def _modules() -> list[ModuleType]:
    names = [info.name for info in pkgutil.walk_packages(relayer.__path__, prefix="relayer.")]
    return [relayer, *(importlib.import_module(name) for name in sorted(names))]


def _examples(module: ModuleType) -> list[doctest.DocTest]:
    return [test for test in _FINDER.find(module) if test.examples]


MODULES = _modules()
WITH_EXAMPLES = [module for module in MODULES if _examples(module)]


def test_the_walk_finds_the_modules_that_have_examples() -> None:
    """A guard on the discovery itself: if the walk missed modules, the parametrized test would shrink."""
    names = {module.__name__ for module in WITH_EXAMPLES}
    assert {"relayer.domain.units", "relayer.domain.bps", "relayer.domain.status", "relayer.errors"} <= names
    assert len(MODULES) > 50


@pytest.mark.parametrize("module", WITH_EXAMPLES, ids=lambda m: m.__name__)
def test_doctests(module: ModuleType) -> None:
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS, verbose=False)
    for test in _examples(module):
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.attempted > 0
    assert result.failed == 0, f"{module.__name__}: {result.failed} example(s) failed (output above)"

import os
import tempfile

import pytest

import ltn  # noqa: F401  (turns on float64 before any test builds an array)
from ltn import _cache

# The CLI tests run `ltn`'s main in-process, and the command turns on the persistent compilation cache: point it
# at a folder of this test session, never at the user's ~/.cache.
os.environ["LTN_CACHE_DIR"] = tempfile.mkdtemp(prefix="ltn-test-cache-")


@pytest.fixture(autouse=True)
def _traced_program_cache_off():
    """`ltn run` in-process also turns the traced-program cache on for the rest of the process; tests that count
    traces (one per group, one per batch) must not find programs an earlier test left, so each test ends with
    it off (tests/test_cache.py checks the cache itself in fresh processes)."""
    yield
    _cache._programs_dir[0] = None

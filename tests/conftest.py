import os
import tempfile

import ltn  # noqa: F401  (turns on float64 before any test builds an array)

# The CLI tests run `ltn`'s main in-process, and the command turns on the persistent compilation cache: point it
# at a folder of this test session, never at the user's ~/.cache.
os.environ["LTN_CACHE_DIR"] = tempfile.mkdtemp(prefix="ltn-test-cache-")

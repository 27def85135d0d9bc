import sys
from pathlib import Path

import pytest

# Test helpers (tests/pipeline_repo.py) import as plain modules.
sys.path.insert(0, str(Path(__file__).parent))


# The two offline encoders, built once per test module that asks for them (USE loads its weights).
@pytest.fixture(scope="module")
def use():  # type: ignore[no-untyped-def]
    from t2i.text import get_encoder

    return get_encoder("use", device="cpu", threads=1)


@pytest.fixture(scope="module")
def bow():  # type: ignore[no-untyped-def]
    from t2i.text import get_encoder

    return get_encoder("bow", device="cpu", threads=1)

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("MIXCOT_DATA", ROOT.parent/"shared"/"data"))


@pytest.fixture(scope="session")
def data() -> Path:
    "The shared benchmark and response files."
    assert DATA.is_dir(), f"{DATA} not found: tests need ../shared/data beside the checkout (or MIXCOT_DATA)"
    return DATA

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


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    "A tiny Qwen2 chat model built locally (tokenizer trained here, ChatML template), saved with `save_pretrained`."
    from mixcot_nb.backends import build_tiny_chat_model
    return build_tiny_chat_model(tmp_path_factory.mktemp("models")/"tiny-qwen2", data_file=DATA/"math_hendrycks"/"train.jsonl")

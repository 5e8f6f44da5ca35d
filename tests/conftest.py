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
    from mixcot_nb.testing import build_tiny_chat_model
    return build_tiny_chat_model(tmp_path_factory.mktemp("models")/"tiny-qwen2", data_file=DATA/"math_hendrycks"/"train.jsonl")


@pytest.fixture(scope="session")
def judge_model(tmp_path_factory) -> Path:
    "A tiny chat model trained to answer the paper's judge prompt with 'True': a real model behind the judge."
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from mixcot_nb.backends import fit_replies
    from mixcot_nb.testing import build_tiny_chat_model
    from mixcot_nb.grading import judge_messages
    from mixcot_nb.problems import load_problems
    base = build_tiny_chat_model(tmp_path_factory.mktemp("judge")/"base", train_steps=0, data_file=DATA/"math_hendrycks"/"train.jsonl")
    tok, model = AutoTokenizer.from_pretrained(base), AutoModelForCausalLM.from_pretrained(base)
    problems = load_problems("math500", path=DATA/"math500")[:24]
    fit_replies(model, tok, [(judge_messages(p.problem[:200], p.answer, "7")[1]["content"], "True") for p in problems], steps=40, lr=5e-3)
    out = base.parent/"judge"
    model.save_pretrained(out); tok.save_pretrained(out)
    return out

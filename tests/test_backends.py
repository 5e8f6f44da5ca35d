"""The generation engines for real: transformers on a tiny locally built model, and the OpenAI-compatible engine against
a real HTTP server (tests/fault_server.py) that injects 429s, 5xx, slow replies and dropped connections."""
import asyncio, json, logging, subprocess, sys, time, traceback
from pathlib import Path

import pytest

from mixcot_nb.backends import ENGINES, EngineError, EngineSpec, OpenAIEngine, SamplingParams, TransformersEngine, make_engine
from mixcot_nb.core import iter_jsonl
from mixcot_nb.testing import build_tiny_chat_model

sys.path.insert(0, str(Path(__file__).parent))
from fault_server import FaultServer, answer  # noqa: E402

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def convs(data):
    "16 MATH500 problems of varied length as single-turn conversations."
    rows = [r for _, r in zip(range(16), iter_jsonl(data/"math500"/"test.jsonl"))]
    return [[{"role": "user", "content": r["problem"]}] for r in rows]


@pytest.fixture(scope="module")
def hf(tiny_model):
    with TransformersEngine(str(tiny_model), batch_size=8) as eng: yield eng


# ---------------------------------------------------------------------------------------------------------------------
# transformers engine

def test_chat_template_applied(hf, convs):
    conv = [{"role": "system", "content": "Be brief."}, *convs[0]]
    text = hf.render(conv)
    assert text == hf.tokenizer.apply_chat_template(conv, tokenize=False, add_generation_prompt=True)
    assert text.startswith("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n") and text.endswith("<|im_start|>assistant\n")
    (c,), = hf.generate([conv], SamplingParams(max_tokens=4))
    assert c.prompt_tokens == len(hf.tokenizer(text, add_special_tokens=False).input_ids)


def test_batched_equals_one_at_a_time(tiny_model, hf, convs):
    params = SamplingParams(max_tokens=40)
    batched = hf.generate(convs, params)
    assert len({len(hf.render(c)) for c in convs}) > 8, "prompts of varied length, so sorting reorders them"
    with TransformersEngine(str(tiny_model), batch_size=1) as one:
        single = one.generate(convs, params)
    assert [o[0].text for o in batched] == [o[0].text for o in single]
    assert [(o[0].finish_reason, o[0].completion_tokens, o[0].prompt_tokens) for o in batched] == \
           [(o[0].finish_reason, o[0].completion_tokens, o[0].prompt_tokens) for o in single]


def test_finish_reasons_and_token_counts_are_honest(hf, convs):
    out = [o[0] for o in hf.generate(convs, SamplingParams(max_tokens=48))]
    reasons = [c.finish_reason for c in out]
    assert {"stop", "length"} <= set(reasons), reasons
    for c in out:
        assert 1 <= c.completion_tokens <= 48 and c.seconds > 0
        if c.finish_reason == "length": assert c.completion_tokens == 48
    # a `stop` at k tokens (end of turn included) means: a budget of k still stops, a budget of k - 1 runs out.
    stopped = [(conv, c) for conv, c in zip(convs, out) if c.finish_reason == "stop"][:3]
    for conv, c in stopped:
        (same,), = hf.generate([conv], SamplingParams(max_tokens=c.completion_tokens))
        assert (same.finish_reason, same.text, same.completion_tokens) == ("stop", c.text, c.completion_tokens)
        (short,), = hf.generate([conv], SamplingParams(max_tokens=c.completion_tokens - 1))
        assert (short.finish_reason, short.completion_tokens) == ("length", c.completion_tokens - 1)
        assert c.text.startswith(short.text)


def test_think_blocks_are_kept(hf, convs):
    out = [o[0] for o in hf.generate(convs[:8], SamplingParams(max_tokens=48))]
    assert all(c.text.startswith("<think>") for c in out)
    assert any("</think>" in c.text for c in out)


def test_stop_strings_cut_the_text(hf, convs):
    full = [o[0] for o in hf.generate(convs, SamplingParams(max_tokens=48))]
    cut = [o[0] for o in hf.generate(convs, SamplingParams(max_tokens=48, stop=["</think>", "\\boxed"]))]
    hits = 0
    for f, c in zip(full, cut):
        idx = [i for s in ("</think>", "\\boxed") if (i := f.text.find(s)) >= 0]
        if idx:
            hits += 1
            assert (c.text, c.finish_reason) == (f.text[:min(idx)], "stop")
            assert c.completion_tokens <= f.completion_tokens
        else: assert c.text == f.text
        assert "</think>" not in c.text
    assert hits >= 2


def test_sampling_n_with_seed(hf, convs):
    params = SamplingParams(n=4, temperature=1.0, top_p=0.95, max_tokens=24, seed=123)
    a, b = hf.generate(convs[:5], params), hf.generate(convs[:5], params)
    assert [len(o) for o in a] == [4] * 5
    assert [[c.text for c in o] for o in a] == [[c.text for c in o] for o in b]
    assert all(len({c.text for c in o}) > 1 for o in a), "samples of one prompt differ"
    other = hf.generate(convs[:5], params.model_copy(update=dict(seed=124)))
    assert [[c.text for c in o] for o in other] != [[c.text for c in o] for o in a]


def test_greedy_n_copies(hf, convs):
    out = hf.generate(convs[:3], SamplingParams(n=3, max_tokens=16))
    assert all(len(o) == 3 and len({c.text for c in o}) == 1 for o in out)


def test_bad_conversations_fail_early(hf):
    with pytest.raises(ValueError, match="conversation 1, message 0"):
        hf.generate([[{"role": "user", "content": "hi"}], [{"role": "user", "text": "hi"}]], SamplingParams())


def test_llama_arch_builds_and_generates(tmp_path, data):
    path = build_tiny_chat_model(tmp_path/"tiny-llama", arch="llama", train_steps=0, data_file=data/"math_hendrycks"/"train.jsonl")
    assert json.loads((path/"config.json").read_text())["architectures"] == ["LlamaForCausalLM"]
    with make_engine(EngineSpec(engine="transformers", model=str(path), batch_size=2)) as eng:
        out = eng.generate([[{"role": "user", "content": "What is 1+1?"}]] * 3, SamplingParams(max_tokens=5))
    assert [len(o) for o in out] == [1, 1, 1] and all(o[0].completion_tokens <= 5 for o in out)


def make_lora_adapter(tiny_model, out: Path) -> tuple[Path, Path]:
    "A LoRA adapter with random (non-zero) weights for the tiny model, and the same adapter merged into a full model."
    peft = pytest.importorskip("peft")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    torch.manual_seed(0)
    cfg = peft.LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    model = peft.get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model), cfg)
    model.save_pretrained(out/"adapter")
    model.merge_and_unload().save_pretrained(out/"merged")
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(out/"merged")
    return out/"adapter", out/"merged"


def test_transformers_lora_adapter(tiny_model, hf, convs, tmp_path):
    adapter, merged = make_lora_adapter(tiny_model, tmp_path)
    params = SamplingParams(max_tokens=32)
    with make_engine(EngineSpec(engine="transformers", model=str(tiny_model), lora_path=str(adapter))) as lora:
        with_adapter = [o[0].text for o in lora.generate(convs, params)]
    with TransformersEngine(str(merged)) as eng:
        assert [o[0].text for o in eng.generate(convs, params)] == with_adapter
    assert with_adapter != [o[0].text for o in hf.generate(convs, params)]


@pytest.mark.gpu
def test_transformers_on_gpu(tiny_model, hf, convs):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available(): pytest.skip("no CUDA GPU")
    params = SamplingParams(max_tokens=48)
    with TransformersEngine(str(tiny_model), device="cuda", batch_size=8) as gpu:
        assert next(gpu.model.parameters()).device.type == "cuda"
        out = [o[0] for o in gpu.generate(convs, params)]
    assert all(c.completion_tokens == 48 for c in out if c.finish_reason == "length")
    cpu = [o[0] for o in hf.generate(convs, params)]
    assert [c.prompt_tokens for c in out] == [c.prompt_tokens for c in cpu]
    same = sum(a.text == b.text for a, b in zip(out, cpu))   # float32 on both; kernels differ, so near ties may flip
    assert same >= 12, f"GPU and CPU greedy agree on only {same}/16"


def test_engine_spec_validation():
    with pytest.raises(ValueError, match="batch_size do not apply to the openai engine"):
        EngineSpec(engine="openai", model="m", batch_size=4)
    with pytest.raises(ValueError, match="max_concurency"):
        EngineSpec(engine="openai", model="m", max_concurency=4)
    with pytest.raises(ValueError, match="gpu_memory_utilization"):
        EngineSpec(engine="vllm", model="m", gpu_memory_utilization=1.5)
    assert EngineSpec(engine="vllm", model="m", lora_path="a", dtype="bfloat16").lora_path == "a"
    assert {"openai", "transformers", "vllm"} <= set(ENGINES)   # later modules (the lab) may add theirs


def test_vllm_engine_without_vllm_says_what_to_install():
    try: import vllm  # noqa: F401
    except ImportError: pass
    else: pytest.skip("vllm is installed here")
    with pytest.raises(ImportError, match="setup_vllm_env.sh"):
        make_engine(EngineSpec(engine="vllm", model="any"))


def test_module_imports_without_vllm_or_openai():
    code = "import sys; import mixcot_nb.backends as b; print(sorted(m for m in ('vllm', 'openai', 'torch', 'transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# ---------------------------------------------------------------------------------------------------------------------
# OpenAI-compatible engine against a real HTTP server with faults

def _convs(k): return [[{"role": "user", "content": f"prompt {i}"}] for i in range(k)]


def test_openai_every_completion_in_order_despite_faults():
    faults = {"prompt 1": ["429:0.05", "500"], "prompt 2": ["503"], "prompt 3": ["drop"], "prompt 4": ["slow:3"],
              "prompt 5": ["drop", "429", "502", "slow:3"], "prompt 6": ["504"]}
    with FaultServer(ports=2, latency=0.01, faults=faults) as srv:
        with OpenAIEngine("fault-model", srv.base_urls, max_retries=4, timeout=1.0, backoff=0.01) as eng:
            out = eng.generate(_convs(24), SamplingParams(max_tokens=100))
    assert [o[0].text for o in out] == [answer(f"prompt {i}", 0, 100)[0] for i in range(24)]
    for i in range(24):                                   # each request once, plus one retry per injected fault
        assert srv.count(f"prompt {i}") == 1 + len(faults.get(f"prompt {i}", [])) <= 1 + 4
    n_faults = sum(map(len, faults.values()))
    assert len(srv.requests) == 24 + n_faults
    assert eng.stats["requests"] == 24 + n_faults and eng.stats["retries"] == n_faults and eng.stats["failed"] == 0
    assert eng.stats["causes"] == {"http 429": 2, "http 500": 1, "http 503": 1, "http 502": 1, "http 504": 1,
                                   "connection": 2, "timeout": 2}
    assert out[5][0].seconds > 0 and out[0][0].finish_reason == "stop"


def test_openai_retry_after_is_honoured():
    with FaultServer(faults={"prompt 0": ["429:0.4"]}) as srv:
        with OpenAIEngine("fault-model", srv.base_urls, backoff=0.001) as eng:
            eng.generate(_convs(1), SamplingParams())
    first, second = srv.requests
    assert second.t_start - first.t_end >= 0.38


def test_openai_gives_up_after_max_retries():
    faults = {"prompt 2": ["500"] * 10}
    with FaultServer(faults=faults) as srv:
        with OpenAIEngine("fault-model", srv.base_urls, max_retries=3, backoff=0.001) as eng:
            with pytest.raises(EngineError, match=r"conversation 2: .* failed after 4 attempts: HTTP 500"):
                eng.generate(_convs(4), SamplingParams())
    assert srv.count("prompt 2") == 4


def test_openai_does_not_retry_client_errors():
    with FaultServer(faults={"prompt 0": ["400"]}) as srv:
        with OpenAIEngine("fault-model", srv.base_urls, backoff=0.001) as eng:
            with pytest.raises(EngineError, match="failed after 1 attempt: HTTP 400"):
                eng.generate(_convs(1), SamplingParams())
    assert srv.count("prompt 0") == 1


def test_openai_spreads_over_base_urls():
    with FaultServer(ports=3, latency=0.01) as srv:
        with OpenAIEngine("fault-model", srv.base_urls) as eng:
            eng.generate(_convs(30), SamplingParams())
    assert sorted(srv.per_port().values()) == [10, 10, 10]


def test_openai_concurrency_is_bounded():
    with FaultServer(latency=0.1) as srv:
        with OpenAIEngine("fault-model", srv.base_urls, max_concurrency=5) as eng:
            eng.generate(_convs(40), SamplingParams())
        assert srv.max_in_flight == 5
        srv.max_in_flight = 0
        with OpenAIEngine("fault-model", srv.base_urls) as eng:   # default: 64
            eng.generate(_convs(100), SamplingParams())
        assert 32 < srv.max_in_flight <= 64


def test_openai_n_usage_and_finish_reasons():
    with FaultServer(max_choices=2) as srv:
        with OpenAIEngine("fault-model", srv.base_urls) as eng:
            one = eng.generate(_convs(2), SamplingParams(max_tokens=2))
            many = eng.generate(_convs(2), SamplingParams(n=5, max_tokens=100))
    assert [(c.text, c.finish_reason, c.prompt_tokens, c.completion_tokens) for c in one[1]] == [("reply 0", "length", 2, 2)]
    assert [c.text for c in many[0]] == [answer("prompt 0", i, 100)[0] for i in (0, 1, 0, 1, 0)]
    assert srv.count("prompt 0") == 1 + 3                 # at most 2 choices per reply: 2 + 2 + 1
    assert [r.n for r in srv.requests if r.prompt == "prompt 0"][1:] == [5, 3, 1]
    assert many[0][4].completion_tokens == 5 and many[0][0].completion_tokens is None   # usage split unknown for 2 choices


def test_openai_works_inside_a_running_event_loop():
    "As in a Jupyter cell: `generate` is called from code that runs inside an event loop."
    async def cell(eng): return eng.generate(_convs(3), SamplingParams())
    with FaultServer() as srv:
        with OpenAIEngine("fault-model", srv.base_urls) as eng:
            out = asyncio.run(cell(eng))
    assert [o[0].text for o in out] == [answer(f"prompt {i}", 0, 1024)[0] for i in range(3)]


def test_openai_api_key_sent_but_never_shown(monkeypatch, caplog):
    secret = "sk-test-SECRET-0123456789"
    monkeypatch.setenv("MIXCOT_TEST_KEY", secret)
    caplog.set_level(logging.DEBUG)
    with FaultServer(faults={"prompt 0": ["429", "drop"]}) as srv:
        with make_engine(EngineSpec(engine="openai", model="fault-model", base_urls=srv.base_urls,
                                    api_key_env="MIXCOT_TEST_KEY")) as eng:
            eng.backoff = 0.001
            eng.generate(_convs(2), SamplingParams())
            shown = repr(eng) + str(eng.stats)
    assert {r.auth for r in srv.requests} == {f"Bearer {secret}"}
    with FaultServer(api_key="another-key") as srv:
        with OpenAIEngine("fault-model", srv.base_urls, api_key_env="MIXCOT_TEST_KEY") as eng:
            with pytest.raises(EngineError, match="HTTP 401") as err:
                eng.generate(_convs(1), SamplingParams())
    tb = "".join(traceback.format_exception(err.value))
    assert err.value.__cause__ is None and err.value.__context__ is None   # no chained error holding the request
    for text in (shown, str(err.value), repr(err.value), tb, caplog.text):
        assert secret not in text
    assert "retry 1/8" in caplog.text                     # the logs were captured, and they name no key


def test_openai_placeholder_key_when_unset(monkeypatch):
    monkeypatch.delenv("MIXCOT_UNSET_KEY", raising=False)
    with FaultServer() as srv:
        with OpenAIEngine("fault-model", srv.base_urls, api_key_env="MIXCOT_UNSET_KEY") as eng:
            eng.generate(_convs(1), SamplingParams())
    assert srv.requests[0].auth == "Bearer EMPTY"


# ---------------------------------------------------------------------------------------------------------------------
# streaming: each conversation once, as it finishes

def test_transformers_stream_each_conversation_once(tiny_model, hf, convs):
    params = SamplingParams(n=2, temperature=1.0, max_tokens=16, seed=5)
    batches = list(hf.stream(convs, params))
    assert len(batches) == 2 * len(convs) // hf.batch_size          # one batch per 8 sequences, each conversation when whole
    got = {i: cs for b in batches for i, cs in b}
    assert sorted(i for b in batches for i, _ in b) == list(range(len(convs))) and all(len(cs) == 2 for cs in got.values())
    assert [[c.text for c in got[i]] for i in range(len(convs))] == [[c.text for c in o] for o in hf.generate(convs, params)]


def test_sampling_knobs_reach_transformers(hf, convs):
    "top_k=1 is greedy whatever the temperature; a strong repetition penalty changes greedy texts; `extra` is refused here."
    greedy = [o[0].text for o in hf.generate(convs[:6], SamplingParams(max_tokens=24))]
    assert [o[0].text for o in hf.generate(convs[:6], SamplingParams(temperature=1.5, top_k=1, max_tokens=24, seed=1))] == greedy
    assert [o[0].text for o in hf.generate(convs[:6], SamplingParams(repetition_penalty=3.0, max_tokens=24))] != greedy
    with pytest.raises(ValueError, match="does not take sampling.extra"):
        hf.generate(convs[:1], SamplingParams(extra={"min_tokens": 4}))


def test_sampling_params_and_engine_args_are_checked_with_hints():
    from mixcot_nb.backends import chat_request
    with pytest.raises(ValueError, match=r"sampling.extra.presense_penalty: .*did you mean: presence_penalty"):
        SamplingParams(extra={"presense_penalty": 1.0})
    with pytest.raises(ValueError, match="set `top_k` as its own field"):
        SamplingParams(extra={"top_k": 3})
    with pytest.raises(ValueError, match=r"engine_args.enforce_eagr: .*did you mean: enforce_eager"):
        EngineSpec(engine="vllm", model="m", engine_args={"enforce_eagr": True})
    with pytest.raises(ValueError, match="give it under engine_args"):
        EngineSpec(engine="vllm", model="m", enable_prefix_caching=True)
    with pytest.raises(ValueError, match="did you mean: max_concurrency"):
        EngineSpec(engine="openai", model="m", max_concurency=4)
    spec = EngineSpec(engine="vllm", model="m", engine_args=dict(enforce_eager=True, data_parallel_size=2,
                                                                  pipeline_parallel_size=2, enable_prefix_caching=True))
    assert EngineSpec.model_validate(spec.model_dump()) == spec
    kw = chat_request("m", [{"role": "user", "content": "hi"}],
                      SamplingParams(top_k=20, min_p=0.1, extra={"presence_penalty": 0.5, "min_tokens": 3}))
    assert kw["presence_penalty"] == 0.5 and kw["extra_body"] == {"top_k": 20, "min_p": 0.1, "min_tokens": 3}
    assert "extra_body" not in chat_request("m", [{"role": "user", "content": "hi"}], SamplingParams())


def test_openai_stream_hands_over_results_as_they_arrive():
    "A slow request does not hold back the others: they come out first, each once, and all while it is still running."
    with FaultServer(latency=0.02, faults={"prompt 0": ["slow:1.5"]}) as srv:
        with OpenAIEngine("fault-model", srv.base_urls, max_concurrency=4) as eng:
            seen = []
            for batch in eng.stream(_convs(40), SamplingParams()):
                seen += [(i, time.monotonic()) for i, _ in batch]
    order = [i for i, _ in seen]
    assert sorted(order) == list(range(40)) and order[-1] == 0
    slow = next(r for r in srv.requests if r.prompt == "prompt 0")
    assert all(t < slow.t_end for i, t in seen if i != 0)          # everything else was handed over before it ended


def test_openai_stream_stopped_early_cancels_the_rest():
    with FaultServer(latency=0.2) as srv:
        with OpenAIEngine("fault-model", srv.base_urls, max_concurrency=2) as eng:
            it = eng.stream(_convs(20), SamplingParams())
            first = next(it)
            it.close()                                             # the caller stops after the first batch
            closed_at = time.monotonic()
            time.sleep(0.5)                                        # requests already on the wire may still finish
            late = [r for r in srv.requests if r.t_start > closed_at + 0.05]   # 50 ms for one already in transit
            assert len(first) >= 1 and len(srv.requests) <= 6 and not late   # nothing more was sent
            out = eng.generate(_convs(3), SamplingParams())       # and the engine still works
    assert [o[0].text for o in out] == [answer(f"prompt {i}", 0, 1024)[0] for i in range(3)]

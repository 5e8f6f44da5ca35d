"Student fine-tuning on tiny local models: labels, over-length policy, full/LoRA/QLoRA, packing, resume, torchrun."
import json, os, signal, subprocess, sys, textwrap, time
from pathlib import Path

import pytest, yaml

from mixcot_nb.core import InputError, JsonlError, RecipeError, load_recipe, parse_recipe, write_jsonl
from mixcot_nb.training import (LoraSpec, TrainRecipe, TrainSummary, TrainingError, build_trainer, end_token_ids, eos_check,
                                load_sft_data, read_train_summary, run_training, tokenize_example)
from mixcot_nb.testing import tiny_sft_rows, write_tiny_mix

ROOT = Path(__file__).resolve().parent.parent
FAST = dict(per_device_train_batch_size=8, max_length=256, save_strategy="no", use_cpu=True, bf16=False,
            activation_checkpointing=False, disable_tqdm=True)


@pytest.fixture(scope="module")
def random_model(tmp_path_factory, data):
    "A tiny Qwen2 chat model with random weights: it has never learned to end its turn."
    from mixcot_nb.testing import build_tiny_chat_model
    return build_tiny_chat_model(tmp_path_factory.mktemp("models")/"tiny-random", train_steps=0,
                                 data_file=data/"math_hendrycks"/"train.jsonl")


@pytest.fixture(scope="module")
def mix(tmp_path_factory, data):
    os.environ.setdefault("MIXCOT_DATA", str(data))
    return write_tiny_mix(tmp_path_factory.mktemp("mixes")/"short", 48)


def recipe(model, mix, out, **kw):
    sft = {**FAST, **kw.pop("sft", {})}
    return TrainRecipe(model_name_or_path=str(model), dataset=str(mix), output_dir=str(out), sft=sft, **kw)


def env(data):
    return {**os.environ, "MIXCOT_DATA": str(data), "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


# --- recipes ---------------------------------------------------------------------------------------------------

def test_recipe_errors_name_file_and_key(tmp_path):
    f = tmp_path/"r.yaml"
    f.write_text(yaml.safe_dump({"model_name_or_path": "m", "dataset": "d", "output_dir": "o",
                                 "sft": {"learning_rate": 1e-5, "num_train_epoch": 2}}))
    with pytest.raises(RecipeError, match=r"r\.yaml: sft: .*sft\.num_train_epoch: not a field of TRL's SFTConfig \(did you mean: num_train_epochs"):
        load_recipe(f, TrainRecipe)
    base = {"model_name_or_path": "m", "dataset": "d", "output_dir": "o"}
    for sft, msg in [({"output_dir": "x"}, "top level"), ({"assistant_only_loss": True}, "not settable"),
                     ({"packing": True, "packing_strategy": "wrapped"}, "wrapped")]:
        with pytest.raises(RecipeError, match=msg): parse_recipe({**base, "sft": sft}, TrainRecipe)
    with pytest.raises(RecipeError, match="lora: given"): parse_recipe({**base, "lora": {"r": 4}}, TrainRecipe)


def test_accelerate_configs_load():
    from accelerate.commands.config.config_args import ClusterConfig
    kinds = {f.stem: ClusterConfig.from_yaml_file(str(f)).distributed_type.value for f in (ROOT/"recipes"/"accelerate").glob("*.yaml")}
    assert kinds == {"ddp": "MULTI_GPU", "zero3": "DEEPSPEED", "zero3-offload": "DEEPSPEED", "zero3-offload-all": "DEEPSPEED", "fsdp": "FSDP"}
    from mixcot_nb.training import LaunchSpec
    offload = {f.stem: LaunchSpec(num_processes=4, config_file=str(f)).offload() for f in (ROOT/"recipes"/"accelerate").glob("zero3*.yaml")}
    assert offload == {"zero3": set(), "zero3-offload": {"optimizer"}, "zero3-offload-all": {"optimizer", "param"}}


def test_paper_recipes_load():
    files = sorted((ROOT/"recipes"/"paper"/"train").rglob("*.yaml"))
    assert len(files) >= 60
    for f in files:
        assert f.read_text().startswith("# Hardware:"), f
        r = load_recipe(f, TrainRecipe)
        assert r.mode in ("full", "lora")


# --- data and labels -------------------------------------------------------------------------------------------

def test_labels_are_response_plus_end_token(tiny_model, mix):
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(tiny_model)
    ends = end_token_ids(tok, str(tiny_model))
    assert ends == {tok.convert_tokens_to_ids("<|im_end|>")}
    ds = load_sft_data(mix)
    for msgs in ds["messages"][:10]:
        ex = tokenize_example(tok, msgs, ends)
        labelled = [t for t in ex["labels"] if t != -100]
        assert tok.decode(labelled) == msgs[-1]["content"] + "<|im_end|>"
        first = next(i for i, l in enumerate(ex["labels"]) if l != -100)   # one contiguous span, right after the prompt
        assert ex["labels"][first:first + len(labelled)] == labelled
        assert tok.decode(ex["input_ids"][:first]) == tok.apply_chat_template(msgs[:-1], tokenize=False, add_generation_prompt=True)


def test_template_without_end_token_is_an_error(tiny_model):
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(tiny_model)
    tok.chat_template = tok.chat_template.replace("'<|im_end|>' + ", "")
    msgs = tiny_sft_rows(1)[0]["messages"]
    with pytest.raises(ValueError, match="never learn to stop"): tokenize_example(tok, msgs, {tok.eos_token_id})


def test_bad_datasets(tmp_path):
    write_jsonl(tmp_path/"a.jsonl", [{"text": "x"}])
    with pytest.raises(ValueError, match="no `messages` column"): load_sft_data(tmp_path/"a.jsonl")
    write_jsonl(tmp_path/"b.jsonl", [tiny_sft_rows(1)[0], {"messages": [{"role": "assistant", "content": "x"}, {"role": "user", "content": "y"}]}])
    with pytest.raises(ValueError, match=r"b\.jsonl: row 2 \(line 2\): field messages: the last turn"): load_sft_data(tmp_path/"b.jsonl")
    with pytest.raises(FileNotFoundError): load_sft_data(tmp_path/"none.jsonl")
    (tmp_path/"c.jsonl").write_text(json.dumps(tiny_sft_rows(1)[0]) + "\nnot json\n" + json.dumps(tiny_sft_rows(1)[0]) + "\n")
    with pytest.raises(JsonlError, match=r"c\.jsonl:2"): load_sft_data(tmp_path/"c.jsonl")
    (tmp_path/"d.jsonl").write_text("")
    with pytest.raises(InputError, match=r"d\.jsonl: no rows"): load_sft_data(tmp_path/"d.jsonl")


def test_overlength_dropped_and_counted_never_truncated(tiny_model, tmp_path, data):
    os.environ.setdefault("MIXCOT_DATA", str(data))
    mixed = write_tiny_mix(tmp_path/"mixed", 24, long_every=3)
    r = recipe(tiny_model, mixed, tmp_path/"out", eos_check=0, sft=dict(max_length=160, max_steps=2))
    trainer, info = build_trainer(r, progress=False)
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(tiny_model)
    full = [tokenize_example(tok, m, set(info["end_token_ids"])) for m in load_sft_data(mixed)["messages"]]
    over = [i + 1 for i, ex in enumerate(full) if len(ex["input_ids"]) > 160]
    assert over and info["dropped_overlength"] == len(over) and [d["row"] for d in info["dropped"]] == over
    kept = [ex["input_ids"] for ex in full if len(ex["input_ids"]) <= 160]
    assert trainer.train_dataset["input_ids"] == kept            # every kept row whole, in order
    s = run_training(r, progress=False)
    assert s.dropped_overlength == len(over) and s.kept == 24 - len(over)
    assert [d["row"] for d in map(json.loads, (tmp_path/"out"/"dropped.jsonl").read_text().splitlines())] == over
    with pytest.raises(ValueError, match=rf"row {over[0]}: \d+ tokens > max_length 160 \({len(over)} such rows\)"):
        build_trainer(r.model_copy(update={"overlength": "error", "output_dir": str(tmp_path/"o2")}), progress=False)


# --- training --------------------------------------------------------------------------------------------------

def test_full_training_learns_to_stop(random_model, mix, tmp_path):
    before = eos_check(random_model, load_sft_data(mix), {2}, n=4)
    assert not before.ok                                           # a random model runs on to the budget
    r = recipe(random_model, mix, tmp_path/"full", sft=dict(learning_rate=3e-3, num_train_epochs=8, lr_scheduler_type="cosine",
                                                            warmup_steps=0.05))
    s = run_training(r, progress=False)
    losses = [l for _, l in s.loss_curve]
    assert losses[-1] < losses[0] / 2 and s.steps == 48 and s.world_size == 1
    assert s.eos_check.ok, s.eos_check                             # greedy generation now stops at <|im_end|>
    assert s.adapter_path is None and Path(s.model_path) == tmp_path/"full"
    from huggingface_hub import ModelCard
    card = ModelCard.load(tmp_path/"full"/"README.md")               # a local base with no Hub id: no base_model, named in the text
    assert card.data.library_name == "transformers" and card.data.base_model is None and str(random_model) in card.text
    from transformers import AutoModelForCausalLM, AutoTokenizer
    model, tok = AutoModelForCausalLM.from_pretrained(s.model_path), AutoTokenizer.from_pretrained(s.model_path)
    assert tok.chat_template and model.config.vocab_size == len(tok)
    mtime = (tmp_path/"full"/"train_summary.json").stat().st_mtime_ns
    assert run_training(r, progress=False) == s and (tmp_path/"full"/"train_summary.json").stat().st_mtime_ns == mtime
    saved = json.loads((tmp_path/"full"/"train_summary.json").read_text())       # the file's keys, as before summaries were typed
    assert list(saved) == [k for k in TrainSummary.model_fields if k != "launch"] and saved["loss_curve"][0][0] == 1
    with pytest.raises(TrainingError, match="differs in: sft"):
        run_training(r.model_copy(update={"sft": {**r.sft, "learning_rate": 1e-3}}), progress=False)
    saved = json.loads((tmp_path/"full"/"train_recipe.json").read_text())     # a run saved before val_size and system existed
    (tmp_path/"full"/"train_recipe.json").write_text(json.dumps({k: v for k, v in saved.items() if k not in ("val_size", "system")}))
    assert run_training(r, progress=False) == s


def test_validation_split_and_system_turn(tiny_model, mix, tmp_path):
    "val_size holds out a seeded share (the authors' LLaMA-Factory split), evaluated by the trainer; `system` opens every example."
    def split(seed, **kw):
        trainer, info = build_trainer(recipe(tiny_model, mix, tmp_path/f"v{seed}", val_size=0.25, seed=seed, **kw), progress=False)
        return trainer, info, sorted(map(tuple, trainer.eval_dataset["input_ids"]))
    trainer, info, held = split(0, system="You are a helpful assistant.")
    assert (info["kept"], info["held_out"], len(trainer.train_dataset)) == (36, 12, 36)
    assert trainer.args.eval_strategy == "epoch" and split(0, system="You are a helpful assistant.")[2] == held != split(1, system="You are a helpful assistant.")[2]
    from transformers import AutoTokenizer
    text = AutoTokenizer.from_pretrained(tiny_model).decode(trainer.train_dataset[0]["input_ids"])
    assert text.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>"), text[:80]
    with pytest.raises(RecipeError, match="sft.eval_strategy: 'steps' needs held-out examples: set val_size"):
        parse_recipe({"model_name_or_path": "m", "dataset": "d", "output_dir": "o", "sft": {"eval_strategy": "steps"}}, TrainRecipe)


def test_token_budget_sets_the_steps(tiny_model, mix, tmp_path):
    "Equal-token budgets: the steps follow from the data's mean length; tokens seen land on the budget."
    budget = 6000
    s = run_training(recipe(tiny_model, mix, tmp_path/"b", token_budget=budget, eos_check=0, sft=dict(learning_rate=1e-3)), progress=False)
    per_step = s.tokens_per_epoch / s.kept * FAST["per_device_train_batch_size"]
    assert s.steps == round(budget / per_step) and abs(s.tokens_seen - budget) <= per_step / 2 + 1
    with pytest.raises(RecipeError, match="token_budget: sets the steps"):
        parse_recipe({"model_name_or_path": "m", "dataset": "d", "output_dir": "o", "token_budget": 10, "sft": {"max_steps": 3}}, TrainRecipe)


def _greedy(model, tok, msgs, n=12):
    import torch
    ids = tok(tok.apply_chat_template(msgs[:-1], tokenize=False, add_generation_prompt=True), return_tensors="pt", add_special_tokens=False).input_ids
    with torch.no_grad(): return model.generate(ids, max_new_tokens=n, do_sample=False, pad_token_id=tok.pad_token_id)[0].tolist()


@pytest.mark.parametrize("mode", ["lora", "qlora"])
def test_adapter_training_and_merge(tiny_model, mix, tmp_path, mode):
    "LoRA, and QLoRA with bitsandbytes' 4-bit NF4 (its CPU backend runs here): loss falls, the merged model matches."
    r = recipe(tiny_model, mix, tmp_path/mode, mode=mode, merge_adapter=True, eos_check=2,
               lora=LoraSpec(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj", "up_proj", "down_proj"]),
               sft=dict(learning_rate=1e-2, max_steps=10))
    s = run_training(r, progress=False)
    losses = [l for _, l in s.loss_curve]
    assert losses[-1] < losses[0]
    assert Path(s.adapter_path, "adapter_config.json").exists() and Path(s.model_path) == tmp_path/mode/"merged"
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoModelForCausalLM, AutoTokenizer
    tok = AutoTokenizer.from_pretrained(s.model_path)
    merged = AutoModelForCausalLM.from_pretrained(s.model_path).eval()
    peft = AutoPeftModelForCausalLM.from_pretrained(s.adapter_path).eval()
    assert not any("lora" in n for n, _ in merged.named_parameters())
    msgs = load_sft_data(mix)[0]["messages"]
    assert _greedy(merged, tok, msgs) == _greedy(peft, tok, msgs)


def test_qlora_loads_4bit(tiny_model, mix, tmp_path):
    r = recipe(tiny_model, mix, tmp_path/"q", mode="qlora", eos_check=0, sft=dict(max_steps=1))
    trainer, _ = build_trainer(r, progress=False)
    import bitsandbytes as bnb
    layers = [m for m in trainer.model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert layers and all(m.weight.quant_type == "nf4" for m in layers)


def test_packing_does_not_leak_across_examples(tiny_model, mix, tmp_path):
    import torch
    r = recipe(tiny_model, mix, tmp_path/"p", eos_check=0, sft=dict(packing=True, max_length=256, per_device_train_batch_size=2))
    trainer, info = build_trainer(r, progress=False)
    batch = next(iter(trainer.get_train_dataloader()))
    assert "attention_mask" not in batch and batch["input_ids"].shape[0] == 1       # padding-free: one flat row
    pos = batch["position_ids"][0]
    starts = (pos == 0).nonzero().flatten().tolist() + [len(pos)]
    assert len(starts) > 3                                                          # several examples in the row
    model = trainer.model.eval()
    with torch.no_grad():
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits[0]
        for a, b in zip(starts, starts[1:]):
            alone = model(input_ids=batch["input_ids"][:, a:b]).logits[0]
            torch.testing.assert_close(packed[a:b], alone, atol=1e-4, rtol=1e-4)
    s = run_training(r.model_copy(update={"sft": {**r.sft, "max_steps": 6}}), progress=False)
    assert s.steps == 6 and s.loss_curve[-1][1] < s.loss_curve[0][1]


# --- crash, resume and distributed ------------------------------------------------------------------------------

def test_kill_and_resume(tiny_model, mix, tmp_path, data):
    out = tmp_path/"run"
    r = recipe(tiny_model, mix, out, eos_check=0, sft=dict(max_steps=30, save_strategy="steps", save_steps=5, per_device_train_batch_size=4))
    (tmp_path/"r.yaml").write_text(yaml.safe_dump(r.model_dump(mode="json")))
    p = subprocess.Popen([sys.executable, "-m", "mixcot_nb.training", str(tmp_path/"r.yaml"), "--no-progress"], env=env(data),
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (out/"checkpoint-5"/"trainer_state.json").exists():
        assert p.poll() is None and time.time() < deadline, "the run ended before its 5th step was saved"
        time.sleep(0.05)
    p.send_signal(signal.SIGKILL); p.wait()
    assert not (out/"train_summary.json").exists()
    s = run_training(r, progress=False)
    assert s.resumed_from and int(Path(s.resumed_from).name.split("-")[1]) >= 5
    assert s.steps == 30 and [st for st, _ in s.loss_curve] == list(range(1, 31))


RANK_SUMMARY = textwrap.dedent("""
    import os, sys
    from pathlib import Path
    from mixcot_nb.core import load_recipe
    from mixcot_nb.training import TrainRecipe, run_training
    s = run_training(load_recipe(sys.argv[1], TrainRecipe), progress=False)
    Path(sys.argv[2], f"rank{os.environ['RANK']}.json").write_text(s.model_dump_json())
""")


def test_torchrun_two_processes_match_one(tiny_model, mix, tmp_path, data):
    "2 gloo ranks with batch 4 each == 1 process with batch 4 x 2 accumulation steps, within noise; both ranks return the summary."
    common = dict(eos_check=2, sft=dict(max_steps=8, per_device_train_batch_size=4, learning_rate=3e-3))
    single = recipe(tiny_model, mix, tmp_path/"one", **{**common, "sft": {**common["sft"], "gradient_accumulation_steps": 2}})
    multi = recipe(tiny_model, mix, tmp_path/"two", **common)
    (tmp_path/"two.yaml").write_text(yaml.safe_dump(multi.model_dump(mode="json")))
    (tmp_path/"rank_summary.py").write_text(RANK_SUMMARY)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
           str(tmp_path/"rank_summary.py"), str(tmp_path/"two.yaml"), str(tmp_path)]
    res = subprocess.run(cmd, env=env(data), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    two = read_train_summary(tmp_path/"two"/"train_summary.json")
    assert two.world_size == 2                                     # measured inside the run, not trusted from the flag
    ranks = [TrainSummary.model_validate_json((tmp_path/f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0] == ranks[1] == two and two.eos_check.prompts == 2   # rank 1 returns what rank 0 checked and saved
    one = run_training(single, progress=False)
    a, b = [l for _, l in one.loss_curve], [l for _, l in two.loss_curve]
    assert len(a) == len(b) == 8
    assert max(abs(x - y) for x, y in zip(a, b)) < 0.05 * max(a), (a, b)


# --- launched runs, sharded loading, GPU defaults ----------------------------------------------------------------

def test_launch_fsdp_shards_at_load_and_matches_ddp(tiny_model, mix, tmp_path, data, monkeypatch):
    "Two gloo ranks under accelerate's FSDP config: the SFTConfig exists before the model, so the load already sees FSDP."
    from mixcot_nb.training import LaunchSpec, launch_training
    monkeypatch.setenv("OMP_NUM_THREADS", "1"); monkeypatch.setenv("MIXCOT_DATA", str(data))
    r = recipe(tiny_model, mix, tmp_path/"ddp", eos_check=0, sft=dict(max_steps=6, per_device_train_batch_size=4, learning_rate=3e-3))
    ddp = launch_training(r, LaunchSpec(num_processes=2), tmp_path/"logs"/"ddp.log", progress=False)
    fsdp = launch_training(r.model_copy(update={"output_dir": str(tmp_path/"fsdp")}),
                           LaunchSpec(num_processes=2, config_file="recipes/accelerate/fsdp.yaml"), tmp_path/"logs"/"fsdp.log", progress=False)
    assert (ddp.launch.strategy, fsdp.launch.strategy) == ("ddp", "fsdp")
    assert ddp.world_size == fsdp.world_size == 2 and fsdp.launch.exit_status == 0
    assert fsdp.sharded_load == {"zero3": False, "fsdp": True} and ddp.sharded_load == {"zero3": False, "fsdp": False}
    assert Path(ddp.launch.log).read_text().count(str(ddp)) == 1     # `python -m mixcot_nb.training` on 2 ranks: one headline
    a, b = [l for _, l in ddp.loss_curve], [l for _, l in fsdp.loss_curve]
    assert max(abs(x - y) for x, y in zip(a, b)) < 0.05 * max(a), (a, b)


def test_launch_failure_records_exit_status_and_log(tiny_model, mix, tmp_path):
    from mixcot_nb.training import LaunchError, LaunchSpec, launch_training
    bad = recipe(tiny_model, tmp_path/"missing.jsonl", tmp_path/"out", eos_check=0, sft=dict(max_steps=1))
    with pytest.raises(LaunchError, match=r"exited with status 1; log: .*bad\.log[\s\S]*mixcot train: error: dataset .*missing\.jsonl not found") as e:
        launch_training(bad, LaunchSpec(), tmp_path/"bad.log", progress=False)
    assert e.value.launch.exit_status == 1 and e.value.launch.world_size == 1
    assert f'File "{ROOT/"mixcot_nb"}' not in Path(e.value.launch.log).read_text()   # the rank's error is one line, not a traceback
    with pytest.raises(TrainingError, match="multi-node run is launched by Slurm"):
        launch_training(bad, LaunchSpec(nodes=2), tmp_path/"bad.log", progress=False)
    with pytest.raises(RecipeError, match="accelerate config nowhere.yaml not found"):
        parse_recipe({"config_file": "nowhere.yaml"}, __import__("mixcot_nb.training", fromlist=["LaunchSpec"]).LaunchSpec)


def test_gpu_defaults_and_missing_extras(tiny_model, mix, tmp_path):
    "save_total_limit 2 and sdpa by default; Liger, trackers and flash-attn name their package when it is missing."
    r = recipe(tiny_model, mix, tmp_path/"d", eos_check=0, sft=dict(max_steps=1))
    trainer, info = build_trainer(r, progress=False)
    assert trainer.args.save_total_limit == 2 and trainer.args.report_to in ([], "none", ["none"])
    assert info["attn_implementation"] == "sdpa"
    from importlib.util import find_spec
    for sft, pkg in [({"use_liger_kernel": True}, "liger-kernel"), ({"report_to": "wandb"}, "wandb"), ({"report_to": ["tensorboard"]}, "tensorboard"),
                     ({"model_init_kwargs": {"attn_implementation": "flash_attention_2"}}, "flash-attn")]:
        if find_spec(pkg.replace("-", "_")): continue          # installed here: nothing to refuse
        with pytest.raises(TrainingError, match=f"needs the package {pkg}: pip install {pkg}"):
            build_trainer(r.model_copy(update={"sft": {**r.sft, **sft}}), progress=False)

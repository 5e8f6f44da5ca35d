"""Training throughput: `run_training` against a bare TRL SFTTrainer script, and packing against no packing.

    python bench/training.py            # writes bench/results/training.json
    python bench/training.py --gpu      # on a CUDA GPU: a model of Qwen2.5-0.5B's shape, bf16, tokens/s and MFU
    python bench/training.py --gpu --tiny   # the same path on a CPU with a tiny shape (a dry check of the script)

With `--gpu`, the student is Qwen2.5-0.5B-Instruct's architecture (mixcot_nb.pipeline.MODEL_SHAPES) initialised from
its config with random weights (the real model's FLOPs; nothing is downloaded: the tokenizer is the tiny local one,
whose ids are a subset of the model's vocabulary). Both sides train bf16 with sdpa (or flash-attn where installed);
MFU = tokens/s x training FLOPs per token / the GPU's dense bf16 peak (`--peak-tflops`, default H200/H100 SXM: 989).
FLOPs per token = 6 x (parameters in matmuls, the LM head included) + 12 x layers x hidden x mean sequence length.
Then the transformers engine's generation tokens/s on the same model (greedy, fixed new tokens, batch 64).

Same tiny local model, data and SFTConfig for both sides; tokens/s = real (non-pad) tokens trained / trainer.train()
seconds, as TRL counts them (`num_tokens`). Each side runs `--repeats` times alternately; the best run counts.
End-to-end seconds (load, tokenize, train, save; run_training also checks the end token) are reported beside it.
"""
import argparse, json, os, platform, shutil, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("MIXCOT_DATA", str(ROOT.parent/"shared"/"data"))

from mixcot_nb.core import write_json
from mixcot_nb.testing import build_tiny_chat_model, write_tiny_mix
from mixcot_nb.training import TrainRecipe, load_sft_data, run_training

SFT = dict(per_device_train_batch_size=8, learning_rate=1e-3, max_length=512, logging_steps=1, save_strategy="no",
           bf16=False, activation_checkpointing=False, disable_tqdm=True, report_to="none")


def tokens_per_s(log_history, runtime):
    return max(h.get("num_tokens", 0) for h in log_history) / runtime


def bare_trl(model, data, out, steps):
    "What a user would write with TRL alone: the conversational dataset, SFTTrainer, train, save."
    from trl import SFTConfig, SFTTrainer
    t0 = time.time()
    trainer = SFTTrainer(model=str(model), train_dataset=load_sft_data(data).select_columns(["messages"]),
                         args=SFTConfig(output_dir=str(out), max_steps=steps, seed=42, **SFT))
    res = trainer.train()
    trainer.save_model(str(out))
    return {"tokens_per_s": tokens_per_s(trainer.state.log_history, res.metrics["train_runtime"]),
            "train_seconds": res.metrics["train_runtime"], "wall_seconds": time.time() - t0}


def mixcot(model, data, out, steps, eos_check=4, **sft):
    t0 = time.time()
    s = run_training(TrainRecipe(model_name_or_path=str(model), dataset=str(data), output_dir=str(out), eos_check=eos_check,
                                 sft={**SFT, "max_steps": steps, **sft}), progress=False)
    return {"tokens_per_s": s.tokens_per_second, "train_seconds": s.train_seconds, "wall_seconds": time.time() - t0,
            "dropped_overlength": s.dropped_overlength, "eos_check": s.eos_check and s.eos_check.ok}


def best(runs): return max(runs, key=lambda r: r["tokens_per_s"])


def qwen_sized(path, tiny:bool) -> tuple[Path, dict]:
    "A random-weight model of Qwen2.5-0.5B's shape (or a tiny one) with the tiny local tokenizer, saved in `path`."
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM
    from mixcot_nb.pipeline import MODEL_SHAPES, model_shape
    tok_dir = build_tiny_chat_model(Path(path).parent/"tokenizer-source", train_steps=0)
    tok = AutoTokenizer.from_pretrained(tok_dir)
    L, h, heads, kv, d, inter, vocab, tied = (2, 128, 4, 2, 32, 256, 2048, True) if tiny else MODEL_SHAPES["Qwen/Qwen2.5-0.5B-Instruct"]
    cfg = Qwen2Config(vocab_size=vocab, hidden_size=h, intermediate_size=inter, num_hidden_layers=L, num_attention_heads=heads,
                      num_key_value_heads=kv, head_dim=d, max_position_embeddings=32768, rope_theta=1e6, tie_word_embeddings=tied,
                      bos_token_id=None, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(cfg).to(torch.bfloat16)
    model.generation_config.eos_token_id, model.generation_config.pad_token_id = tok.eos_token_id, tok.pad_token_id
    model.save_pretrained(path); tok.save_pretrained(path)
    return Path(path), model_shape(str(path))


def flops_per_token(shape:dict, mean_len:float) -> float:
    "Training FLOPs per token: 6 x matmul parameters (LM head included, input embedding not) + attention scores."
    matmul = shape["params"] - shape["vocab"] * shape["hidden"] * (0 if shape["tied"] else 1)
    return 6 * matmul + 12 * shape["layers"] * shape["hidden"] * mean_len


def generation_tokens_per_s(model, n:int=64, new_tokens:int=256) -> dict:
    "The transformers engine, greedy, `n` prompts at once, exactly `new_tokens` each (end tokens ignored)."
    import torch
    from mixcot_nb.backends import SamplingParams, TransformersEngine
    from mixcot_nb.testing import tiny_sft_rows
    convs = [r["messages"][:-1] for r in tiny_sft_rows(n)]
    with TransformersEngine(str(model), device="cuda" if torch.cuda.is_available() else "cpu", batch_size=n) as eng:
        eng.generate(convs[:2], SamplingParams(max_tokens=8))          # warm-up
        eng.model.generation_config.eos_token_id = None                 # random weights: run every sequence to the budget
        t0 = time.time()
        out = eng.generate(convs, SamplingParams(max_tokens=new_tokens))
        if torch.cuda.is_available(): torch.cuda.synchronize()
        secs = time.time() - t0
    toks = sum(o[0].completion_tokens for o in out)
    return {"prompts": n, "new_tokens": toks, "seconds": round(secs, 2), "tokens_per_s": round(toks / secs, 1)}


def gpu_main(args):
    "mixcot train against bare TRL on a Qwen2.5-0.5B-shaped model, bf16: tokens/s and MFU; then generation tokens/s."
    import torch, transformers, trl
    cuda = torch.cuda.is_available()
    if not cuda and not args.tiny: sys.exit("--gpu needs a CUDA GPU (or --tiny for the CPU dry check)")
    work = Path(tempfile.mkdtemp(prefix="bench-training-gpu-"))
    model, shape = qwen_sized(work/"model", args.tiny)
    data = write_tiny_mix(work/"data", 512, long_every=1)                 # full MATH solutions: a few hundred tokens each
    SFT.update(bf16=cuda, per_device_train_batch_size=args.batch, max_length=1024, activation_checkpointing=False,
               gradient_checkpointing=False, use_cpu=not cuda, dataloader_pin_memory=cuda)
    runs = {"bare_trl": [], "mixcot": []}
    for i in range(args.repeats):
        runs["bare_trl"].append(bare_trl(model, data, work/f"bare{i}", args.steps))
        runs["mixcot"].append(mixcot(model, data, work/f"mixcot{i}", args.steps, eos_check=0))   # random weights: no stop to check
    b = {k: best(v) for k, v in runs.items()}
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(model)
    lengths = [len(tok(tok.apply_chat_template(m, tokenize=False), add_special_tokens=False)["input_ids"]) for m in load_sft_data(data)["messages"]]
    mean_len = sum(lengths) / len(lengths)
    fpt = flops_per_token(shape, mean_len)
    peak = args.peak_tflops * 1e12
    for r in b.values(): r["mfu"] = round(r["tokens_per_s"] * fpt / peak, 4)
    gen = generation_tokens_per_s(model, new_tokens=32 if args.tiny else 256)
    result = {
        "command": "python bench/training.py " + " ".join(sys.argv[1:]),
        "setup": {"model": "Qwen2.5-0.5B-Instruct's shape, random weights" if not args.tiny else "tiny Qwen2 shape (CPU dry check)",
                  "params": shape["params"], "flops_per_token": fpt, "mean_sequence_tokens": round(mean_len, 1),
                  "peak_tflops_bf16": args.peak_tflops, "steps": args.steps, "sft": SFT, "repeats": args.repeats,
                  "device": torch.cuda.get_device_name(0) if cuda else platform.processor() or platform.machine(),
                  "attn_implementation": "flash_attention_2" if cuda and __import__("importlib").util.find_spec("flash_attn") else "sdpa",
                  "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "trl": trl.__version__}},
        "mixcot_vs_bare_trl": {"tokens_per_s_ratio": b["mixcot"]["tokens_per_s"] / b["bare_trl"]["tokens_per_s"],
                               "mixcot": b["mixcot"], "bare_trl": b["bare_trl"], "target": ">= 0.95"},
        "generation": gen, "runs": runs}
    shutil.rmtree(work, ignore_errors=True)
    write_json(args.out, result)
    print(json.dumps({"tokens_per_s_ratio": round(result["mixcot_vs_bare_trl"]["tokens_per_s_ratio"], 3),
                      "mixcot_tokens_per_s": round(b["mixcot"]["tokens_per_s"]), "mixcot_mfu": b["mixcot"]["mfu"],
                      "bare_trl_tokens_per_s": round(b["bare_trl"]["tokens_per_s"]), "bare_trl_mfu": b["bare_trl"]["mfu"],
                      "generation_tokens_per_s": gen["tokens_per_s"]}))
    print(f"wrote {args.out}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", default=None, help="result JSON (default bench/results/training.json, or training_gpu.json)")
    ap.add_argument("--gpu", action="store_true", help="the GPU benchmark: Qwen2.5-0.5B's shape, bf16, MFU")
    ap.add_argument("--tiny", action="store_true", help="with --gpu: a tiny shape, runs on a CPU (dry check)")
    ap.add_argument("--batch", type=int, default=8, help="with --gpu: per-device batch size")
    ap.add_argument("--peak-tflops", type=float, default=989.0, help="with --gpu: the GPU's dense bf16 peak (H200/H100 SXM: 989)")
    args = ap.parse_args()
    args.out = args.out or str(ROOT/"bench"/"results"/("training_gpu.json" if args.gpu else "training.json"))
    if args.gpu: return gpu_main(args)
    res_dir = ROOT/"bench"/"results"
    model = build_tiny_chat_model(res_dir/"models"/"tiny-qwen2-h128-l4", hidden_size=128, num_layers=4, num_heads=4,
                                  num_kv_heads=2, intermediate_size=256, train_steps=0)
    work = Path(tempfile.mkdtemp(prefix="bench-training-"))
    short = write_tiny_mix(work/"short", 160)
    mixed = write_tiny_mix(work/"mixed", 160, long_every=4)
    runs = {"bare_trl": [], "mixcot": [], "no_packing": [], "packing": []}
    for i in range(args.repeats):
        runs["bare_trl"].append(bare_trl(model, short, work/f"bare{i}", args.steps))
        runs["mixcot"].append(mixcot(model, short, work/f"mixcot{i}", args.steps))
        runs["no_packing"].append(mixcot(model, mixed, work/f"nopack{i}", args.steps))
        runs["packing"].append(mixcot(model, mixed, work/f"pack{i}", args.steps, packing=True))
    shutil.rmtree(work, ignore_errors=True)
    b = {k: best(v) for k, v in runs.items()}
    import torch, transformers, trl
    result = {
        "command": "python bench/training.py " + " ".join(sys.argv[1:]),
        "setup": {"model": "tiny Qwen2, hidden 128, 4 layers, vocab ~1k, fp32", "steps": args.steps, "sft": SFT,
                  "data": "160 MATH train problems; 'mixed' = every 4th response the full solution", "repeats": args.repeats,
                  "cpu_threads": torch.get_num_threads(), "machine": platform.processor() or platform.machine(),
                  "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "trl": trl.__version__}},
        "mixcot_vs_bare_trl": {"tokens_per_s_ratio": b["mixcot"]["tokens_per_s"] / b["bare_trl"]["tokens_per_s"],
                               "wall_ratio": b["bare_trl"]["wall_seconds"] / b["mixcot"]["wall_seconds"],
                               "mixcot": b["mixcot"], "bare_trl": b["bare_trl"], "target": ">= 0.95"},
        "packing_vs_no_packing": {"tokens_per_s_ratio": b["packing"]["tokens_per_s"] / b["no_packing"]["tokens_per_s"],
                                  "packing": b["packing"], "no_packing": b["no_packing"]},
        "runs": runs}
    write_json(args.out, result)
    print(json.dumps({k: result[k]["tokens_per_s_ratio"] for k in ("mixcot_vs_bare_trl", "packing_vs_no_packing")}))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

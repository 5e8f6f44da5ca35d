"""Training throughput: `run_training` against a bare TRL SFTTrainer script, and packing against no packing.

    python bench/training.py            # writes bench/results/training.json

Same tiny local model, data and SFTConfig for both sides; tokens/s = real (non-pad) tokens trained / trainer.train()
seconds, as TRL counts them (`num_tokens`). Each side runs `--repeats` times alternately; the best run counts.
End-to-end seconds (load, tokenize, train, save; run_training also checks the end token) are reported beside it.
"""
import argparse, json, os, platform, shutil, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("MIXCOT_DATA", str(ROOT.parent/"shared"/"data"))

from mixcot_nb.backends import build_tiny_chat_model
from mixcot_nb.core import write_json
from mixcot_nb.training import TrainRecipe, load_sft_data, run_training, write_tiny_mix

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


def mixcot(model, data, out, steps, **sft):
    t0 = time.time()
    s = run_training(TrainRecipe(model_name_or_path=str(model), dataset=str(data), output_dir=str(out),
                                 sft={**SFT, "max_steps": steps, **sft}), progress=False)
    return {"tokens_per_s": s["tokens_per_second"], "train_seconds": s["train_seconds"], "wall_seconds": time.time() - t0,
            "dropped_overlength": s["dropped_overlength"], "eos_check": s["eos_check"]["ok"]}


def best(runs): return max(runs, key=lambda r: r["tokens_per_s"])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT/"bench"/"results"/"training.json"))
    args = ap.parse_args()
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

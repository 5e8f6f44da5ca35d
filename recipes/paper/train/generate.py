"""Write the paper's training recipes: one YAML per student x arm, in recipes/paper/train/<student>/<arm>.yaml.

The recipes are data; this script only keeps the 10 x 6 (+ the repository's Mix variants) files consistent.
Edit the tables below and rerun `python recipes/paper/train/generate.py`; or copy one YAML and edit it by hand.
Sources: PAPER.md section 3 (Table 5; the authors' LLaMA-Factory YAMLs; the released model cards).
"""
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
ARMS = ["long", "short", "large", "small", "mix-long", "mix-large"]
FULL = {   # <= 8B: full fine-tuning (Table 5)
    "qwen2.5-0.5b": "Qwen/Qwen2.5-0.5B-Instruct", "qwen2.5-1.5b": "Qwen/Qwen2.5-1.5B-Instruct",
    "qwen2.5-3b": "Qwen/Qwen2.5-3B-Instruct", "qwen2.5-7b": "Qwen/Qwen2.5-7B-Instruct",
    "llama3.2-1b": "meta-llama/Llama-3.2-1B-Instruct", "llama3.2-3b": "meta-llama/Llama-3.2-3B-Instruct",
    "llama3.1-8b": "meta-llama/Llama-3.1-8B-Instruct"}
LORA = {   # 14B and up: LoRA (model cards)
    "qwen2.5-14b": "Qwen/Qwen2.5-14B-Instruct", "qwen2.5-32b": "Qwen/Qwen2.5-32B-Instruct",
    "llama3.3-70b": "meta-llama/Llama-3.3-70B-Instruct"}

COMMON = dict(num_train_epochs=2, lr_scheduler_type="cosine", optim="adamw_torch", weight_decay=0.0, max_grad_norm=1.0,
              max_length=16384, bf16=True, activation_checkpointing=True, logging_steps=1, save_steps=1000)
FULL_SFT = dict(learning_rate=1.0e-5, warmup_steps=0, per_device_train_batch_size=2, gradient_accumulation_steps=1, **COMMON)
LORA_SFT = dict(learning_rate=1.0e-4, warmup_steps=0.1, per_device_train_batch_size=1, gradient_accumulation_steps=1, **COMMON)
# The authors' repository trained the Mix arms differently (exp/MATH_mix.yaml, the Llama Mix-Long model card):
# global batch 80 = 5 per device x 4 GPUs x 4 accumulation steps, packed into 4096-token rows.
REPO_MIX = dict(per_device_train_batch_size=5, gradient_accumulation_steps=4, max_length=4096, packing=True)
LORA_SPEC = dict(r=8, lora_alpha=16, lora_dropout=0.0, target_modules="all-linear")   # LLaMA-Factory's defaults

LAUNCH = "accelerate launch --config_file recipes/accelerate/zero3.yaml -m mixcot_nb.training {path}"


def header(student, arm, mode, variant):
    gpus = "4x 80 GB GPUs (A100/H100)" if student != "llama3.3-70b" else "4x 80 GB GPUs (H100), ZeRO-3; 8 GPUs leave more headroom"
    lines = [f"# Hardware: {gpus}, DeepSpeed ZeRO-3, bf16 -- launch: {LAUNCH.format(path=f'recipes/paper/train/{student}/{arm}{variant}.yaml')}",
             f"# The paper's {arm} arm for {student} ({'full fine-tuning, Table 5' if mode == 'full' else 'LoRA, as the released model cards'}); "
             "dataset from recipes/paper/mix.yaml."]
    if variant:
        lines.append("# The authors' repository settings for Mix arms (exp/MATH_mix.yaml): global batch 80, packing into 4096 tokens."
                     " There, longer examples were truncated; here they are dropped (overlength: drop) and counted.")
    else:
        lines.append("# Table 5 says max length 16384; the authors' repository used cutoff_len 8192 (PAPER.md 3.3): set max_length: 8192 to follow it.")
    if mode == "lora":
        lines.append("# LoRA rank/alpha/targets are unconfirmed for the paper: these are LLaMA-Factory's defaults (rank 8, alpha 16, all linear layers).")
    return "\n".join(lines) + "\n"


def recipe(student, hub, arm, mode, variant=""):
    sft = dict(FULL_SFT if mode == "full" else LORA_SFT)
    if variant: sft.update(REPO_MIX)
    r = {"model_name_or_path": hub, "dataset": f"runs/paper/mixes/{arm}",
         "output_dir": f"runs/paper/models/{student}__{arm}{variant}", "mode": mode}
    if mode == "lora": r |= {"lora": LORA_SPEC, "merge_adapter": True}
    r |= {"overlength": "drop", "seed": 42}
    body = ("# Model\n" + yaml.safe_dump({k: r[k] for k in ("model_name_or_path", "mode") + (("lora", "merge_adapter") if mode == "lora" else ())}, sort_keys=False)
            + "\n# Data\n" + yaml.safe_dump({k: r[k] for k in ("dataset", "overlength")}, sort_keys=False)
            + "\n# Trainer\n" + yaml.safe_dump({"output_dir": r["output_dir"], "seed": r["seed"], "sft": sft}, sort_keys=False))
    return header(student, arm, mode, variant) + "\n" + body


def main():
    n = 0
    for mode, students in (("full", FULL), ("lora", LORA)):
        for student, hub in students.items():
            d = HERE/student
            d.mkdir(exist_ok=True)
            for arm in ARMS:
                (d/f"{arm}.yaml").write_text(recipe(student, hub, arm, mode)); n += 1
                if arm.startswith("mix"): (d/f"{arm}-repo.yaml").write_text(recipe(student, hub, arm, mode, "-repo")); n += 1
    print(f"wrote {n} recipes under {HERE}")


if __name__ == "__main__":
    main()

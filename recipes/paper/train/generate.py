"""Write the paper grid's trainings as standalone recipes: recipes/paper/train/<student>/<arm>.yaml.

Each file is the training unit `train:<student>:<arm>` of recipes/paper/grid.yaml (the grid's `train`, the student's own
`train`, the grid's `arm_train` for the arm, the student's own `arm_train`: the more specific wins), reading the mixes
of recipes/paper/mix.yaml instead of the grid's run. So the stage-by-stage route trains exactly as `mixcot run
recipes/paper/grid.yaml` does; tests/test_fidelity.py checks that the files still match the grid. Edit the grid and
rerun `python recipes/paper/train/generate.py`.
"""
from pathlib import Path

import yaml

from mixcot_nb.pipeline import load_experiment, plan
from mixcot_nb.training import TrainRecipe

HERE = Path(__file__).resolve().parent
GRID = HERE.parent/"grid.yaml"
RUN = "runs/paper"                       # recipes/paper/mix.yaml writes its arms here
LAUNCH = "accelerate launch --config_file recipes/accelerate/zero3.yaml -m mixcot_nb.cli train {path}"
MODEL_KEYS, DATA_KEYS = ("model_name_or_path", "mode", "lora", "merge_adapter"), ("dataset", "overlength", "val_size", "system")


def header(student:str, arm:str, r:dict) -> str:
    "The recipe's comment lines: hardware and launch, what it is, and where its settings come from."
    gpus = "4x 80 GB GPUs (H100), ZeRO-3; 8 GPUs leave more headroom" if student == "llama3.3-70b" else "4x 80 GB GPUs (A100/H100)"
    lines = [f"# Hardware: {gpus}, DeepSpeed ZeRO-3, bf16 -- launch: {LAUNCH.format(path=f'recipes/paper/train/{student}/{arm}.yaml')}",
             f"# The paper's {arm} arm for {student} ({'LoRA, as the released model cards' if r['mode'] == 'lora' else 'full fine-tuning, Table 5'}); "
             "dataset from recipes/paper/mix.yaml. Generated from recipes/paper/grid.yaml by generate.py: edit the grid, not this file."]
    if arm.startswith("mix"):
        pd, ga = r["sft"]["per_device_train_batch_size"], r["sft"].get("gradient_accumulation_steps", 1)
        lines.append("# The Mix arms as the authors' repository trained them (exp/MATH_mix.yaml: global batch 80), packed into 4096-token"
                     f" rows, longer examples cut (overlength: truncate); here global batch {pd * ga * 4} = {pd} per device x 4 GPUs x {ga} steps.")
    else:
        lines.append("# Table 5 says max length 16384; the authors' repository used cutoff_len 8192 (paper facts §3.3, https://mixcot.github.io/mixcot/paper_facts.html): set max_length: 8192 to follow it.")
    if r["mode"] == "lora":
        lines.append("# LoRA rank/alpha/targets are unconfirmed for the paper: these are LLaMA-Factory's defaults (rank 8, alpha 16, all linear layers).")
    return "\n".join(lines) + "\n"


def recipes() -> dict[Path, str]:
    "Every training unit of the grid as the text of its standalone recipe, by path."
    grid = load_experiment(GRID)
    out = {}
    for u in plan(grid, str(GRID)):
        if u.stage != "train": continue
        _, student, arm = u.id.split(":")
        given = {k: v for k, v in u.config.items() if k in TrainRecipe.model_fields}   # the unit's key also holds its launch
        r = TrainRecipe.model_validate(given).model_dump(mode="json", exclude_unset=True)
        r.update(dataset=f"{RUN}/mixes/{arm}", output_dir=f"{RUN}/models/{student}__{arm}")
        section = lambda keys: yaml.safe_dump({k: r[k] for k in keys if k in r}, sort_keys=False)
        rest = [k for k in r if k not in MODEL_KEYS + DATA_KEYS]
        body = "# Model\n" + section(MODEL_KEYS) + "\n# Data\n" + section(DATA_KEYS) + "\n# Trainer\n" + section(rest)
        out[HERE/student/f"{arm}.yaml"] = header(student, arm, r) + "\n" + body
    return out


def main():
    files = recipes()
    for path, text in files.items():
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
    stale = [p for p in HERE.glob("*/*.yaml") if p not in files]
    for p in stale: p.unlink()
    print(f"wrote {len(files)} recipes under {HERE}; removed {len(stale)} no longer in the grid")


if __name__ == "__main__":
    main()

"""Write the paper's other experiments as recipes derived from recipes/paper/grid.yaml: one YAML per table or figure.

Each variant is the grid with the changes its function below makes, so the shared settings (training, evaluation, the
judge) cannot drift apart; tests/test_fidelity.py checks that the files match. Edit the grid or a function here and
rerun `python recipes/paper/variants.py`.
"""
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
DECONTAMINATE = ["math500", "math_test", "gsm8k", "aime24", "amc23", "olympiadbench"]
RELEASED = {"qwq-32b-long": "UWNSL/MATH_training_split_long_cot", "qwen2.5-32b-short": "UWNSL/MATH_training_split_short_cot",
            "qwen2.5-72b-large": "UWNSL/MATH_training_split_distill_large_teacher",
            "qwen2.5-3b-small": "UWNSL/MATH_training_split_distill_small_teacher"}
SAMPLING = {"temperature": 0.7, "top_p": 0.95, "max_tokens": 4096}        # the grid's (unpublished in the paper)
RATIOS = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]                   # Figure 6's interior; 0 and 1 are the pure arms


def released(g:dict) -> dict:
    "The grid on the authors' released teacher data (already rejection-sampled), imported and graded, not sampled."
    g["teachers"] = [{"name": t["name"], "import_from": {"path": RELEASED[t["name"]]}} for t in g["teachers"]]
    return g


def decontaminated(g:dict) -> dict:
    "The grid with the training problems that overlap any evaluation set removed (the paper did not do this)."
    g["mix"]["decontaminate"] = DECONTAMINATE
    return g


def students(g:dict, names:list[str]) -> list[dict]: return [s for s in g["students"] if s["name"] in names]


def deepseek(g:dict) -> dict:
    "Table 3's DeepSeek-R1 (long CoT) arm for the two 3B students, trained and evaluated as the grid's arms."
    g["teachers"] = [{"name": "deepseek-r1-32b-long", "engine": {"engine": "vllm", "model": "deepseek-ai/DeepSeek-R1-Distill-Qwen-32B",
                                                               "tensor_parallel_size": 2, "max_model_len": 32768},
                      "sampling": {"temperature": 0.6, "top_p": 0.95, "max_tokens": 16384}}]
    g["roles"], g["arms"], g["arm_train"] = {}, [{"name": "deepseek-r1-long", "sources": [{"teacher": "deepseek-r1-32b-long", "weight": 1.0}]}], {}
    g["students"] = students(g, ["qwen2.5-3b", "llama3.2-3b"])
    g["eval_base"] = False
    return g


def table9(g:dict) -> dict:
    "Table 9's teacher pairs, large against small: Llama3.1-70B/8B-Instruct and Gemma2-27B/9B-it, each pair on one pool."
    pairs = {"llama": ("meta-llama/Llama-3.1-70B-Instruct", 4, "meta-llama/Llama-3.1-8B-Instruct", 1),
             "gemma": ("google/gemma-2-27b-it", 2, "google/gemma-2-9b-it", 1)}
    g["teachers"], g["arms"] = [], []
    for fam, (big, tp_big, small, tp_small) in pairs.items():
        for size, model, tp in (("large", big, tp_big), ("small", small, tp_small)):
            g["teachers"].append({"name": f"{fam}-{size}", "engine": {"engine": "vllm", "model": model, "tensor_parallel_size": tp},
                                  "sampling": dict(SAMPLING)})
        for size, other in (("large", "small"), ("small", "large")):
            g["arms"].append({"name": f"{fam}-{size}", "sources": [{"teacher": f"{fam}-{size}", "weight": 1.0}],
                              "pool_with": [f"{fam}-{other}"]})
    g["roles"], g["arm_train"], g["eval_base"] = {}, {}, False
    return g


def fig6(g:dict) -> dict:
    "Figure 6: Qwen2.5-3B-Instruct against the weight of long (or large-teacher) CoT in the mix, 0 to 1, one pool per pair."
    mix_train = g["arm_train"]["mix-long"]
    arms = ["long", "short", "large", "small"]
    for hi, lo, pair in (("long", "short", "long"), ("large", "small", "large")):
        for w in RATIOS:
            name = f"mix-{pair}-{w:.1f}"
            arms.append({"name": name, "sources": [{"teacher": g["roles"][hi], "weight": w}, {"teacher": g["roles"][lo], "weight": round(1 - w, 1)}]})
            g["arm_train"][name] = mix_train
    g["arms"] = arms
    g["arm_train"] = {k: v for k, v in g["arm_train"].items() if k in {a["name"] for a in arms if isinstance(a, dict)}}
    g["students"], g["eval_base"] = students(g, ["qwen2.5-3b"]), False
    return g


VARIANTS = {   # file: (run directory, what it is, function)
    "grid-released.yaml": ("runs/paper-grid-released", "Tables 1-3 on the authors' released teacher data (the faithful data route)", released),
    "grid-decontaminated.yaml": ("runs/paper-grid-decontaminated", "Tables 1-3 with n-gram decontamination against every evaluation set (not in the paper)", decontaminated),
    "table3-deepseek.yaml": ("runs/paper-table3-deepseek", "Table 3's DeepSeek-R1-32B (long CoT) arm for the two 3B students, on the problems it solved (the paper gives no pool)", deepseek),
    "table9.yaml": ("runs/paper-table9", "Table 9: Llama3.1-70B/8B and Gemma2-27B/9B teacher pairs, large against small, each pair on one pool (students as the grid; Table 9's are unconfirmed)", table9),
    "fig6-ratio.yaml": ("runs/paper-fig6", "Figure 6: Qwen2.5-3B against the mix weight of long (large) CoT, 0 to 1 in steps of 0.1; interior weights train as the Mix arms", fig6),
}


def variants() -> dict[Path, str]:
    "Every variant recipe's text, by path."
    out = {}
    for file, (run_dir, what, fn) in VARIANTS.items():
        g = fn(yaml.safe_load((HERE/"grid.yaml").read_text()))
        g["run_dir"] = run_dir
        head = (f"# Hardware: as recipes/paper/grid.yaml (4 x 80 GB GPUs per unit).\n# {what}.\n"
                f"# Generated from recipes/paper/grid.yaml by `{fn.__name__}` in recipes/paper/variants.py: edit those, not this file.\n"
                "# Which settings match the paper: the fidelity table in nbs/tutorials/paper.ipynb.\n\n")
        out[HERE/file] = head + yaml.safe_dump(g, sort_keys=False, width=120)
    return out


def main():
    for path, text in variants().items(): path.write_text(text)
    print(f"wrote {len(VARIANTS)} recipes under {HERE}")


if __name__ == "__main__":
    main()

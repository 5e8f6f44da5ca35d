"""Rebuild the shipped lab bases (`lab_bases/`) of an experiment recipe and say whether the bits match.

    python tools/lab_bases.py recipes/lab/quick.yaml            # rebuild every base, compare with the shipped ones
    python tools/lab_bases.py recipes/lab/quick.yaml --write    # ... and put the new builds in the cache (`make lab-bases`)
    python tools/lab_bases.py recipes/lab/quick.yaml --from-run runs/lab-quick --write   # ship a finished run's bases

Each student whose `build` names a `cache_dir` is pretrained by `mixcot_nb.lab.build_student` in a fresh folder on the
recipe's world (never copied from the cache), or taken as `--from-run` built it; its weights are then compared with the
cache's folder of the same recipe: identical, different or missing. A run copies a shipped base only when its recorded
recipe is the one the code computes now (`build_student` checks), so a stale shipped base is rebuilt, never used.
"""
import argparse, hashlib, json, sys, tempfile
from pathlib import Path

from mixcot_nb.core import load_recipe
from mixcot_nb.lab import build_student, make_world, recipe_key, to_cache
from mixcot_nb.pipeline import ExperimentRecipe


def weights_hash(model_dir:Path) -> str|None:
    f = model_dir/"model.safetensors"
    return hashlib.sha256(f.read_bytes()).hexdigest()[:16] if f.exists() else None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("recipe", help="experiment recipe (YAML) with lab students")
    ap.add_argument("--from-run", type=Path, help="take the bases of this finished run instead of pretraining them")
    ap.add_argument("--write", action="store_true", help="put the bases into each student's cache_dir")
    a = ap.parse_args(argv)
    r = load_recipe(a.recipe, ExperimentRecipe)
    students = [s for s in r.students if s.build and s.build.get("cache_dir")]
    if not students: sys.exit(f"{a.recipe}: no student with build.cache_dir")
    differ = 0
    with tempfile.TemporaryDirectory() as tmp:
        world = Path(tmp)/"world"
        if not a.from_run: make_world(r.world, world)
        for s in students:
            if a.from_run: fresh = a.from_run/"bases"/s.name
            else: fresh = build_student(**{k: v for k, v in s.build.items() if k != "cache_dir"}, world_dir=world, out_dir=Path(tmp)/s.name)
            recipe = json.loads((fresh/"mixcot_lab.json").read_text())["recipe"]
            shipped = Path(s.build["cache_dir"])/recipe_key(recipe)
            new, old = weights_hash(fresh), weights_hash(shipped)
            verdict = "missing from the cache" if old is None else "identical" if new == old else "DIFFERENT"
            differ += old is not None and new != old
            print(f"{s.name}: {shipped} {verdict} (weights sha256 {new}{'' if old in (None, new) else f', shipped {old}'})")
            if a.write: to_cache(fresh, s.build["cache_dir"])
    return 1 if differ and not a.write else 0


if __name__ == "__main__": sys.exit(main())

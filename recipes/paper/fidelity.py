"""The fidelity table: recipes/paper/fidelity.yaml, each setting's value read from the planned recipe it names.

`table()` returns one row per setting: the paper's value and source, the recipe's value (read now, from the unit the
plan makes: a teacher's sampling, an arm's mix, a training's merged settings, an evaluation's settings), and `same`
or why not. `drift(rows)` lists the rows whose recipe value is no longer the one the table records.
"""
import math
from functools import cache
from pathlib import Path

import yaml

from mixcot_nb.evaluation import EvalRecipe
from mixcot_nb.pipeline import load_experiment, plan
from mixcot_nb.training import TrainRecipe

HERE = Path(__file__).resolve().parent


@cache
def _units(recipe:str) -> tuple:
    r = load_experiment(HERE/recipe)
    return r, {u.id: u for u in plan(r, recipe)}


def settings(recipe:str, unit:str) -> dict:
    "The effective settings of `unit` in `recipe` (or of the whole recipe): what the stage will run with, defaults included."
    r, units = _units(recipe)
    if unit == "recipe": return r.model_dump(mode="json")
    u = units[unit]
    if u.stage == "train":
        return TrainRecipe.model_validate({k: v for k, v in u.config.items() if k in TrainRecipe.model_fields}).model_dump(mode="json") \
               | {"world_size": u.config.get("world_size", 1)}
    if u.stage == "eval":
        return EvalRecipe.model_validate({k: v for k, v in u.config.items() if k in EvalRecipe.model_fields} | {"model": "student"}).model_dump(mode="json")
    return u.config.get("spec") or u.config


def _get(obj, path:str):
    "`path` in `obj`: dotted keys or list indices, `[]` maps over a list; None where absent."
    head, _, rest = path.partition(".")
    if head.endswith("[]"):
        xs = [x for x in (_get(y, rest) if rest else y for y in (obj.get(head[:-2]) or [])) if x is not None]
        return xs
    if isinstance(obj, list) and head.isdigit(): obj = obj[int(head)] if int(head) < len(obj) else None
    elif isinstance(obj, dict): obj = obj.get(head)
    else: obj = None
    return obj if not rest or obj is None else _get(obj, rest)


def value(recipe:str, unit:str, path:str):
    "The recipe's value for `path` (`a*b` multiplies); None where the recipe does not set it."
    s = settings(recipe, unit)
    parts = [_get(s, p) for p in path.split("*")]
    return math.prod(parts) if len(parts) > 1 and None not in parts else parts[0]


KEYS = ("setting", "paper", "source", "recipe", "unit", "path", "ours", "same")


def table(file=HERE/"fidelity.yaml") -> list[dict]:
    "Every row of the fidelity table with the recipe's value read now."
    rows = yaml.safe_load(Path(file).read_text())
    for i, row in enumerate(rows, 1):
        if set(row) != set(KEYS): raise ValueError(f"{file}: row {i} ({row.get('setting')}): keys {sorted(row)}, expected {list(KEYS)} "
                                                   "(quote values that hold a comma)")
    return [row | {"recipe_value": value(row["recipe"], row["unit"], row["path"])} for row in rows]


def markdown(rows:list[dict]) -> str:
    "The table as Markdown: setting, the paper's value and source, the recipe and its value, same or why not."
    cell = lambda x: str(x).replace("|", "\\|").replace("\n", "\\n")
    lines = ["| setting | paper | source | recipe | recipe's value | same, or why not |", "|---|---|---|---|---|---|"]
    lines += [f"| {cell(r['setting'])} | {cell(r['paper'])} | {cell(r['source'])} | {r['recipe']} | `{cell(r['recipe_value'])}` | "
              f"{'same' if r['same'] is True else cell(r['same'])} |" for r in rows]
    return "\n".join(lines)


def drift(rows:list[dict]) -> list[str]:
    "The rows whose recipe value is no longer the table's `ours`."
    return [f"{r['recipe']}: {r['unit']}: {r['path']}: recipe says {r['recipe_value']!r}, the table {r['ours']!r} ({r['setting']})"
            for r in rows if r["recipe_value"] != r["ours"]]

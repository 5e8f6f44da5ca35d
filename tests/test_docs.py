"""The README's examples run on a fresh clone with nothing beside it; every path the README, the recipes' comments and
every `--help` name exists; the generated recipe reference is current; the docs cite the paper-facts page."""
import json, os, re, shutil, subprocess, sys, textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT/"README.md").read_text()
DOCS = "https://mixcot.github.io/mixcot/"
# README commands that need GPUs, a cluster or a long run: their recipes are still checked (paths, validation, --plan)
NOT_RUN = {"make lab": "14 minutes; tests/test_lab.py runs the lab", "make test": "every check CI runs",
           "mixcot sample recipes/paper/sample.yaml": "GPU teachers (vLLM); the recipe validates in test_readme_recipes_validate",
           "mixcot run recipes/paper/grid.yaml": "the paper's grid on GPUs; its --plan runs here",
           "bash recipes/slurm/grid.sh": "Slurm", "pip install": "this environment is the install"}


def _blocks(lang:str) -> list[tuple[str, str|None]]:
    "Fenced `lang` blocks of the README, each with the indented output block that follows it (nbconvert's), if any."
    out = []
    for m in re.finditer(rf"^```{lang}\n(.*?)^```\n(\n((?:    [^\n]*\n|\n)+))?", README, re.M | re.S):
        body = textwrap.dedent(m.group(3)).strip() if m.group(3) else None
        out.append((m.group(1), body))
    return out


def _commands() -> list[str]:
    "Every command line of the README's `sh` blocks, comments dropped."
    return [l.split("  #")[0].strip() for b, _ in _blocks("sh") for l in b.splitlines() if l.strip() and not l.startswith("#")]


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    "What a fresh clone holds (tracked and new files, nothing ignored), in a folder with no `shared/` above it."
    dest = tmp_path_factory.mktemp("clone")/"mixcot"
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True,
                           check=True).stdout.decode().split("\0")
    for f in filter(None, files):
        if (ROOT/f).is_file():
            (dest/f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT/f, dest/f)
    assert not any((d/"shared"/"data").exists() for d in dest.parents)
    return dest


def _env(clone:Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "MIXCOT_DATA"}
    return {**env, "PYTHONPATH": str(clone), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TQDM_DISABLE": "1",
            "HF_DATASETS_CACHE": str(clone/".hf-datasets")}


def test_readme_runs_on_a_fresh_clone(clone):
    "Every README command runs from the clone (or is listed in NOT_RUN with why); then its Python blocks, outputs compared."
    env, ran = _env(clone), []
    for cmd in _commands():
        if any(cmd.startswith(k) and "--plan" not in cmd for k in NOT_RUN): continue
        assert cmd.startswith("mixcot "), f"README command not run and not in NOT_RUN: {cmd}"
        p = subprocess.run([sys.executable, "-m", "mixcot_nb.cli", *cmd.split()[1:]], cwd=clone, env=env,
                           capture_output=True, text=True, timeout=600)
        assert p.returncode == 0, f"{cmd}\n{p.stdout[-2000:]}\n{p.stderr[-3000:]}"
        ran.append((cmd, p.stdout))
    assert len(ran) >= 6, ran
    graded = next(out for cmd, out in ran if cmd.startswith("mixcot grade"))
    for line in re.findall(r"^# (\d+ responses.*|agreement.*)$", README, re.M): assert line in graded, (line, graded)
    driver = textwrap.dedent('''
        import json, sys
        from IPython.lib.pretty import pretty
        blocks, shown = json.load(sys.stdin), []
        ns = {}
        for code in blocks:
            *body, last = code.rstrip().split("\\n")
            try: compile(last, "<last>", "eval"); expr = True
            except SyntaxError: expr = False
            exec("\\n".join(body if expr else body + [last]), ns)
            shown.append(pretty(eval(last, ns)) if expr else None)
        print(json.dumps(shown))''')
    blocks = _blocks("python")
    assert blocks, "no python blocks in the README"
    p = subprocess.run([sys.executable, "-c", driver], input=json.dumps([b for b, _ in blocks]), cwd=clone, env=env,
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    for (code, want), got in zip(blocks, json.loads(p.stdout.strip().splitlines()[-1])):
        if want is not None: assert " ".join(got.split()) == " ".join(want.split()), (code, got, want)


def test_readme_recipes_validate():
    "The recipes of README commands that are not run here still validate."
    from mixcot_nb.cli import read_recipe
    from mixcot_nb.pipeline import ExperimentRecipe
    from mixcot_nb.sampling import SampleRecipe
    read_recipe(ROOT/"recipes/paper/sample.yaml", SampleRecipe)
    read_recipe(ROOT/"recipes/paper/grid.yaml", ExperimentRecipe)


PATH_RE = re.compile(r"(?<![\w./-])((?:recipes|nbs|mixcot_nb|tools|tests|bench|\.github)/[\w./-]*[\w/])")


def _named_paths(text:str) -> set[str]:
    return {p.rstrip("/.") for p in PATH_RE.findall(text) if "<" not in p and "*" not in p}


def _help_texts() -> dict[str, str]:
    from mixcot_nb.cli import build_parser
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return {"mixcot": parser.format_help(), **{f"mixcot {n}": p.format_help() for n, p in sub.choices.items()}}


def _sources() -> dict[str, str]:
    "The README, every recipe file's comment lines, and every --help."
    out = {"README.md": README}
    for f in sorted((ROOT/"recipes").rglob("*")):
        if f.suffix in (".yaml", ".yml", ".sh", ".sbatch", ".py") and f.is_file():
            out[str(f.relative_to(ROOT))] = "\n".join(l for l in f.read_text().splitlines() if "#" in l)
    return {**out, **_help_texts()}


def test_named_paths_exist():
    "Every repository path named in the README, a recipe's comments or a --help exists; docs links point at pages."
    missing = [f"{where}: {p}" for where, text in _sources().items() for p in sorted(_named_paths(text)) if not (ROOT/p).exists()]
    for where, text in _sources().items():
        for page, anchor in re.findall(re.escape(DOCS) + r"([\w/-]+)\.html(?:#([\w-]+))?", text):
            if not (ROOT/"nbs"/f"{page}.ipynb").exists(): missing.append(f"{where}: docs page {page}.html (no nbs/{page}.ipynb)")
            if anchor and page == "recipes_reference":
                from mixcot_nb.cli import recipe_reference
                if f"## {anchor}" not in recipe_reference().lower(): missing.append(f"{where}: {page}.html#{anchor}")
    assert not missing, "\n".join(missing)


def test_paths_in_text_are_found():
    "The path test sees the paths it should (a path it missed would pass unchecked)."
    got = _named_paths("see recipes/paper/train/qwen2.5-3b/mix-long.yaml, `nbs/tutorials/paper.ipynb` and runs/x/y.yaml.")
    assert got == {"recipes/paper/train/qwen2.5-3b/mix-long.yaml", "nbs/tutorials/paper.ipynb"}, got
    assert "mixcot train" in _help_texts() and "recipes_reference.html#trainrecipe" in _help_texts()["mixcot train"]


def test_every_recipe_verb_points_to_the_reference():
    helps = _help_texts()
    for verb, model in [("sample", "samplerecipe"), ("mix", "mixrecipe"), ("train", "trainrecipe"), ("eval", "evalrecipe"),
                        ("run", "experimentrecipe")]:
        assert f"{DOCS}recipes_reference.html#{model}" in helps[f"mixcot {verb}"], verb


def test_recipe_reference_page_is_current():
    p = subprocess.run([sys.executable, "tools/reference_page.py", "--check"], cwd=ROOT, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr


def test_no_citations_of_files_users_lack():
    "Code, notebooks and recipes cite the paper-facts page, not a notes file outside the repository."
    bad = [str(f.relative_to(ROOT)) for d in ("nbs", "recipes", "mixcot_nb", "tools", "bench")
           for f in (ROOT/d).rglob("*") if f.is_file() and f.suffix in (".ipynb", ".py", ".yaml", ".sh", ".md")
           and "PAPER.md" in f.read_text(errors="ignore")]
    assert not bad, bad


def test_fixtures_are_small_and_described():
    "The shipped example files: at most 2 MB in all, each listed in the fixtures README with its sha256 prefix and licence."
    import hashlib
    fx = ROOT/"mixcot_nb"/"fixtures"
    files = [f for f in fx.rglob("*.jsonl")]
    assert files and sum(f.stat().st_size for f in files) <= 2_000_000
    card = (fx/"README.md").read_text()
    for f in files:
        rel = str(f.relative_to(fx))
        row = next(l for l in card.splitlines() if f"`{rel}`" in l)
        assert hashlib.sha256(f.read_bytes()).hexdigest()[:8] in row and ("MIT" in row or "Apache-2.0" in row), rel

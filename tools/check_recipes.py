"""Check that the generated paper recipes are what their generators write now: `python tools/check_recipes.py`.

Runs `recipes()` of recipes/paper/train/generate.py and `variants()` of recipes/paper/variants.py without writing, and
compares their text with the committed files; a training recipe on disk that the grid no longer has counts as stale too.
Exits 1 with a diff of each stale file and the command that regenerates it.
"""
import difflib, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAPER = ROOT/"recipes"/"paper"
sys.path[:0] = [str(PAPER), str(PAPER/"train")]
import generate, variants                                             # noqa: E402  (recipes/paper/*.py)


def stale(made:dict[Path, str], derived:dict[Path, str]) -> list[tuple[Path, str, str]]:
    "(path, command that rewrites it, diff) for every committed recipe that differs from its generator's text (`made`, `derived`)."
    out = []
    for gen, cmd in ((made, "python recipes/paper/train/generate.py"), (derived, "python recipes/paper/variants.py")):
        for path, text in gen.items():
            old = path.read_text() if path.exists() else ""
            if old != text:
                rel = str(path.relative_to(ROOT))
                out.append((path, cmd, "".join(difflib.unified_diff(old.splitlines(True), text.splitlines(True), rel, f"{rel} (generated)"))))
    out += [(p, "python recipes/paper/train/generate.py", f"{p.relative_to(ROOT)}: not a training unit of the grid any more\n")
            for p in sorted(generate.HERE.glob("*/*.yaml")) if p not in made]
    return out


def main() -> int:
    made, derived = generate.recipes(), variants.variants()
    bad = stale(made, derived)
    for path, cmd, diff in bad: print(f"{path.relative_to(ROOT)} is stale: run `{cmd}`\n{diff}", file=sys.stderr)
    print(f"{len(made) + len(derived)} generated recipes checked, {len(bad)} stale")
    return 1 if bad else 0


if __name__ == "__main__": sys.exit(main())

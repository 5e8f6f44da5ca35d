"""Build the docs as far as this machine allows, and check them.

Runs what `nbdev-proc-nbs` runs (refresh `nbdev.yml`, rebuild the module index, process every notebook: directives,
frontmatter, `show_doc` cells) but without its Quarto install step, then renders each processed notebook to HTML with
nbconvert in place of Quarto. Checks that every page in the sidebar renders and that each API page shows the
`show_doc` output of every name its module exports. Where Quarto is installed, `nbdev-docs` renders the real site.
"""
import importlib, inspect, re, sys
from pathlib import Path

import nbformat, yaml
from nbconvert import HTMLExporter
from nbdev.config import get_config, nbpath2html
from nbdev.doclinks import _build_modidx
from nbdev.quarto import refresh_quarto_yml
from nbdev.serve import proc_nbs


def sidebar_pages(nbs: Path) -> list[str]:
    "Every page the sidebar of `_quarto.yml` links to."
    def walk(items):
        for o in items:
            if isinstance(o, str): yield o
            elif "contents" in o: yield from walk(o["contents"])
            elif "href" in o: yield o["href"]
    return list(walk(yaml.safe_load((nbs/"_quarto.yml").read_text())["website"]["sidebar"]["contents"]))


def main() -> int:
    cfg = get_config()
    nbs, out = cfg.nbs_path, cfg.config_path/"_docs"
    refresh_quarto_yml()
    _build_modidx()
    cache = proc_nbs(nbs, n_workers=0, force=True)
    pages, notebooks = sidebar_pages(nbs), sorted(str(p.relative_to(nbs)) for p in nbs.rglob("*.ipynb")
                                                   if ".ipynb_checkpoints" not in p.parts)
    errors = [f"{nb}: not in the sidebar of nbs/_quarto.yml" for nb in notebooks if nb not in pages]
    errors += [f"{pg}: in the sidebar but missing" for pg in pages if pg not in notebooks]
    exporter = HTMLExporter(template_name="lab")
    for page in pages:
        src = cache/page
        if not src.exists(): errors.append(f"{page}: not processed"); continue
        proc = nbformat.read(src, as_version=4)
        for c in proc.cells: c.metadata.pop("execution", None)  # nbdev's timing metadata is not valid nbformat
        html, _ = exporter.from_notebook_node(proc)
        dest = out/nbpath2html(page)
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(html)
        nb = nbformat.read(nbs/page, as_version=4)
        m = next((re.search(r"#\|\s*default_exp\s+(\S+)", c.source) for c in nb.cells if c.cell_type == "code"
                  and "default_exp" in c.source), None)
        if m is None: continue
        mod = importlib.import_module(f"{cfg.lib_path.name}.{m.group(1)}")
        shown = {o.lower() for o in re.findall(r'<h[2-4][^>]*id="([^"]+)"', html)}
        documented = [n for n in getattr(mod, "__all__", []) if inspect.isfunction(getattr(mod, n)) or inspect.isclass(getattr(mod, n))]
        missing = [n for n in documented if n.lower() not in shown]
        if missing: errors.append(f"{page}: no show_doc output for {', '.join(missing)}")
        print(f"rendered {page} -> {dest.relative_to(cfg.config_path)}")
    for e in errors: print("docs error:", e, file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__": sys.exit(main())

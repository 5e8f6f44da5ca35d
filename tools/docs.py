"""Build the docs as far as this machine allows, and check them: `python tools/docs.py`.

Runs what `nbdev-proc-nbs` runs (refresh `nbdev.yml`, rebuild the module index with `nbdev_export`, process every notebook: directives,
front matter, `show_doc` cells) but without its Quarto install step, then renders each processed notebook to a
readable HTML page in `_docs/` in place of Quarto: the title and description from the front matter, a sidebar from
`nbs/_quarto.yml`, code cells without prompts, cells marked `hide`/`include: false` left out, `echo: false` cells
(every `show_doc`) showing their output only, links to notebooks pointing at their pages, wide tables scrolling
inside the page, and no paths of this machine. Checks that every notebook is in the sidebar and every sidebar page
renders, that each API page shows the `show_doc` output of every name its module exports, and that no page holds a
path of this machine. Where Quarto is installed, `nbdev-docs` renders the real site (the deploy workflow does).
"""
import base64, html, importlib, inspect, re, sys
from pathlib import Path

import mistune, nbformat, yaml
from nbdev.config import get_config, nbpath2html
from nbdev.doclinks import nbdev_export
from nbdev.quarto import refresh_quarto_yml
from nbdev.serve import proc_nbs
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import PythonLexer

MD = mistune.create_markdown(escape=False, plugins=["table", "strikethrough", "url"])
CSS = """
body{margin:0;font:16px/1.55 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#212529;display:flex}
nav{position:sticky;top:0;align-self:flex-start;height:100vh;overflow-y:auto;width:230px;flex:none;padding:20px 16px;
    background:#f7f7f9;border-right:1px solid #e3e3e3;box-sizing:border-box;font-size:14px}
nav .site{font-weight:700;font-size:18px;display:block;margin-bottom:14px;color:#2780e3;text-decoration:none}
nav .sec{margin:14px 0 4px;font-weight:600;color:#555;text-transform:uppercase;font-size:12px;letter-spacing:.04em}
nav a.pg{display:block;padding:2px 6px;color:#343a40;text-decoration:none;border-radius:4px}
nav a.pg:hover{background:#e9ecef} nav a.pg.here{background:#2780e3;color:#fff}
main{flex:1;min-width:0;max-width:980px;padding:24px 40px 80px;overflow-wrap:break-word}
h1.title{margin:0 0 6px;font-size:2.1em} p.subtitle{color:#6c757d;font-size:1.1em;margin:0 0 24px}
h2{border-bottom:1px solid #dee2e6;padding-bottom:4px;margin-top:1.8em} h3{margin-top:1.5em}
a{color:#2780e3} code{font-size:.88em;background:#f3f3f5;padding:1px 4px;border-radius:3px}
pre{background:#f8f8fa;border:1px solid #e5e5ea;border-radius:5px;padding:10px 12px;overflow-x:auto;font-size:13.5px;line-height:1.45}
pre code{background:none;padding:0} .output pre{background:#fff;border-color:#eee;white-space:pre-wrap}
td code{overflow-wrap:anywhere}
.tbl{overflow-x:auto;margin:1em 0} table{border-collapse:collapse;font-size:14px} th,td{border:1px solid #dee2e6;padding:4px 8px;vertical-align:top}
th{background:#f1f3f5} img{max-width:100%} blockquote{margin:0;padding:0 14px;color:#555;border-left:3px solid #ccc}
hr{border:0;border-top:1px solid #e3e3e3;margin:28px 0 8px}
"""


def sidebar_pages(nbs:Path) -> list[str]:
    "Every page the sidebar of `_quarto.yml` links to."
    return [p for _, p in sidebar(nbs) if p]


def sidebar(nbs:Path) -> list[tuple[str|None, str|None]]:
    "The sidebar of `_quarto.yml` as (section title, None) and (None, page) entries, in order."
    def walk(items):
        for o in items:
            if isinstance(o, str): yield None, o
            elif "contents" in o:
                yield o.get("section"), None
                yield from walk(o["contents"])
            elif "href" in o: yield None, o["href"]
    return list(walk(yaml.safe_load((nbs/"_quarto.yml").read_text())["website"]["sidebar"]["contents"]))


def directives(src:str) -> dict[str, str]:
    "The `#| key: value` directives at the top of a cell."
    out = {}
    for line in src.splitlines():
        if not (m := re.match(r"#\|\s*([\w-]+)\s*:?\s*(.*)$", line)): break
        out[m.group(1)] = m.group(2).strip()
    return out


def front_matter(nb) -> dict:
    "The YAML front matter nbdev's processing puts in the first raw cell."
    if nb.cells and nb.cells[0].cell_type == "raw" and nb.cells[0].source.startswith("---"):
        return yaml.safe_load(nb.cells[0].source.strip().strip("-")) or {}
    return {}


LEAK = re.compile(r"(?<![\w.~])/(?:work|root|home|Users|tmp/pytest-of-\w+)/[^\s'\"<>)]*")


def scrub(text:str, root:Path) -> str:
    "Text with this machine's paths made relative: the checkout, folders beside it, the environment, the home folder."
    text = re.sub(r"(?<![\w.])(?:/[\w.+-]+)+/(?:lib/python[\d.]+/)?site-packages/", "", text)
    for p in sorted({str(root.parent), str(Path.home())}, key=len, reverse=True):
        text = re.sub(re.escape(p) + r"/(?:" + re.escape(root.name) + "/)?", "", text)
    return LEAK.sub(lambda m: m.group(0).rsplit("/", 1)[-1] if "/" in m.group(0)[1:] else m.group(0), text)


def _slug(text:str) -> str: return re.sub(r"[^\w]+", "-", re.sub(r"<[^>]+>", "", html.unescape(text)).lower()).strip("-")


def site_url(root:Path) -> str:
    "The published site's address, from `[project.urls] Documentation` in pyproject.toml."
    import tomllib
    return tomllib.loads((root/"pyproject.toml").read_text())["project"]["urls"]["Documentation"].rstrip("/") + "/"


def finish(fragment:str, page:str, site:str="") -> str:
    "Heading ids as Quarto makes them, links to notebooks and to the published site as relative links, tables in a scrolling box."
    if site: fragment = fragment.replace(f'href="{site}', f'href="{"../" * page.count("/")}').replace('href=""', 'href="index.html"')
    fragment = re.sub(r"<h([1-4])>(.*?)</h\1>", lambda m: f'<h{m.group(1)} id="{_slug(m.group(2))}">{m.group(2)}</h{m.group(1)}>', fragment, flags=re.S)
    fragment = re.sub(r'href="(?!https?:)([^"#]*?)\.ipynb(#[^"]*)?"', lambda m: f'href="{m.group(1)}.html{m.group(2) or ""}"', fragment)
    return re.sub(r"<table>(.*?)</table>", r'<div class="tbl"><table>\1</table></div>', fragment, flags=re.S)


def render_output(o, root:Path) -> str:
    "One cell output as HTML: markdown (show_doc), HTML, an image, or text."
    if o.output_type == "stream": return f"<pre>{html.escape(scrub(o.text, root))}</pre>"
    if o.output_type == "error": return f"<pre>{html.escape(scrub(chr(10).join([o.ename + ': ' + o.evalue]), root))}</pre>"
    data = o.get("data", {})
    if "text/markdown" in data: return MD(scrub(data["text/markdown"], root))
    if "text/html" in data: return scrub(data["text/html"], root)
    for kind in ("image/png", "image/jpeg"):
        if kind in data: return f'<img src="data:{kind};base64,{data[kind].strip() if isinstance(data[kind], str) else base64.b64encode(data[kind]).decode()}">'
    if "text/plain" in data: return f"<pre>{html.escape(scrub(data['text/plain'], root))}</pre>"
    return ""


def merge_streams(outputs:list) -> list:
    "Consecutive stream outputs (one `print` after another) as one."
    out = []
    for o in outputs:
        if o.output_type == "stream" and out and out[-1].output_type == "stream":
            out[-1] = nbformat.from_dict({**out[-1], "text": out[-1].text + o.text})
        else: out.append(o)
    return out


def render_page(nb, page:str, titles:dict[str, str], nav:list, root:Path) -> str:
    "A processed notebook as one HTML page with the site's sidebar."
    fm, body = front_matter(nb), []
    for c in nb.cells:
        if c.cell_type == "raw": continue
        if c.cell_type == "markdown":
            if "AUTOGENERATED" in c.source and len(c.source) < 80: continue
            body.append(MD(scrub(c.source, root))); continue
        d = directives(c.source)
        if "hide" in d or d.get("include") == "false": continue
        src = "\n".join(l for l in c.source.splitlines() if not l.startswith("#|")).strip()
        if src and d.get("echo") != "false":
            body.append(highlight(src, PythonLexer(), HtmlFormatter(nowrap=False, cssclass="code")))
        if d.get("output") != "false":
            outs = "".join(render_output(o, root) for o in merge_streams(c.get("outputs", [])))
            if outs: body.append(f'<div class="output">{outs}</div>')
    depth = page.count("/")
    up = "../" * depth
    links = [f'<a class="site" href="{up}index.html">{titles.get("index.ipynb", "home")}</a>']
    for section, p in nav:
        if section: links.append(f'<div class="sec">{html.escape(section)}</div>')
        elif p:
            cls = "pg here" if p == page else "pg"
            links.append(f'<a class="{cls}" href="{up}{nbpath2html(p)}">{html.escape(titles.get(p, p))}</a>')
    title = fm.get("title", Path(page).stem)
    sub = f'<p class="subtitle">{MD(str(fm["description"])).strip()[3:-4]}</p>' if fm.get("description") else ""
    return (f'<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(str(title))}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{CSS}{HtmlFormatter(cssclass="code").get_style_defs(".code")}</style>'
            '<script>window.MathJax={tex:{inlineMath:[["$","$"],["\\\\(","\\\\)"]]}};</script>'
            '<script async src="https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-chtml.js"></script></head>'
            f'<body><nav>{"".join(links)}</nav><main><h1 class="title">{html.escape(str(title))}</h1>{sub}'
            f'{finish("".join(body), page, site_url(root))}</main></body></html>')


def main() -> int:
    cfg = get_config()
    root, nbs, out = cfg.config_path, cfg.nbs_path, cfg.config_path/"_docs"
    refresh_quarto_yml()
    nbdev_export()                                  # the public route to the module index nbdev's docs build rebuilds
    cache = proc_nbs(nbs, n_workers=0, force=True)
    nav, pages = sidebar(nbs), sidebar_pages(nbs)
    notebooks = sorted(str(p.relative_to(nbs)) for p in nbs.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
    errors = [f"{nb}: not in the sidebar of nbs/_quarto.yml" for nb in notebooks if nb not in pages]
    errors += [f"{pg}: in the sidebar but missing" for pg in pages if pg not in notebooks]
    procs = {p: nbformat.read(cache/p, as_version=4) for p in pages if (cache/p).exists()}
    errors += [f"{p}: not processed" for p in pages if p not in procs]
    titles = {p: str(front_matter(nb).get("title", Path(p).stem)) for p, nb in procs.items()}
    for page, proc in procs.items():
        text = render_page(proc, page, titles, nav, root)
        dest = out/nbpath2html(page)
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(text)
        if leaks := LEAK.findall(text): errors.append(f"{page}: the page holds paths of this machine, e.g. {leaks[0]}")
        src = nbformat.read(nbs/page, as_version=4)
        m = next((re.search(r"#\|\s*default_exp\s+(\S+)", c.source) for c in src.cells if c.cell_type == "code"
                  and "default_exp" in c.source), None)
        if m is not None:
            mod = importlib.import_module(f"{cfg.lib_path.name}.{m.group(1)}")
            shown = {o.lower() for o in re.findall(r'<h[2-4][^>]*id="([^"]+)"', text)}
            documented = [n for n in getattr(mod, "__all__", []) if inspect.isfunction(getattr(mod, n)) or inspect.isclass(getattr(mod, n))]
            missing = [n for n in documented if n.lower() not in shown]
            if missing: errors.append(f"{page}: no show_doc output for {', '.join(missing)}")
        print(f"rendered {page} -> {dest.relative_to(root)}")
    for f in ("styles.css",):
        if (nbs/f).exists(): (out/f).write_text((nbs/f).read_text())
    for e in errors: print("docs error:", e, file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__": sys.exit(main())

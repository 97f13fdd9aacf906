#!/usr/bin/env python
"""Build the documentation site: every notebook in nbs/, rendered with its committed outputs, as static HTML.

    python tools/build_docs.py                 # -> _docs/ (what `make docs` runs)
    python tools/build_docs.py --out /tmp/site
    python tools/build_docs.py --vendor        # refresh docs/vendor/ from the npm registry (maintainers only)

The notebooks are NOT executed: what you see is what is committed. nbconvert's HTML exporter (JupyterLab
template) renders each notebook; nbdev directives are honoured the way the nbdev/Quarto site does:
`#| hide` and `#| default_exp` cells are left out, `#| echo: false` hides the code, `#| output: false`
the outputs, `#| include: false` the whole cell; every `#|` line is stripped from the code that is shown.
Exported code (`#| export`) is shown (this site has no `show_doc`), marked as library code.

The site works offline: MathJax 3 and require.js are served from docs/vendor/ (committed), the page CSS
is written once into assets/, links to `NN_name.ipynb` point at `NN_name.html`, and local files that a
page links to (figures, tables) are copied into the site under their path in the repository.

Nothing here needs nbdev, Quarto or a network connection; nbconvert is enough.
"""

from __future__ import annotations

import argparse
import copy
import html
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT / "nbs"
VENDOR = ROOT / "docs" / "vendor"
SITE_NAME = "semclip"
MARKER = ".semclip-docs"  # marks an output folder as ours: the next build may empty it
MAX_COPY_BYTES = 20 * 2**20  # local files a page links to are copied into the site up to this size
MATHJAX_JS = "vendor/mathjax/tex-chtml-full.js"
REQUIRE_JS = "vendor/require.js"
# what --vendor fetches (npm pack: the registry only, no install scripts)
NPM_PACKAGES = {"mathjax": "3.2.2", "requirejs": "2.3.8"}

_DIRECTIVE = re.compile(r"^\s*#\s*\|\s*(.*?)\s*$")
_HIDE_LINE = re.compile(r"#\s*\|\s*hide_line\s*$")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:")
_URL_ATTR = re.compile(r'(\s(?:href|src)=")([^"]*)(")')
FLAG_TAGS = {"slow", "cuda", "notest"}  # pyproject's tst_flags: shown with a label

TEMPLATE = r"""{%- extends 'index.html.j2' -%}
{%- block html_head_js_mathjax -%}
<script>
window.MathJax = {
  tex: {inlineMath: [['$', '$'], ['\\(', '\\)']], displayMath: [['$$', '$$'], ['\\[', '\\]']],
        processEscapes: true, processEnvironments: true, tags: 'ams'},
  options: {ignoreHtmlClass: 'tex2jax_ignore', processHtmlClass: 'tex2jax_process'}
};
</script>
<script id="MathJax-script" defer src="{{ resources.mathjax_url }}"></script>
{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{% block jupyter_widgets %}{% endblock jupyter_widgets %}
{#- the lab template runs pygments' (escaped) output through bleach again: half the build time, no gain -#}
{% block input %}
<div class="jp-CodeMirrorEditor jp-Editor jp-InputArea-editor" data-type="inline">
<div class="cm-editor cm-s-jupyter">
{{ cell.source | highlight_code(metadata=cell.metadata) }}
</div>
</div>
{%- endblock input %}
{% block notebook_css %}
<link rel="icon" href="data:,">
<link rel="stylesheet" href="assets/jupyterlab.css">
<link rel="stylesheet" href="assets/site.css">
{% endblock notebook_css %}
{%- block body_header -%}
<body class="jp-Notebook sc-page" data-jp-theme-light="true" data-jp-theme-name="JupyterLab Light">
{{ resources.sc_sidebar }}
<main>
{%- endblock body_header -%}
{% block body_footer %}
{{ resources.sc_pager }}
</main>
</body>
{% endblock body_footer %}
"""

SITE_CSS = """/* semclip docs: layout around nbconvert's JupyterLab template (written by tools/build_docs.py) */
:root { --sc-side: 15rem; --sc-accent: #2f5fb3; }
* { -webkit-print-color-adjust: exact; }
a.anchor-link { visibility: hidden; margin-left: .3em; text-decoration: none; }
:is(h1, h2, h3, h4, h5, h6):hover > a.anchor-link { visibility: visible; }
.jp-InputArea, .jp-InputArea-editor { overflow: hidden; }
.cm-editor.cm-s-jupyter .highlight pre { padding: var(--jp-code-padding) 4px; margin: 0; overflow-x: auto;
  font-family: inherit; font-size: inherit; line-height: inherit; color: inherit; }
.jp-OutputArea-output pre { line-height: inherit; font-family: inherit; overflow-x: auto; }
.jp-RenderedText pre { color: var(--jp-content-font-color1); font-size: var(--jp-code-font-size); }
.jp-Collapser { display: none; }
body.sc-page { margin: 0; padding: 0; overflow-y: auto; position: static; }
.sc-sidebar { position: fixed; top: 0; bottom: 0; left: 0; width: var(--sc-side); box-sizing: border-box;
  overflow-y: auto; padding: 1.2rem .8rem; background: #f6f7f9; border-right: 1px solid #e1e4e8;
  font-family: var(--jp-ui-font-family); font-size: 14px; line-height: 1.35; }
.sc-sidebar .sc-brand { display: block; font-size: 20px; font-weight: 700; color: #222; text-decoration: none;
  margin: 0 .5rem 1rem; }
.sc-sidebar ol { list-style: none; margin: 0; padding: 0; }
.sc-sidebar li a { display: block; padding: .28rem .5rem; border-radius: 4px; color: #333; text-decoration: none; }
.sc-sidebar li a:hover { background: #e8ecf3; }
.sc-sidebar li a.sc-current { background: #dde6f6; color: #111; font-weight: 600; }
.sc-sidebar .sc-num { display: inline-block; min-width: 2.3em; color: #777;
  font-family: var(--jp-code-font-family); font-size: 12px; }
body.sc-page > main { margin-left: var(--sc-side); max-width: 62rem; padding: 1rem 2rem 3rem; box-sizing: border-box; }
.sc-pager { display: flex; justify-content: space-between; gap: 1rem; margin: 3rem 0 0; padding-top: 1rem;
  border-top: 1px solid #e1e4e8; font-family: var(--jp-ui-font-family); }
.sc-pager a { color: var(--sc-accent); text-decoration: none; }
.celltag_sc-toc td, .celltag_sc-toc th { text-align: left; vertical-align: top; }
.jp-CodeCell[class*="celltag_sc-"] > .jp-Cell-inputWrapper { border-left: 3px solid #c8d3e6; }
.jp-CodeCell.celltag_sc-export > .jp-Cell-inputWrapper { border-left-color: var(--sc-accent); }
.jp-CodeCell[class*="celltag_sc-"]::before { display: block; margin: .2rem 0 .1rem; color: #666;
  font-family: var(--jp-ui-font-family); font-size: 11px; letter-spacing: .02em; }
.jp-CodeCell.celltag_sc-export::before { content: "library code (exported)"; color: var(--sc-accent); }
.jp-CodeCell.celltag_sc-slow::before { content: "slow cell: skipped by make test unless SEMCLIP_TEST_FLAGS=slow"; }
.jp-CodeCell.celltag_sc-cuda::before { content: "GPU cell: runs only with SEMCLIP_TEST_FLAGS=cuda"; }
.jp-CodeCell.celltag_sc-notest::before { content: "not run by the tests"; }
@media (max-width: 900px) {
  .sc-sidebar { position: static; width: auto; border-right: 0; border-bottom: 1px solid #e1e4e8; }
  .sc-sidebar ol { columns: 2; }
  body.sc-page > main { margin-left: 0; padding: 1rem; }
}
@media print { .sc-sidebar, .sc-pager { display: none; } body.sc-page > main { margin-left: 0; } }
"""


class DocsError(Exception):
    "The site cannot be built (bad notebook, missing vendored files, unsafe output folder)."


# ---------------------------------------------------------------------------------------------- notebooks
def notebooks(nbs: Path = NBS) -> list[Path]:
    "The notebooks of the site in reading order: index first, then by file name (00_core, 01_data, 01a_synth, ...)."
    nbs_ = sorted(p for p in nbs.glob("*.ipynb") if not p.name.startswith(("_", ".")))
    return sorted(nbs_, key=lambda p: (p.stem != "index", p.name))


def _directives(src: str) -> tuple[dict, str]:
    "Split the leading `#| ...` lines off a code cell: ({name: args}, remaining source)."
    lines, dirs = src.splitlines(), {}
    i = 0
    while i < len(lines):
        m = _DIRECTIVE.match(lines[i])
        if m:
            body = m.group(1)
            name, _, args = body.partition(":") if re.match(r"^[\w\-]+\s*:", body) else body.partition(" ")
            dirs[name.strip().lower()] = args.strip()
        elif lines[i].strip():
            break
        i += 1
    rest = [l for l in lines[i:] if not _HIDE_LINE.search(l)]
    return dirs, "\n".join(rest).strip("\n")


def _false(v: str) -> bool:
    return v.strip().lower() in ("false", "no", "0")


def page_info(nb, path: Path) -> dict:
    "Title, subtitle and exported module of a notebook, from its first markdown cell and `#| default_exp`."
    title = subtitle = module = None
    for c in nb.cells:
        if c.cell_type == "raw" and c.source.lstrip().startswith("---"):  # Quarto front matter
            for l in c.source.splitlines():
                k, _, v = l.partition(":")
                if k.strip() == "title" and not title:
                    title = v.strip().strip("'\"")
                if k.strip() == "description" and not subtitle:
                    subtitle = v.strip().strip("'\"")
        if c.cell_type == "markdown" and not title:
            for l in c.source.splitlines():
                if l.startswith("# ") and not title:
                    title = l[2:].strip()
                elif l.startswith("> ") and title and not subtitle:
                    subtitle = l[2:].strip()
        if c.cell_type == "code" and not module:
            d, _ = _directives(c.source)
            if d.get("default_exp"):
                module = d["default_exp"].split()[0]
    return {
        "stem": path.stem,
        "html": f"{path.stem}.html",
        "title": title or path.stem,
        "subtitle": subtitle or "",
        "module": f"{SITE_NAME}.{module}" if module else None,
    }


def prepare(nb):
    "Apply nbdev/Quarto directives to a notebook (a copy): drop hidden cells, strip `#|` lines, label flags."
    nb = copy.deepcopy(nb)
    nb.metadata.pop("widgets", None)  # widget state would load its manager from a CDN
    cells = []
    for c in nb.cells:
        tags = [t for t in c.get("metadata", {}).get("tags", []) if isinstance(t, str)]
        if "remove-cell" in tags:
            continue
        if c.cell_type == "raw" and c.source.lstrip().startswith("---"):
            continue  # front matter: used for the title
        if c.cell_type != "code":
            cells.append(c)
            continue
        d, src = _directives(c.source)
        if "hide" in d or _false(d.get("include", "true")) or "default_exp" in d and not src.strip():
            continue
        c.source = src
        if d.keys() & {"export", "exports", "exporti"}:
            tags.append("sc-export")
        tags += [f"sc-{f}" for f in sorted(FLAG_TAGS & d.keys())]
        hide_in = _false(d.get("echo", "true")) or "hide_input" in d or "remove-input" in tags
        hide_out = _false(d.get("output", "true")) or "hide_output" in d or "remove-output" in tags
        outs = []
        for o in [] if hide_out else c.get("outputs", []):
            data = o.get("data")
            if data is not None:
                # ipywidgets (tqdm.auto progress bars, ...) need a live kernel: keep their text fallback
                data.pop("application/vnd.jupyter.widget-view+json", None)
                data.pop("application/vnd.jupyter.widget-state+json", None)
                if not data:
                    continue
            outs.append(o)
        c.outputs = outs
        if not c.source.strip() and not outs:
            continue  # nothing left to show
        if hide_in or not c.source.strip():
            c.metadata.setdefault("transient", {})["remove_source"] = True
        c.metadata["tags"] = tags
        cells.append(c)
    nb.cells = cells
    return nb


# ---------------------------------------------------------------------------------------------- site parts
def _sidebar(pages: list[dict], cur: dict) -> str:
    items = []
    for p in pages:
        num = "" if p["stem"] == "index" else p["stem"].split("_", 1)[0]
        label = "Home" if p["stem"] == "index" else p["title"]
        cls = ' class="sc-current" aria-current="page"' if p is cur else ""
        tip = html.escape(p["subtitle"], quote=True)
        items.append(
            f'<li><a href="{p["html"]}"{cls} title="{tip}"><span class="sc-num">{html.escape(num)}</span>'
            f"{html.escape(label)}</a></li>"
        )
    return (
        f'<nav class="sc-sidebar" aria-label="Notebooks"><a class="sc-brand" href="index.html">{SITE_NAME}</a>'
        f"<ol>{''.join(items)}</ol></nav>"
    )


def _pager(pages: list[dict], i: int) -> str:
    prev = (
        f'<a class="sc-prev" href="{pages[i - 1]["html"]}">&larr; {html.escape(pages[i - 1]["title"])}</a>'
        if i > 0
        else "<span></span>"
    )
    nxt = (
        f'<a class="sc-next" href="{pages[i + 1]["html"]}">{html.escape(pages[i + 1]["title"])} &rarr;</a>'
        if i + 1 < len(pages)
        else "<span></span>"
    )
    return f'<nav class="sc-pager" aria-label="Previous and next notebook">{prev}{nxt}</nav>'


def _toc_cell(pages: list[dict]):
    import nbformat

    def esc(s):
        return s.replace("|", "\\|").replace("\n", " ")

    rows = [
        f"| [{p['stem']}]({p['html']}) | {esc(p['title'])} | "
        f"{'`' + p['module'] + '`' if p['module'] else ''} | {esc(p['subtitle'])} |"
        for p in pages
        if p["stem"] != "index"
    ]
    src = (
        "## Contents\n\nEach page is one notebook of `nbs/`, rendered with its committed outputs.\n\n"
        "| notebook | title | module | what it covers |\n|---|---|---|---|\n" + "\n".join(rows)
    )
    return nbformat.v4.new_markdown_cell(src, metadata={"tags": ["sc-toc"]})


class _Links:
    "Rewrites the relative links of one page: notebooks -> their page, local files -> copied into the site."

    def __init__(self, out: Path, nbs: Path, page_names: set, copied: dict, warnings: list, page: str):
        # paths are compared as written (normalised, symlinks not followed), as a browser or Jupyter reads them
        self.out, self.nbs = out, Path(os.path.normpath(nbs.absolute()))
        self.root = self.nbs.parent  # the repository: nbs/..
        self.pages, self.copied, self.warnings, self.page = page_names, copied, warnings, page

    def __call__(self, m: re.Match) -> str:
        return m.group(1) + self.rewrite(html.unescape(m.group(2))).replace('"', "&quot;") + m.group(3)

    def rewrite(self, url: str) -> str:
        if not url or url.startswith(("#", "/", "//")) or _SCHEME.match(url):
            return url
        parts = urlsplit(url)
        path = unquote(parts.path)
        if path in self.pages or path.startswith(("assets/", "vendor/")):
            return url
        frag = f"#{parts.fragment}" if parts.fragment else ""
        target = Path(os.path.normpath(self.nbs / path))
        if path.endswith(".ipynb"):
            name = f"{target.stem}.html"
            if target.parent == self.nbs and name in self.pages:
                return name + frag
            self.warnings.append(f"{self.page}: link to a notebook that is not in the site: {url}")
            return url
        try:
            rel = target.relative_to(self.root)
        except ValueError:
            self.warnings.append(f"{self.page}: link outside the repository left as is: {url}")
            return url
        if not target.is_file():
            self.warnings.append(f"{self.page}: link to a missing file: {url}")
            return url
        if rel.parts[0] in (".git", ".venv") or target.stat().st_size > MAX_COPY_BYTES:
            self.warnings.append(f"{self.page}: not copied into the site (private or too big): {url}")
            return url
        try:
            site_rel = target.relative_to(self.nbs)  # files next to the notebooks keep their place
        except ValueError:
            site_rel = rel
        site_rel = site_rel.as_posix()
        if site_rel.endswith(".html") or site_rel.split("/")[0] in ("assets", "vendor"):
            site_rel = "files/" + site_rel  # never shadow a page or the site's own folders
        prev = self.copied.get(site_rel)
        if prev is not None and prev != target:
            raise DocsError(f"two files would land on {site_rel} in the site: {prev} and {target}")
        if prev is None:
            dst = self.out / site_rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(target, dst)
            self.copied[site_rel] = target
        q = "?" + parts.query if parts.query else ""
        return quote(site_rel) + q + frag


class _PassThroughSoup:
    """Stands in for BeautifulSoup in nbconvert's HTMLExporter, whose re-parse of the page (to add alt texts
    and tabindex) costs as much as the rendering; `_finish` does both on the string."""

    def __init__(self, markup, features=None):
        self.markup = markup

    def select(self, selector):
        return []

    def __str__(self):
        return self.markup


_IMG_NO_ALT = re.compile(r"<img(?![^>]*\salt=)")
_FOCUSABLE = re.compile(r'<div class="(jp-Cell-inputWrapper|jp-OutputArea-output[^"]*)"')


def _finish(page: str) -> str:
    page = _IMG_NO_ALT.sub('<img alt="No description has been provided for this image"', page)
    return _FOCUSABLE.sub(r'<div class="\1" tabindex="0"', page)


def _render(ex, nb, resources) -> str:
    import nbconvert.exporters.html as nbc_html

    if not hasattr(nbc_html, "BeautifulSoup"):  # a newer nbconvert: render as it does
        return ex.from_notebook_node(nb, resources=resources)[0]
    real = nbc_html.BeautifulSoup
    nbc_html.BeautifulSoup = _PassThroughSoup
    try:
        return _finish(ex.from_notebook_node(nb, resources=resources)[0])
    finally:
        nbc_html.BeautifulSoup = real


def _exporter():
    from jinja2 import DictLoader
    from nbconvert import HTMLExporter

    ex = HTMLExporter(
        template_name="lab",
        extra_loaders=[DictLoader({"semclip_docs.html.j2": TEMPLATE})],
        template_file="semclip_docs.html.j2",
        exclude_input_prompt=True,
        exclude_output_prompt=True,
        mathjax_url=MATHJAX_JS,
        require_js_url=REQUIRE_JS,
        embed_images=False,
        theme="light",
    )
    return ex


def _lab_css(ex) -> str:
    env = ex.environment
    return "\n".join(env.loader.get_source(env, n)[0] for n in ("static/index.css", "static/theme-light.css"))


def _safe_out(out: Path, nbs: Path) -> Path:
    "The output folder, resolved; refuses one whose emptying would delete sources (repo, notebooks, vendored JS)."
    out = out.resolve()
    for keep in (ROOT, nbs.resolve(), VENDOR.resolve()):
        if out == keep or out in keep.parents or (keep != ROOT and keep in out.parents):
            raise DocsError(f"refusing to use {out} as the docs output folder: emptying it would delete {keep}")
    if out.exists() and not out.is_dir():
        raise DocsError(f"refusing to use {out} as the docs output folder: not a folder")
    if out.is_dir() and any(out.iterdir()) and out.name != "_docs" and not (out / MARKER).exists():
        raise DocsError(f"refusing to empty {out}: it is neither empty, nor _docs/, nor an earlier build")
    return out


def size_of(folder: Path) -> tuple[int, int]:
    "(number of files, total bytes) under folder."
    files = [p for p in folder.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def build(out: Path | str = ROOT / "_docs", nbs: Path | str = NBS, quiet: bool = False) -> dict:
    "Render every notebook of `nbs` into a static site at `out` (emptied first). Returns pages, files, bytes, warnings."
    import nbformat

    nbs = Path(nbs)
    out = _safe_out(Path(out), nbs)
    need = [
        VENDOR / MATHJAX_JS.removeprefix("vendor/"),
        VENDOR / REQUIRE_JS.removeprefix("vendor/"),
        VENDOR / "mathjax/output/chtml/fonts/woff-v2",
    ]
    missing = [str(p.relative_to(ROOT)) for p in need if not p.exists()]
    if missing:
        raise DocsError(
            f"vendored JavaScript missing ({', '.join(missing)}): run `python tools/build_docs.py --vendor`"
        )
    paths = notebooks(nbs)
    if not paths:
        raise DocsError(f"no notebooks in {nbs}")
    if out.exists():
        shutil.rmtree(out)
    (out / "assets").mkdir(parents=True)
    shutil.copytree(VENDOR, out / "vendor")
    ex = _exporter()
    (out / "assets" / "jupyterlab.css").write_text(_lab_css(ex), encoding="utf-8")
    (out / "assets" / "site.css").write_text(SITE_CSS, encoding="utf-8")
    (out / ".nojekyll").write_text("")  # GitHub Pages: serve folders as they are
    (out / MARKER).write_text("written by tools/build_docs.py; emptied by the next build\n")

    nbs_read = []
    for p in paths:
        try:
            nb = nbformat.read(p, as_version=4)
        except Exception as e:
            raise DocsError(f"{p.name}: not a readable notebook ({e})") from e
        nbs_read.append((p, nb, page_info(nb, p)))
    if paths[0].stem != "index":  # no nbs/index.ipynb: a home page with the contents only
        home = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(f"# {SITE_NAME}")])
        nbs_read.insert(0, (nbs / "index.ipynb", home, page_info(home, nbs / "index.ipynb")))
    pages = [info for _, _, info in nbs_read]
    names = {p["html"] for p in pages}
    copied, warnings = {}, []
    for i, (p, nb, info) in enumerate(nbs_read):
        nb = prepare(nb)
        if info["stem"] == "index":
            first_md = next((j for j, c in enumerate(nb.cells) if c.cell_type == "markdown"), -1)
            nb.cells.insert(first_md + 1, _toc_cell(pages))
        nb.metadata["title"] = SITE_NAME if info["stem"] == "index" else f"{info['title']} - {SITE_NAME}"
        res = {
            "metadata": {"name": info["stem"], "path": str(p.parent)},
            "sc_sidebar": _sidebar(pages, info),
            "sc_pager": _pager(pages, i),
        }
        try:
            body = _render(ex, nb, res)
        except Exception as e:
            raise DocsError(f"{p.name}: nbconvert failed: {e}") from e
        body = _URL_ATTR.sub(_Links(out, nbs, names, copied, warnings, p.name), body)
        (out / info["html"]).write_text(body, encoding="utf-8")
    n, size = size_of(out)
    if not quiet:
        for w in warnings:
            print(f"warning: {w}", file=sys.stderr)
        print(
            f"docs: {len(pages)} pages, {n} files, {size / 2**20:.2f} MiB in {_show(out)}"
            f"  (open {_show(out / 'index.html')})"
        )
    return {"out": out, "pages": pages, "files": n, "bytes": size, "warnings": warnings, "copied": sorted(copied)}


def _show(p: Path) -> str:
    try:
        return str(p.relative_to(Path.cwd()))
    except ValueError:
        return str(p)


# ---------------------------------------------------------------------------------------------- vendoring
def vendor(dest: Path = VENDOR) -> None:
    "Refresh docs/vendor/ from the npm registry (`npm pack`, no install scripts run): MathJax 3 and require.js."
    if not shutil.which("npm"):
        raise DocsError("--vendor needs npm")
    with tempfile.TemporaryDirectory() as tmp:
        specs = [f"{k}@{v}" for k, v in NPM_PACKAGES.items()]
        subprocess.run(
            ["npm", "pack", "--loglevel=warn", *specs, "--pack-destination", tmp],
            check=True,
            cwd=tmp,
            stdout=subprocess.DEVNULL,
        )
        tgz = {k: next(Path(tmp).glob(f"{k}-{v}.tgz")) for k, v in NPM_PACKAGES.items()}
        if dest.exists():
            shutil.rmtree(dest)
        (dest / "mathjax").mkdir(parents=True)
        fonts = "package/es5/output/chtml/fonts/woff-v2/"
        with tarfile.open(tgz["mathjax"]) as t:
            for m in t.getmembers():
                if not m.isfile():
                    continue
                if m.name == "package/es5/tex-chtml-full.js":
                    rel = "tex-chtml-full.js"
                elif m.name.startswith(fonts):
                    rel = "output/chtml/fonts/woff-v2/" + m.name[len(fonts) :]
                elif m.name == "package/LICENSE":
                    rel = "LICENSE"
                else:
                    continue
                (dest / "mathjax" / rel).parent.mkdir(parents=True, exist_ok=True)
                (dest / "mathjax" / rel).write_bytes(t.extractfile(m).read())
        with tarfile.open(tgz["requirejs"]) as t:
            (dest / "require.js").write_bytes(t.extractfile("package/require.js").read())
    (dest / "README.md").write_text(
        "# Vendored JavaScript for the offline docs site\n\n"
        "Served by the pages that `make docs` (tools/build_docs.py) writes, so that they need no CDN.\n"
        "Refresh with `python tools/build_docs.py --vendor` (npm pack from the npm registry).\n\n"
        f"- `mathjax/`: npm `mathjax@{NPM_PACKAGES['mathjax']}` (Apache-2.0, see mathjax/LICENSE): "
        "`es5/tex-chtml-full.js` and its CHTML fonts `es5/output/chtml/fonts/woff-v2/`.\n"
        f"- `require.js`: npm `requirejs@{NPM_PACKAGES['requirejs']}` (MIT, licence in the file's header).\n"
    )
    n, size = size_of(dest)
    print(f"vendored {n} files, {size / 2**20:.2f} MiB into {_show(dest)}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(ROOT / "_docs"), help="output folder (emptied first; default _docs/)")
    ap.add_argument("--nbs", default=str(NBS), help="notebooks folder (default nbs/)")
    ap.add_argument("--vendor", action="store_true", help="refresh docs/vendor/ from the npm registry, then exit")
    a = ap.parse_args(argv)
    try:
        if a.vendor:
            vendor()
            return 0
        build(a.out, a.nbs)
    except DocsError as e:
        print(f"ERROR: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""Give the top-level imports of every non-exported code cell a cell of their own.

nbdev's docs processor (`nbdev-proc-nbs`) executes every cell that contains an import; a cell that mixes
imports with test code is then run out of context. Usage: python tools/split_imports.py nbs/*.ipynb
"""

import ast
import json
import re
import sys
from pathlib import Path

_ONE_LINE = re.compile(r"^((?:import [\w., ]+|from [\w.]+ import [\w., ]+?));\s*(\S.*)$", re.M)


def _split(src: str):
    "(imports, rest) of a cell's source, or None when there is nothing to split."
    src = _ONE_LINE.sub(r"\1\n\2", src)  # `import x; y()` -> two lines
    try:
        tree = ast.parse(src)
    except SyntaxError:
        return None
    imps = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    if not imps or len(imps) == len(tree.body):
        return None
    lines = src.splitlines(True)
    taken = set()
    for n in imps:
        taken |= set(range(n.lineno - 1, n.end_lineno))
    if any(";" in lines[i] for i in taken):
        return None  # `import x; y()` on one line: left for a person
    directives = [l for l in lines if l.startswith("#|")]
    imports = "".join(l for l in directives if "hide" in l) + "".join(lines[i] for i in sorted(taken))
    rest = "".join(l for i, l in enumerate(lines) if i not in taken)
    return imports.rstrip("\n"), rest.strip("\n")


def split_notebook(path: Path) -> int:
    nb = json.loads(path.read_text())
    out, n = [], 0
    for c in nb["cells"]:
        src = "".join(c["source"]) if isinstance(c["source"], list) else c["source"]
        tags = c.get("metadata", {}).get("tags", [])
        if c["cell_type"] != "code" or "parameters" in tags or any(l.startswith("#| export") for l in src.splitlines()):
            out.append(c)
            continue
        parts = _split(src)
        if parts is None:
            out.append(c)
            continue
        imports, rest = parts
        out.append(
            dict(cell_type="code", execution_count=None, metadata={}, outputs=[], source=imports.splitlines(True))
        )
        out.append(dict(c, source=rest.splitlines(True)))
        n += 1
    if n:
        nb["cells"] = out
        path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
    return n


if __name__ == "__main__":
    for p in sys.argv[1:]:
        print(p, split_notebook(Path(p)))

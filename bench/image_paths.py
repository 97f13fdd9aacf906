"""Resolving a dataset's image column inside its data root: one path at a time against the whole column at once.

    python bench/image_paths.py [rows]

Every image path of a table is untrusted and is resolved inside the data root (no `..`, no absolute path, no
symbolic link out). `safe_join` checks one path with a few system calls; `safe_join_all` checks a column, listing
each folder once for its links. Both run on the same table, side by side, in rounds (this machine is noisy); the
medians and their ratio are printed and written to bench/results/image_paths.json. The two must agree path for
path (checked here too). The table is SynthNeg-shaped: `rows` images in one folder (default 100,000, about
half of CC-Neg's 228,246).
"""

import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from semclip.core import safe_join, safe_join_all  # noqa: E402

ROWS = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
ROUNDS = 5

with tempfile.TemporaryDirectory() as d:
    images = Path(d) / "images"
    images.mkdir()
    rels = [f"images/{i:06d}.png" for i in range(ROWS)]
    for r in rels:
        (Path(d) / r).touch()
    one = lambda: [str(safe_join(d, r, file="bench.csv", row=i)) for i, r in enumerate(rels)]  # noqa: E731
    column = lambda: safe_join_all(d, rels, file="bench.csv")  # noqa: E731
    assert one() == column(), "safe_join_all disagrees with safe_join"
    times = {"safe_join per path": [], "safe_join_all": []}
    for _ in range(ROUNDS):
        for name, f in (("safe_join per path", one), ("safe_join_all", column)):
            t = time.perf_counter()
            f()
            times[name].append(time.perf_counter() - t)

med = {k: statistics.median(v) for k, v in times.items()}
result = dict(
    machine=dict(cpu=platform.machine(), python=platform.python_version()),
    rows=ROWS,
    rounds=ROUNDS,
    seconds_median=med,
    us_per_path={k: round(v / ROWS * 1e6, 2) for k, v in med.items()},
    speedup=round(med["safe_join per path"] / med["safe_join_all"], 1),
)
for k, v in med.items():
    print(f"{k:>20}: {v:6.3f} s for {ROWS:,} paths ({v / ROWS * 1e6:5.1f} us/path)")
print(f"safe_join_all is {result['speedup']}x faster (medians of {ROUNDS} interleaved rounds)")
out = ROOT / "bench" / "results" / "image_paths.json"
out.write_text(json.dumps(result, indent=1) + "\n")

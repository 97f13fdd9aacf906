"""SynthNeg generation speed: 10,000 rows generated AND written to disk, each with its image and its
counterfactual image (the negation made true), against the 15 s budget.

Measured side by side in one run, on the same machine and moment:
  - end to end: `make_synthneg` (triples, counterfactual edits and their text checks, rendering both images,
    PNG encoding, file writes, CSV, meta), `repeats` times; the counterfactual share it reached;
  - the same with and without the counterfactuals (made off by a stub), alternating: what they cost;
  - the same with 0 (inline), 2 and 4 writer threads (`write_synthneg(workers=...)`);
  - the stages alone: triples (scene + texts + truth checks), counterfactual edit + verification, rendering,
    PNG encoding, file writes, for the images and the counterfactuals;
  - our PNG encoder against PIL's, and the cached second call.
Writes bench/results/synth_speed.json.   Usage: python bench/synth_speed.py [n_images] [repeats]
"""

import io
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from semclip import synth as S  # noqa: E402

N = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
REPEATS = int(sys.argv[2]) if len(sys.argv) > 2 else 3
BUDGET_S = 15.0
# the default split proportions (6000/6000/1000/3000), scaled to N images
SPLIT = dict(n_pretrain=N * 6 // 16, n_train=N * 6 // 16, n_val=N // 16)
SPLIT["n_test"] = N - sum(SPLIT.values())


def timed(f):
    t = time.perf_counter()
    out = f()
    return time.perf_counter() - t, out


def timed_cpu(f):
    "Wall and CPU seconds of f() (CPU: this process, all threads; on a shared machine the wall time includes waiting)."
    t, c = time.perf_counter(), time.process_time()
    out = f()
    return time.perf_counter() - t, time.process_time() - c, out


def main():
    scratch = Path(tempfile.mkdtemp(prefix="synth_speed_"))
    res = dict(
        n_images=N,
        splits=SPLIT,
        budget_s=BUDGET_S,
        repeats=REPEATS,
        cpu_count=os.cpu_count(),
        loadavg_before=os.getloadavg(),
        python=platform.python_version(),
        numpy=np.__version__,
        image_size=32,
    )
    try:
        # 1. end to end, the public call (force: every repeat really writes)
        e2e, e2e_cpu = [], []
        for r in range(REPEATS):
            t, c, ds = timed_cpu(lambda: S.make_synthneg(scratch / "e2e", **SPLIT, force=True, progress=False))
            e2e.append(t)
            e2e_cpu.append(c)
            print(
                f"make_synthneg, {N} rows (images + counterfactuals): {t:.2f} s wall, {c:.2f} s CPU, load {os.getloadavg()[0]:.1f}"
            )
        n_files = sum(1 for p in (ds / "images").iterdir() if p.suffix == ".png")
        n_cf = sum(1 for _ in (ds / "images" / "cf").iterdir())
        meta = json.loads((ds / "meta.json").read_text())
        made = sum(c["made"] for c in meta["counterfactuals"].values())
        assert n_files == N and n_cf == made, (n_files, n_cf, made)
        res["make_synthneg_s"] = e2e
        res["make_synthneg_best_s"], res["make_synthneg_median_s"] = min(e2e), float(np.median(e2e))
        res["make_synthneg_cpu_s"], res["make_synthneg_best_cpu_s"] = e2e_cpu, min(e2e_cpu)
        res["rows_per_s"] = N / min(e2e)
        res["counterfactuals"] = dict(
            made=made,
            failed=N - made,
            share=made / N,
            by_split=meta["counterfactuals"],
            failures=meta["counterfactual_failures"],
        )
        print(
            f"counterfactual share: {made / N:.4%} ({made}/{N} rows; failed per split: "
            f"{ {sp: c['failed'] for sp, c in meta['counterfactuals'].items()} })"
        )
        for f in meta["counterfactual_failures"]:
            print("  no counterfactual:", f)
        res["dataset_mb"] = sum(p.stat().st_size for p in ds.rglob("*") if p.is_file()) / 2**20
        t, _ = timed(lambda: S.make_synthneg(scratch / "e2e", **SPLIT, progress=False))
        res["cached_call_ms"] = 1000 * t

        settings = S.synth_settings(**SPLIT)
        # 2. with and without counterfactuals, side by side (alternating, so load drifts hit both alike)
        real, both = S.make_counterfactual, {"with": [], "without": []}
        for r in range(max(1, REPEATS - 1)):
            for name in both:
                out = scratch / f"cf-{name}-{r}"
                if name == "without":
                    S.make_counterfactual = lambda *a, **k: (None, "off")
                try:
                    t, c, _ = timed_cpu(lambda: S.write_synthneg(out, settings, progress=False))
                finally:
                    S.make_counterfactual = real
                both[name].append((t, c))
                shutil.rmtree(out)
        res["with_without_counterfactuals_s"] = both
        res["ratio_with_over_without_counterfactuals"] = dict(
            wall=min(t for t, _ in both["with"]) / min(t for t, _ in both["without"]),
            cpu=min(c for _, c in both["with"]) / min(c for _, c in both["without"]),
        )
        print(
            "with / without counterfactuals (best of each):",
            {k: round(v, 2) for k, v in res["ratio_with_over_without_counterfactuals"].items()},
            {k: (round(min(t for t, _ in v), 2), round(min(c for _, c in v), 2)) for k, v in both.items()},
            "(wall s, CPU s)",
        )

        # 3. writer threads, side by side (alternating, so load drifts hit all alike)
        by_workers = {w: [] for w in (0, 2, 4)}
        for r in range(max(1, REPEATS - 1)):
            for w in by_workers:
                out = scratch / f"w{w}-{r}"
                t, _ = timed(lambda: S.write_synthneg(out, settings, progress=False, workers=w))
                by_workers[w].append(t)
                shutil.rmtree(out)
        res["write_synthneg_by_workers_s"] = {str(w): v for w, v in by_workers.items()}
        best = {w: min(v) for w, v in by_workers.items()}
        res["ratio_inline_over_2_threads"] = best[0] / best[2]
        res["ratio_inline_over_4_threads"] = best[0] / best[4]
        print("write_synthneg by writer threads (best s):", {w: round(v, 2) for w, v in best.items()})

        # 4. stages alone
        t_trip, rows = timed(lambda: list(S._synth_rows(settings)))
        trips = [t for *_, t in rows]
        t_cf, cfs = timed(
            lambda: [
                S.make_counterfactual(
                    t["objs"], t["caption"], t["negation"], t["neg_type"], [settings["seed"], si, 2, i], 32
                )[0]
                for _, si, i, t in rows
            ]
        )
        cfs = [c for c in cfs if c is not None]
        t_render, imgs = timed(lambda: [S.render_scene(t["objs"], 32) for t in trips])
        t_render_cf, cf_imgs = timed(lambda: [S.render_scene(c, 32) for c in cfs])
        t_png, pngs = timed(lambda: [S.png_bytes(a) for a in imgs + cf_imgs])
        d = scratch / "files"
        d.mkdir()

        def write():
            for i, b in enumerate(pngs):
                S._write_file(d / f"{i:06d}.png", b)

        t_write, _ = timed(write)
        res["stages_us_per_row"] = dict(
            triples=1e6 * t_trip / N,
            counterfactual_edit_and_checks=1e6 * t_cf / N,
            render_image=1e6 * t_render / N,
            render_counterfactual=1e6 * t_render_cf / N,
            png_encode_both=1e6 * t_png / N,
            file_write_both=1e6 * t_write / N,
        )
        print("stages (us/row):", {k: round(v) for k, v in res["stages_us_per_row"].items()})

        # 5. PNG encoder against PIL (the plain reference), same images
        from PIL import Image

        sub = imgs[:2000]

        def pil():
            for a in sub:
                Image.fromarray(a).save(io.BytesIO(), format="PNG")

        t_pil, _ = timed(pil)
        t_ours, _ = timed(lambda: [S.png_bytes(a) for a in sub])
        res["png_us_per_image"] = dict(png_bytes=1e6 * t_ours / len(sub), pil=1e6 * t_pil / len(sub))
        res["ratio_pil_over_png_bytes"] = t_pil / t_ours
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    res["loadavg_after"] = os.getloadavg()
    res["within_budget"] = res["make_synthneg_best_s"] < BUDGET_S
    out = ROOT / "bench" / "results" / "synth_speed.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")
    print(
        f"{N} rows (images + counterfactuals) in {res['make_synthneg_best_s']:.2f} s best, {res['make_synthneg_median_s']:.2f} s median, "
        f"{res['make_synthneg_best_cpu_s']:.2f} CPU s best, load {res['loadavg_before'][0]:.1f} -> {res['loadavg_after'][0]:.1f} "
        f"(budget {BUDGET_S} s): {'OK' if res['within_budget'] else 'TOO SLOW'}; wrote {out.relative_to(ROOT)}"
    )
    return 0 if res["within_budget"] else 1


if __name__ == "__main__":
    sys.exit(main())

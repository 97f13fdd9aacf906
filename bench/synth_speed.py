"""SynthNeg generation speed: 10,000 images generated AND written to disk, against the 15 s budget.

Measured side by side in one run, on the same machine and moment:
  - end to end: `make_synthneg` (triples, rendering, PNG encoding, file writes, CSV, meta), `repeats` times;
  - the same with 0 (inline), 2 and 4 writer threads (`write_synthneg(workers=...)`);
  - the stages alone: triples (scene + texts + truth checks), rendering, PNG encoding, file writes;
  - our PNG encoder against PIL's, and the cached second call.
Writes bench/results/synth_speed.json.   Usage: python bench/synth_speed.py [n_images] [repeats]
"""
import io, json, os, platform, shutil, sys, tempfile, time
from pathlib import Path
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from semclip import synth as S  # noqa: E402

N = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
REPEATS = int(sys.argv[2]) if len(sys.argv) > 2 else 3
BUDGET_S = 15.0
# the default split proportions (6000/6000/1000/3000), scaled to N images
SPLIT = dict(n_pretrain=N*6//16, n_train=N*6//16, n_val=N//16)
SPLIT['n_test'] = N - sum(SPLIT.values())


def timed(f):
    t = time.perf_counter(); out = f(); return time.perf_counter() - t, out


def main():
    scratch = Path(tempfile.mkdtemp(prefix='synth_speed_'))
    res = dict(n_images=N, splits=SPLIT, budget_s=BUDGET_S, repeats=REPEATS, cpu_count=os.cpu_count(),
               loadavg_before=os.getloadavg(), python=platform.python_version(), numpy=np.__version__,
               image_size=32)
    try:
        # 1. end to end, the public call (force: every repeat really writes)
        e2e = []
        for r in range(REPEATS):
            t, ds = timed(lambda: S.make_synthneg(scratch/'e2e', **SPLIT, force=True, progress=False))
            e2e.append(t)
            print(f'make_synthneg, {N} images: {t:.2f} s')
        n_files = sum(1 for _ in (ds/'images').iterdir())
        assert n_files == N, n_files
        res['make_synthneg_s'] = e2e
        res['make_synthneg_best_s'], res['make_synthneg_median_s'] = min(e2e), float(np.median(e2e))
        res['images_per_s'] = N/min(e2e)
        res['dataset_mb'] = sum(p.stat().st_size for p in ds.rglob('*') if p.is_file())/2**20
        t, _ = timed(lambda: S.make_synthneg(scratch/'e2e', **SPLIT, progress=False))
        res['cached_call_ms'] = 1000*t

        # 2. writer threads, side by side (alternating, so load drifts hit all alike)
        settings = S.synth_settings(**SPLIT)
        by_workers = {w: [] for w in (0, 2, 4)}
        for r in range(max(1, REPEATS - 1)):
            for w in by_workers:
                out = scratch/f'w{w}-{r}'
                t, _ = timed(lambda: S.write_synthneg(out, settings, progress=False, workers=w))
                by_workers[w].append(t); shutil.rmtree(out)
        res['write_synthneg_by_workers_s'] = {str(w): v for w, v in by_workers.items()}
        best = {w: min(v) for w, v in by_workers.items()}
        res['ratio_inline_over_2_threads'] = best[0]/best[2]
        res['ratio_inline_over_4_threads'] = best[0]/best[4]
        print('write_synthneg by writer threads (best s):', {w: round(v, 2) for w, v in best.items()})

        # 3. stages alone
        t_trip, trips = timed(lambda: [t for _, t in S.synth_triples(settings)])
        t_render, imgs = timed(lambda: [S.render_scene(t['objs'], 32) for t in trips])
        t_png, pngs = timed(lambda: [S.png_bytes(a) for a in imgs])
        d = scratch/'files'; d.mkdir()
        def write():
            for i, b in enumerate(pngs):
                with open(d/f'{i:06d}.png', 'wb') as f: f.write(b)
        t_write, _ = timed(write)
        res['stages_us_per_image'] = dict(triples=1e6*t_trip/N, render=1e6*t_render/N, png_encode=1e6*t_png/N,
                                          file_write=1e6*t_write/N)
        print('stages (us/image):', {k: round(v) for k, v in res['stages_us_per_image'].items()})

        # 4. PNG encoder against PIL (the plain reference), same images
        from PIL import Image
        sub = imgs[:2000]
        def pil():
            for a in sub: Image.fromarray(a).save(io.BytesIO(), format='PNG')
        t_pil, _ = timed(pil)
        t_ours, _ = timed(lambda: [S.png_bytes(a) for a in sub])
        res['png_us_per_image'] = dict(png_bytes=1e6*t_ours/len(sub), pil=1e6*t_pil/len(sub))
        res['ratio_pil_over_png_bytes'] = t_pil/t_ours
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    res['loadavg_after'] = os.getloadavg()
    res['within_budget'] = res['make_synthneg_best_s'] < BUDGET_S
    out = ROOT/'bench'/'results'/'synth_speed.json'
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + '\n')
    print(f"{N} images in {res['make_synthneg_best_s']:.2f} s best, {res['make_synthneg_median_s']:.2f} s median "
          f"(budget {BUDGET_S} s): {'OK' if res['within_budget'] else 'TOO SLOW'}; wrote {out.relative_to(ROOT)}")
    return 0 if res['within_budget'] else 1


if __name__ == '__main__':
    sys.exit(main())

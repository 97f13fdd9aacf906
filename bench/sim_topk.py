"""Exact top-k cosine search: semclip.kernels.sim_topk (tiled torch on CPU) vs plain torch vs faiss.

Measured side by side in one run, each method in a FRESH child process (so peak memory is its own),
methods interleaved over `--repeats` rounds so that load drifts on a shared machine hit all alike:
  - tiled:  sim_topk(queries, keys, k)                      (CPU: tiled torch, bounded memory)
  - plain:  F.normalize + queries @ keys.T + torch.topk     (the whole Nq x Nk matrix)
  - faiss:  faiss.normalize_L2 + IndexFlatIP.add + search   (faiss-cpu, BLAS + heaps)
Time includes normalisation. Peak memory = the child's peak RSS during the method minus its RSS just
before (Linux: VmHWM reset through /proc/self/clear_refs; else ru_maxrss). Indices are compared
across methods (random data has no exact ties). A GPU section (Triton kernel vs torch matmul+topk)
runs when CUDA is available and prints "no GPU available" otherwise.

Usage: python bench/sim_topk.py [--quick] [--repeats N]      -> bench/results/sim_topk[_quick].json
Targets (CPU, Nq=10,000, Nk=100,000, d=512, k=10): tiled <= 1.3x faiss time, peak <= 1/10 of plain.
"""

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
METHODS = ("tiled", "plain", "faiss")


def _rss_kb(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1])
    return None


def _reset_peak():
    "Reset the kernel's peak-RSS mark; returns False where that is not possible."
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def worker(method, nq, nk, d, k, out_path):
    import torch
    import torch.nn.functional as F

    torch.manual_seed(0)
    q, keys = torch.randn(nq, d), torch.randn(nk, d)
    if method == "faiss":
        import faiss

        qn, kn = q.numpy(), keys.numpy()  # views: normalised in place, as a faiss user would
    from semclip.kernels import sim_topk

    exact = _reset_peak()
    base = _rss_kb("VmRSS:") if exact else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    if method == "tiled":
        v, i = sim_topk(q, keys, k)
    elif method == "plain":
        with torch.no_grad():
            v, i = (F.normalize(q, dim=1) @ F.normalize(keys, dim=1).T).topk(k, dim=1)
    elif method == "faiss":
        faiss.normalize_L2(qn)
        faiss.normalize_L2(kn)
        index = faiss.IndexFlatIP(d)
        index.add(kn)
        D, I = index.search(qn, k)
        i = torch.from_numpy(I)
    secs = time.perf_counter() - t0
    peak = _rss_kb("VmHWM:") if exact else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    torch.save(i.long(), out_path)
    print(
        json.dumps(
            dict(
                method=method,
                seconds=secs,
                peak_mb=(peak - base) / 1024,
                peak_exact=exact,
                threads=torch.get_num_threads(),
            )
        )
    )


def run_child(method, args, tmp):
    out = Path(tmp) / f"{method}.pt"
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        method,
        "--nq",
        str(args.nq),
        "--nk",
        str(args.nk),
        "--d",
        str(args.d),
        "--k",
        str(args.k),
        "--out",
        str(out),
    ]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        tail = r.stderr.strip().splitlines()[-1:] or ["?"]
        return dict(method=method, error=f"exit {r.returncode}: {tail[0]}"), None
    import torch

    return json.loads(r.stdout.strip().splitlines()[-1]), torch.load(out, weights_only=True)


def gpu_section(args):
    import torch

    if not torch.cuda.is_available():
        print("GPU: no GPU available (skipped: Triton kernel vs torch matmul+topk)")
        return dict(available=False)
    import torch.nn.functional as F
    from semclip.kernels import sim_topk, HAS_TRITON

    dev = torch.device("cuda")
    res = dict(available=True, device=torch.cuda.get_device_name(), triton=HAS_TRITON, cases=[])
    g = torch.Generator(device=dev).manual_seed(0)
    for nq, nk, dt in [
        (args.nq, args.nk, torch.float32),
        (args.nq, args.nk, torch.bfloat16),
        (50_000, 1_000_000, torch.bfloat16),
    ]:
        q = torch.randn(nq, args.d, device=dev, generator=g).to(dt)
        keys = torch.randn(nk, args.d, device=dev, generator=g).to(dt)

        def plain(q=q, keys=keys):  # bound now: the loop deletes them after each case
            s = F.normalize(q.float(), dim=1) @ F.normalize(keys.float(), dim=1).T
            return s.topk(args.k, dim=1)

        row = dict(nq=nq, nk=nk, dtype=str(dt))
        for name, f in [("triton", lambda q=q, keys=keys: sim_topk(q, keys, args.k)), ("plain", plain)]:
            try:
                f()
                torch.cuda.synchronize()  # compile / warm up
                torch.cuda.reset_peak_memory_stats()
                base = torch.cuda.memory_allocated()
                ts = []
                for _ in range(3):
                    e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                    e0.record()
                    out = f()
                    e1.record()
                    torch.cuda.synchronize()
                    ts.append(e0.elapsed_time(e1) / 1e3)
                row[name] = dict(seconds=min(ts), peak_mb=(torch.cuda.max_memory_allocated() - base) / 2**20)
                row[name + "_idx"] = out[1]
            except torch.OutOfMemoryError as e:
                row[name] = dict(error="did not fit: " + str(e).splitlines()[0])
                torch.cuda.empty_cache()
        if "triton_idx" in row and "plain_idx" in row:
            row["index_agreement"] = (row["triton_idx"] == row["plain_idx"]).float().mean().item()
        row.pop("triton_idx", None)
        row.pop("plain_idx", None)
        if "seconds" in row["triton"] and "seconds" in row.get("plain", {}):
            row["time_ratio_triton_over_plain"] = row["triton"]["seconds"] / row["plain"]["seconds"]
        print("GPU", json.dumps(row))
        res["cases"].append(row)
        del q, keys
        torch.cuda.empty_cache()
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="Nq=2,000, Nk=20,000 instead of 10,000 x 100,000")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--worker")
    ap.add_argument("--out")
    ap.add_argument("--nq", type=int)
    ap.add_argument("--nk", type=int)
    ap.add_argument("--d", type=int, default=512)
    ap.add_argument("--k", type=int, default=10)
    args = ap.parse_args()
    if args.worker:
        return worker(args.worker, args.nq, args.nk, args.d, args.k, args.out)
    args.nq = args.nq or (2_000 if args.quick else 10_000)
    args.nk = args.nk or (20_000 if args.quick else 100_000)
    import torch

    res = dict(
        nq=args.nq,
        nk=args.nk,
        d=args.d,
        k=args.k,
        repeats=args.repeats,
        cpu_count=os.cpu_count(),
        torch_threads=torch.get_num_threads(),
        loadavg_before=os.getloadavg(),
        python=platform.python_version(),
        torch=torch.__version__,
        runs={m: [] for m in METHODS},
    )
    print(
        f"sim_topk benchmark: Nq={args.nq:,} Nk={args.nk:,} d={args.d} k={args.k}, "
        f"{args.repeats} rounds, each method in a fresh process (load avg {os.getloadavg()[0]:.1f})"
    )
    idx = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            for m in METHODS:
                row, i = run_child(m, args, tmp)
                res["runs"][m].append(row)
                if i is not None:
                    idx[m] = i
                print(
                    f"  round {r}: {m:6s}",
                    "error: " + row["error"]
                    if "error" in row
                    else f"{row['seconds']:7.2f} s   peak {row['peak_mb']:8.1f} MB",
                )
    best = {m: min((x["seconds"] for x in v if "seconds" in x), default=None) for m, v in res["runs"].items()}
    peak = {m: max((x["peak_mb"] for x in v if "peak_mb" in x), default=None) for m, v in res["runs"].items()}
    res.update(best_seconds=best, peak_mb=peak, loadavg_after=os.getloadavg())
    if best["tiled"] and best["faiss"]:
        res["time_tiled_over_faiss"] = best["tiled"] / best["faiss"]
    if best["tiled"] and best["plain"]:
        res["time_tiled_over_plain"] = best["tiled"] / best["plain"]
    if peak["tiled"] and peak["plain"]:
        res["peak_tiled_over_plain"] = peak["tiled"] / peak["plain"]
    if "tiled" in idx:
        res["index_agreement_with_tiled"] = {
            m: (idx[m] == idx["tiled"]).float().mean().item() for m in idx if m != "tiled"
        }
    print("\nbest time (s):", {m: round(v, 2) if v else v for m, v in best.items()})
    print("peak (MB):    ", {m: round(v, 1) if v else v for m, v in peak.items()})
    for key, target in [
        ("time_tiled_over_faiss", "<= 1.3"),
        ("time_tiled_over_plain", ""),
        ("peak_tiled_over_plain", "<= 0.1"),
    ]:
        if key in res:
            print(f"{key}: {res[key]:.3f} {('(target ' + target + ')') if target else ''}")
    print("index agreement with tiled:", res.get("index_agreement_with_tiled"))
    res["gpu"] = gpu_section(args)
    from semclip.core import write_json

    out = ROOT / "bench" / "results" / f"sim_topk{'_quick' if args.quick else ''}.json"
    write_json(out, res)
    print("wrote", out.relative_to(ROOT))


if __name__ == "__main__":
    main()

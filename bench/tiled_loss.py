"""Contrastive (symmetric InfoNCE) loss, forward + backward: semclip.kernels.clip_loss_tiled vs the plain path.

Measured side by side in one run, each (method, B) in a FRESH child process so its peak memory is its own,
methods interleaved over `--repeats` rounds:
  - tiled:  clip_loss_tiled(x, t, s)        (CPU: tiled torch, online log-sum-exp, recomputing backward)
  - plain:  clip_loss_reference(x, t, s)    (B x B logits + F.cross_entropy both ways, autograd)
x, t: normalised fp32 features [B, d] that require grad, s: a scalar scale that requires grad.
Peak memory = peak RSS during forward+backward minus RSS just before (Linux VmHWM reset through
/proc/self/clear_refs; else ru_maxrss). A child gets an address-space limit below the free memory, so
a plain path that cannot fit fails cleanly ("did not fit") instead of pushing the shared machine into
the OOM killer. A GPU section (Triton kernels vs plain, bf16) runs when CUDA is available and prints
"no GPU available" otherwise.

Usage: python bench/tiled_loss.py [--quick] [--repeats N] [--sizes 4096,16384,32768]
       -> bench/results/tiled_loss[_quick].json
Targets (CPU, d=512): tiled memory linear in B; tiled time <= 1.5x plain where plain fits.
"""

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
METHODS = ("tiled", "plain")


def _rss_kb(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1])
    return None


def _reset_peak():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _mem_available_kb():
    for line in open("/proc/meminfo"):
        if line.startswith("MemAvailable:"):
            return int(line.split()[1])


def worker(method, B, d, headroom_gb):
    import torch
    import torch.nn.functional as F
    from semclip.kernels import clip_loss_tiled, clip_loss_reference

    torch.manual_seed(0)
    x0 = F.normalize(torch.randn(B, d), dim=1)
    t0 = F.normalize(torch.randn(B, d) + x0, dim=1)
    x, t = x0.requires_grad_(), t0.requires_grad_()
    s = torch.tensor(30.0, requires_grad=True)
    # cap the address space: what is mapped now + what is free minus headroom
    vm = _rss_kb("VmSize:") * 1024
    cap = vm + max(0, _mem_available_kb() * 1024 - int(headroom_gb * 2**30))
    resource.setrlimit(resource.RLIMIT_AS, (cap, resource.RLIM_INFINITY))
    fn = clip_loss_tiled if method == "tiled" else clip_loss_reference
    exact = _reset_peak()
    base = _rss_kb("VmRSS:") if exact else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t_start = time.perf_counter()
    try:
        loss = fn(x, t, s)
        t_fwd = time.perf_counter() - t_start
        loss.backward()
    except (RuntimeError, MemoryError) as e:
        print(
            json.dumps(
                dict(method=method, B=B, error="did not fit: " + str(e).splitlines()[0][:200], cap_gb=cap / 2**30)
            )
        )
        return
    secs = time.perf_counter() - t_start
    peak = _rss_kb("VmHWM:") if exact else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        json.dumps(
            dict(
                method=method,
                B=B,
                seconds=secs,
                forward_seconds=t_fwd,
                peak_mb=(peak - base) / 1024,
                peak_exact=exact,
                loss=loss.item(),
                grad_scale=s.grad.item(),
                grad_x_norm=x.grad.norm().item(),
                grad_t_norm=t.grad.norm().item(),
            )
        )
    )


def run_child(method, B, args):
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        method,
        "--B",
        str(B),
        "--d",
        str(args.d),
        "--headroom-gb",
        str(args.headroom_gb),
    ]
    r = subprocess.run(cmd, capture_output=True, text=True)
    lines = r.stdout.strip().splitlines()
    if r.returncode != 0 or not lines:
        tail = (r.stderr.strip().splitlines() or ["?"])[-1]
        return dict(method=method, B=B, error=f"exit {r.returncode}: {tail[:200]}")
    return json.loads(lines[-1])


def gpu_section(args, sizes):
    import torch

    if not torch.cuda.is_available():
        print("GPU: no GPU available (skipped: Triton loss kernels vs plain)")
        return dict(available=False)
    import torch.nn.functional as F
    from semclip.kernels import clip_loss_tiled, HAS_TRITON

    dev = torch.device("cuda")
    res = dict(available=True, device=torch.cuda.get_device_name(), triton=HAS_TRITON, cases=[])

    def plain_bf16(x, t, s):  # open_clip's way under bf16 autocast: bf16 logits, CE both ways
        logits = s * x @ t.T
        labels = torch.arange(len(x), device=dev)
        return (F.cross_entropy(logits.float(), labels) + F.cross_entropy(logits.T.float(), labels)) / 2

    for B in sorted(set(sizes) | {65536, 131072}):
        x0 = F.normalize(torch.randn(B, args.d, device=dev), dim=1).bfloat16()
        t0 = F.normalize(torch.randn(B, args.d, device=dev) + x0.float(), dim=1).bfloat16()
        row = dict(B=B, dtype="bf16")
        for name, fn in [("triton", clip_loss_tiled), ("plain", plain_bf16)]:

            def step(x0=x0, t0=t0, fn=fn):  # bound now: the loop deletes x0, t0 after each size
                x, t = x0.clone().requires_grad_(), t0.clone().requires_grad_()
                s = torch.tensor(30.0, device=dev, requires_grad=True)
                loss = fn(x, t, s)
                loss.backward()
                return loss, s.grad

            try:
                step()
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                base = torch.cuda.memory_allocated()
                ts = []
                for _ in range(3):
                    e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                    e0.record()
                    loss, gs = step()
                    e1.record()
                    torch.cuda.synchronize()
                    ts.append(e0.elapsed_time(e1) / 1e3)
                row[name] = dict(
                    seconds=min(ts),
                    peak_mb=(torch.cuda.max_memory_allocated() - base) / 2**20,
                    loss=loss.item(),
                    grad_scale=gs.item(),
                )
            except torch.OutOfMemoryError as e:
                row[name] = dict(error="did not fit: " + str(e).splitlines()[0][:200])
                torch.cuda.empty_cache()
        if "seconds" in row["triton"] and "seconds" in row["plain"]:
            row["time_ratio_triton_over_plain"] = row["triton"]["seconds"] / row["plain"]["seconds"]
        print("GPU", json.dumps(row))
        res["cases"].append(row)
        del x0, t0
        torch.cuda.empty_cache()
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="B = 1024, 2048, 4096")
    ap.add_argument("--sizes", default=None, help="comma-separated batch sizes")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--d", type=int, default=512)
    ap.add_argument("--headroom-gb", type=float, default=3.0, help="memory left free for others on a shared machine")
    ap.add_argument("--worker")
    ap.add_argument("--B", type=int)
    args = ap.parse_args()
    if args.worker:
        return worker(args.worker, args.B, args.d, args.headroom_gb)
    sizes = (
        [int(s) for s in args.sizes.split(",")]
        if args.sizes
        else ([1024, 2048, 4096] if args.quick else [4096, 16384, 32768])
    )
    import torch

    res = dict(
        sizes=sizes,
        d=args.d,
        repeats=args.repeats,
        cpu_count=os.cpu_count(),
        torch_threads=torch.get_num_threads(),
        loadavg_before=os.getloadavg(),
        mem_available_gb=_mem_available_kb() / 2**20,
        python=platform.python_version(),
        torch=torch.__version__,
        runs=[],
    )
    print(
        f"clip loss benchmark, forward+backward, d={args.d}, B in {sizes}, {args.repeats} rounds, "
        f"fresh process per run (load avg {os.getloadavg()[0]:.1f})"
    )
    for B in sizes:
        for r in range(args.repeats):
            for m in METHODS:
                if r and any(x.get("error") for x in res["runs"] if x["method"] == m and x["B"] == B):
                    continue
                row = run_child(m, B, args)
                row["round"] = r
                res["runs"].append(row)
                print(
                    f"  B={B:6d} round {r}: {m:6s}",
                    row["error"]
                    if "error" in row
                    else f"{row['seconds']:7.2f} s (fwd {row['forward_seconds']:.2f})  peak {row['peak_mb']:9.1f} MB  loss {row['loss']:.6f}",
                )
    summary = {}
    for B in sizes:
        srow = {}
        for m in METHODS:
            ok = [x for x in res["runs"] if x["method"] == m and x["B"] == B and "seconds" in x]
            srow[m] = (
                dict(
                    best_seconds=min(x["seconds"] for x in ok),
                    peak_mb=max(x["peak_mb"] for x in ok),
                    loss=ok[0]["loss"],
                )
                if ok
                else dict(error=next(x["error"] for x in res["runs"] if x["method"] == m and x["B"] == B))
            )
        if "best_seconds" in srow["tiled"] and "best_seconds" in srow["plain"]:
            srow["time_tiled_over_plain"] = srow["tiled"]["best_seconds"] / srow["plain"]["best_seconds"]
            srow["peak_tiled_over_plain"] = srow["tiled"]["peak_mb"] / srow["plain"]["peak_mb"]
            srow["loss_abs_diff"] = abs(srow["tiled"]["loss"] - srow["plain"]["loss"])
        summary[B] = srow
    res["summary"] = summary
    print("\n     B   tiled s   plain s   ratio   tiled MB    plain MB")
    for B, s in summary.items():
        t, p = s["tiled"], s["plain"]
        print(
            f"{B:6d}  {t.get('best_seconds', float('nan')):8.2f}  {p.get('best_seconds', float('nan')):8.2f}  "
            f"{s.get('time_tiled_over_plain', float('nan')):6.2f}  {t.get('peak_mb', float('nan')):9.1f}  "
            + (f"{p['peak_mb']:10.1f}" if "peak_mb" in p else "  " + p["error"][:60])
        )
    ok = [B for B in sizes if "peak_mb" in summary[B]["tiled"]]
    growth = {
        f"{a}->{b}": dict(
            B_ratio=b / a,
            tiled_peak_ratio=summary[b]["tiled"]["peak_mb"] / summary[a]["tiled"]["peak_mb"],
            tiled_peak_mb_added_per_1k_rows=(summary[b]["tiled"]["peak_mb"] - summary[a]["tiled"]["peak_mb"])
            / ((b - a) / 1024),
        )
        for a, b in zip(ok, ok[1:])
    }
    res["tiled_peak_growth"] = growth
    for kk, g in growth.items():  # linear: the ratio stays at or below the B ratio (quadratic would be its square)
        print(
            f"tiled peak {kk}: x{g['tiled_peak_ratio']:.2f} for x{g['B_ratio']:.0f} the batch "
            f"(+{g['tiled_peak_mb_added_per_1k_rows']:.1f} MB per 1,024 rows; features + grads alone are 8 MB per 1,024 rows at d=512)"
        )
    res["loadavg_after"] = os.getloadavg()
    res["gpu"] = gpu_section(args, sizes)
    from semclip.core import write_json

    out = ROOT / "bench" / "results" / f"tiled_loss{'_quick' if args.quick else ''}.json"
    write_json(out, res)
    print("wrote", out.relative_to(ROOT))


if __name__ == "__main__":
    main()

"""Triple generation speed: RuleBackend against the 5,000 captions/s target, and the LLM client's own overhead.

Measured side by side in one run, on the same machine and moment:
  - RuleBackend, paraphrase + negation (attempt 0) per caption, on SynthNeg captions, on the real-world-style
    captions of semclip.rules and on the 239 hand-judged captions of data/captions_eval (both repeated to N; the
    backend keeps no state across captions, so repeats cost the same);
  - the same running every rule to exhaustion (what `coverage` or regeneration asks for);
  - the pipeline `generate_triples` with the rule backend (validation, DataFrame), on the distinct SynthNeg captions;
  - OpenAIChatBackend + pipeline against tests/llm_server.py on 127.0.0.1 (4 requests per caption), at concurrency
    1, 4 and 8, with the cache fsync'd per line and not: the client's overhead, not an LLM's speed.
Writes bench/results/triples_speed.json.   Usage: python bench/triples_speed.py [n_captions] [repeats]
"""

import csv
import importlib.util
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from semclip import triples as T  # noqa: E402
from semclip.synth import make_triple, NEG_TYPES  # noqa: E402

N = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
REPEATS = int(sys.argv[2]) if len(sys.argv) > 2 else 3
TARGET = 5000.0
N_HTTP = 500


def best_rate(f, n):
    "Best of REPEATS runs of f(), as items per second."
    ts = []
    for _ in range(REPEATS):
        t = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t)
    return n / min(ts), ts


def main():
    res = dict(
        n_captions=N,
        repeats=REPEATS,
        target_captions_per_s=TARGET,
        cpu_count=os.cpu_count(),
        loadavg_before=os.getloadavg(),
        python=platform.python_version(),
    )
    rng = np.random.default_rng(0)
    syn = [make_triple(rng, NEG_TYPES[i % len(NEG_TYPES)])["caption"] for i in range(N)]
    real = (T.REAL_WORLD_STYLE * (N // len(T.REAL_WORLD_STYLE) + 1))[:N]
    with open(ROOT / "data" / "captions_eval" / "captions.csv", newline="", encoding="utf-8") as f:
        judged = [r["caption"] for r in csv.DictReader(f)]
    judged = (judged * (N // len(judged) + 1))[:N]
    rb = T.RuleBackend()

    def attempt0(caps):
        for c in caps:
            rb.paraphrase(c)
            rb.negate(c)

    def exhaust(caps):
        for c in caps:
            list(T.rule_paraphrases(c))
            list(T.rule_negations(c))

    for name, caps in (("synthneg", syn), ("real_world_style", real), ("captions_eval", judged)):
        r, ts = best_rate(lambda: attempt0(caps), len(caps))
        r_all, _ = best_rate(lambda: exhaust(caps), len(caps))
        cov = rb.coverage(caps[:2000])
        res[name] = dict(
            captions_per_s=r,
            runs_s=ts,
            all_rules_captions_per_s=r_all,
            vs_target=r / TARGET,
            para_share=cov["para_share"],
            neg_share=cov["neg_share"],
            both_share=cov["both_share"],
        )
        print(
            f"RuleBackend on {name}: {r:,.0f} captions/s (x{r / TARGET:.1f} the {TARGET:,.0f}/s target); "
            f"all rules: {r_all:,.0f}/s; transformed both ways: {cov['both_share']:.0%}"
        )

    uniq = list(dict.fromkeys(syn))
    r_pipe, _ = best_rate(lambda: T.generate_triples(uniq, rb, progress=False), len(uniq))
    res["pipeline_rule"] = dict(
        distinct_captions=len(uniq), captions_per_s=r_pipe, vs_backend_alone=r_pipe / res["synthneg"]["captions_per_s"]
    )
    print(
        f"generate_triples (rules) on {len(uniq)} distinct SynthNeg captions: {r_pipe:,.0f} captions/s "
        f"({r_pipe / res['synthneg']['captions_per_s']:.2f} x the backend alone)"
    )

    spec = importlib.util.spec_from_file_location("llm_server", ROOT / "tests" / "llm_server.py")
    ls = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ls)
    caps = [f"a red circle number {i} is above a blue square" for i in range(N_HTTP)]
    http = {}
    with ls.LLMServer() as srv, tempfile.TemporaryDirectory() as d:
        for conc in (1, 4, 8):
            for fsync in (True, False):
                srv.reset()
                b = T.OpenAIChatBackend(srv.url, model="gen", verifier_model="ver", concurrency=conc, api_key_env=None)
                cache = T.JsonlCache(Path(d) / f"c{conc}{fsync}.jsonl", fsync=fsync)
                t = time.perf_counter()
                _, rep = T.generate_triples(caps, b, cache=cache, progress=False)
                dt = time.perf_counter() - t
                cache.close()
                b.close()
                assert srv.total == rep["requests"] == 4 * N_HTTP, (srv.total, rep["requests"])
                http[f"concurrency_{conc}_fsync_{fsync}"] = dict(
                    requests_per_s=rep["requests"] / dt, captions_per_s=N_HTTP / dt
                )
                print(
                    f"OpenAIChatBackend vs local test server, concurrency {conc}, fsync {fsync}: "
                    f"{rep['requests'] / dt:,.0f} requests/s ({N_HTTP / dt:,.0f} captions/s)"
                )
    res["http_local_server"] = http
    out = ROOT / "bench" / "results" / "triples_speed.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

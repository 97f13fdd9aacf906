"""Hostile input against the trainer and the checkpoint format: each test names the mechanism it holds to.

- a run folder changes only once the run has validated everything and holds the folder's `RunLock` (issue 12, 13);
- a checkpoint carries a content hash checked on load, and a schema check names every malformed field (14, 17);
- resume refuses changed settings, naming old and new values (17, 20);
- every numeric parameter is checked (finite, in range) and the device before anything is created (20);
- `semclip-train` fails before any compute with one line on stderr and exit status 2 (18);
- the bundle's tokenizer cuts a caption to a bounded length before the (quadratic) BPE sees it (8);
- the training-curve figure plots every term the losses return (16).

Runs are tiny (a ~100-image SynthNeg in the SemCLIP-CSV layout, batch 16, 2 steps).
"""

import contextlib
import hashlib
import json
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
from _shared import (
    quick_run_params,
    read_only,
    subprocess_env,
    synthneg_as_semclip_csv,
    train_cli_args,
    train_steps as _train_steps,
)

from semclip.core import ConfigError, CheckpointError, SemclipError

BATCH, STEPS = 16, 2


# ----------------------------------------------------------------------------- fixtures and helpers
@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    "A 96-image SynthNeg written as the SemCLIP CSV (`dataset='semclip_csv'`, about 77 training rows)."
    return synthneg_as_semclip_csv(tmp_path_factory.mktemp("data"), 96)


def _params(data_dir, out_dir, arm="pretrain", **kw):
    return quick_run_params(
        data_dir, out_dir, arm, **{**dict(batch_size=BATCH, steps=STEPS, ckpt_every=0, warmup_steps=1), **kw}
    )


def _env():
    return subprocess_env(OMP_NUM_THREADS="1")


@pytest.fixture(scope="module")
def finished(data_dir, tmp_path_factory):
    "A finished pretrain run: params.json, log.jsonl, checkpoint.pt, final.pt, metrics.json."
    from semclip.train import train

    out = tmp_path_factory.mktemp("runs") / "finished"
    train(**_params(data_dir, out))
    return out


def _copy(run, tmp_path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(run, out, ignore=shutil.ignore_patterns(".lock"))
    return out


def _snapshot(folder) -> dict:
    "The content hash of every file in `folder` but the lock file."
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(Path(folder).iterdir()) if p.name != ".lock"
    }


@pytest.fixture
def no_model(monkeypatch):
    "Fail loudly if anything gets as far as building a model (the check came too late)."
    import semclip.model as M

    def boom(*a, **kw):
        raise AssertionError("a model was built: the check came too late")

    monkeypatch.setattr(M, "create_model", boom)


def _exit_code(fn, *a):
    "The exit status of a console-script function: its SystemExit code, or 0 when it returns."
    try:
        fn(*a)
    except SystemExit as e:
        return e.code
    return 0


def _rehash(ck: dict):
    "Give a hand-edited checkpoint a valid content hash, so that the schema check (not the hash) is what it meets."
    try:
        from semclip.model import checkpoint_digest
    except ImportError:
        return ck  # before the content hash existed
    ck["content_sha256"] = checkpoint_digest(ck)
    return ck


# ----------------------------------------------------------------------------- 12. nothing changes before validation
def test_failed_start_leaves_a_finished_run_untouched(data_dir, finished, tmp_path):
    from semclip.train import train

    out = _copy(finished, tmp_path)
    before = _snapshot(out)
    with pytest.raises(ConfigError) as ei:
        train(**_params(data_dir, out, batch_size=512))
    print(ei.value)
    assert "batch_size=512 is larger than the" in str(ei.value)
    assert _snapshot(out) == before


def test_failed_start_creates_no_folder(data_dir, tmp_path):
    from semclip.train import train

    out = tmp_path / "new" / "run"
    with pytest.raises(ConfigError, match="batch_size=512 is larger than the"):
        train(**_params(data_dir, out, batch_size=512))
    assert not out.exists()


def test_failed_resume_into_another_arm_leaves_the_folder_untouched(data_dir, finished, tmp_path):
    from semclip.train import train

    out = _copy(finished, tmp_path)
    before = _snapshot(out)
    with pytest.raises(SemclipError) as ei:
        train(**_params(data_dir, out, arm="baseline", resume=True))
    print(ei.value)
    assert "arm: 'pretrain' in the checkpoint, 'baseline' now" in str(ei.value)
    assert _snapshot(out) == before


def test_fresh_start_clears_the_old_results(data_dir, finished, tmp_path):
    "A new run (not a resume) into a finished folder: the old final.pt and metrics.json go before the first step."
    import semclip.train as T

    out = _copy(finished, tmp_path)
    seen = {}
    real = T.optimizer_step

    def spy(*a, **kw):
        seen.setdefault("files", sorted(p.name for p in out.iterdir()))
        return real(*a, **kw)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(T, "optimizer_step", spy)
        T.train(**_params(data_dir, out, seed=5))
    assert "final.pt" not in seen["files"] and "metrics.json" not in seen["files"], seen
    assert (
        json.loads((out / "params.json").read_text())["seed"] == 5
        and json.loads((out / "metrics.json").read_text())["seed"] == 5
    )


# ----------------------------------------------------------------------------- 13. one writer per run folder
def test_two_trainers_on_one_out_dir(data_dir, tmp_path):
    out = tmp_path / "run"
    first = _params(data_dir, out, steps=100_000)
    a = subprocess.Popen(
        [sys.executable, "-m", "semclip.train", *train_cli_args(first)],
        cwd=ROOT,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        t0 = time.time()
        while not _train_steps(out):
            assert a.poll() is None, a.stderr.read()[-3000:]
            assert time.time() - t0 < 300, "the first trainer logged no step in 300 s"
            time.sleep(0.1)
        b = subprocess.run(
            [sys.executable, "-m", "semclip.train", *train_cli_args(_params(data_dir, out, steps=3))],
            cwd=ROOT,
            env=_env(),
            capture_output=True,
            text=True,
            timeout=300,
        )
        print(b.stderr)
        assert b.returncode == 2, (b.returncode, b.stderr[-3000:])
        assert (
            b.stderr.startswith(f"semclip-train: error: '{out}' is in use by pid {a.pid}") and b.stderr.count("\n") == 1
        ), b.stderr
        assert a.poll() is None, "the first trainer stopped"
        time.sleep(1)
        steps = _train_steps(out)
        assert steps == list(range(1, len(steps) + 1)), steps  # one writer: every step once, in order
        assert json.loads((out / "params.json").read_text())["steps"] == 100_000
    finally:
        a.kill()
        a.wait()


# ----------------------------------------------------------------------------- 14. flipped bytes
def _flip_bytes_in_largest_record(path):
    "XOR 16 bytes in the middle of the largest (uncompressed) record of a torch zip file, leaving it loadable."
    with zipfile.ZipFile(path) as z:
        info = max(z.infolist(), key=lambda i: i.file_size)
    raw = bytearray(Path(path).read_bytes())
    name_len, extra_len = (
        int.from_bytes(raw[info.header_offset + 26 : info.header_offset + 28], "little"),
        int.from_bytes(raw[info.header_offset + 28 : info.header_offset + 30], "little"),
    )
    start = info.header_offset + 30 + name_len + extra_len + info.file_size // 2
    for i in range(start, start + 16):
        raw[i] ^= 0xFF
    Path(path).write_bytes(bytes(raw))


def test_flipped_bytes_in_a_checkpoint_are_refused(tmp_path):
    from semclip.model import create_model, save_checkpoint, load_checkpoint

    ck = save_checkpoint(tmp_path / "final.pt", model=create_model("semclip-tiny"))
    _flip_bytes_in_largest_record(ck)
    torch.load(ck, weights_only=True)  # torch itself reads it without complaint
    with pytest.raises(CheckpointError) as ei:
        load_checkpoint(ck)
    print(ei.value)
    assert f"checkpoint file '{ck}'" in str(ei.value) and "content hash" in str(ei.value)
    with pytest.raises(CheckpointError, match="content hash"):
        create_model(checkpoint=ck)


# ----------------------------------------------------------------------------- 17. malformed checkpoints
@pytest.fixture(scope="module")
def full_checkpoint(tmp_path_factory):
    "A checkpoint with model, AdamW, scheduler and RNG state, and the objects to restore it into."
    from semclip.model import create_model, save_checkpoint
    from semclip.train import make_optimizer, WarmupCosine

    torch.manual_seed(0)
    b = create_model("semclip-tiny")
    opt = make_optimizer(b.model, torch.nn.Module(), 1e-3, 0.2)
    for q in b.model.parameters():
        q.grad = torch.ones_like(q)
    opt.step()
    sch = torch.optim.lr_scheduler.LambdaLR(opt, WarmupCosine(1, 10))
    return (
        save_checkpoint(tmp_path_factory.mktemp("ck") / "checkpoint.pt", model=b, optimizer=opt, scheduler=sch, step=1),
        b,
        opt,
        sch,
    )


def _wrong_exp_avg(c):
    st = c["optimizer"]["state"]
    k = next(iter(st))
    st[k]["exp_avg"] = torch.zeros(3)


@pytest.mark.parametrize(
    "field,mutate",
    [
        ("format_version", lambda c: c.update(format_version="2")),
        ("state_dict", lambda c: c.pop("state_dict")),
        ("rng", lambda c: c.update(rng=None)),
        ("step", lambda c: c.update(step="abc")),
        ("optimizer", lambda c: c["optimizer"]["param_groups"].pop()),  # another optimizer's groups
        ("optimizer", _wrong_exp_avg),  # a state that does not fit its parameter
        ("scheduler", lambda c: c.update(scheduler=["not", "a", "dict"])),
        ("params", lambda c: c.update(params="lr=1")),
    ],
)
def test_malformed_checkpoint_names_the_field(full_checkpoint, tmp_path, field, mutate):
    from semclip.model import load_checkpoint

    path, b, opt, sch = full_checkpoint
    ck = torch.load(path, weights_only=True)
    mutate(ck)
    bad = tmp_path / "bad.pt"
    torch.save(_rehash(ck), bad)
    with pytest.raises(CheckpointError) as ei:
        load_checkpoint(bad, model=b, optimizer=opt, scheduler=sch, restore_rng=True)
    print(ei.value)
    assert f"'{bad}'" in str(ei.value) and f"field '{field}'" in str(ei.value), str(ei.value)


def test_resume_from_a_checkpoint_without_rng_names_it(data_dir, finished, tmp_path):
    from semclip.train import train

    out = _copy(finished, tmp_path)
    ck = torch.load(out / "checkpoint.pt", weights_only=True)
    ck["rng"] = None
    torch.save(_rehash(ck), out / "checkpoint.pt")
    before = _snapshot(out)
    with pytest.raises(CheckpointError, match="field 'rng'"):
        train(**_params(data_dir, out, resume=True, steps=STEPS + 1))
    assert _snapshot(out) == before


@pytest.mark.parametrize(
    "change,old_new",
    [
        (dict(freeze_vision=True), "freeze_vision: False in the checkpoint, True now"),
        (dict(seed=7), "seed: 42 in the checkpoint, 7 now"),
        (dict(lr=0.5), "lr: 0.001 in the checkpoint, 0.5 now"),
        (dict(batch_size=8), "batch_size: 16 in the checkpoint, 8 now"),
    ],
)
def test_resume_refuses_changed_settings(data_dir, finished, tmp_path, change, old_new):
    from semclip.train import train

    out = _copy(finished, tmp_path)
    before = _snapshot(out)
    with pytest.raises(ConfigError) as ei:
        train(**_params(data_dir, out, resume=True, **change))
    print(ei.value)
    assert old_new in str(ei.value)
    assert _snapshot(out) == before


def test_resume_may_change_the_length(data_dir, finished, tmp_path):
    "steps (and logging settings) may change on resume: the schedule is stretched, as before."
    from semclip.train import train

    out = _copy(finished, tmp_path)
    m = train(**_params(data_dir, out, resume=True, steps=STEPS + 1, eval_every=1))
    assert m["step"] == STEPS + 1 and _train_steps(out) == list(range(1, STEPS + 2))


# ----------------------------------------------------------------------------- 20. parameters, checked before anything
@pytest.mark.parametrize(
    "kw,msg",
    [
        (dict(weight_decay=-1), "weight_decay=-1.0 must be a non-negative number"),
        (dict(weight_decay=float("nan")), "weight_decay=nan must be a finite number"),
        (dict(lr=float("inf")), "lr=inf must be a finite number"),
        (dict(lr=0), "lr=0.0 must be a positive number"),
        (dict(grad_clip=-1), "grad_clip=-1.0 must be a non-negative number"),
        (dict(margin=float("nan")), "margin=nan must be a finite number"),
        (dict(k=0), "k=0 must be a positive int"),
        (dict(laclip_p=1.5), "laclip_p=1.5 must be a number in [0, 1]"),
        (dict(warmup_steps=-1), "warmup_steps=-1 must be a non-negative int"),
        (dict(eval_every=2.5), "eval_every=2.5 must be a non-negative int (got float)"),
        (dict(steps=0), "steps=0 must be a positive int"),
        (dict(pretrain_steps=-3), "pretrain_steps=-3 must be a positive int"),
        (dict(seed=-1), "seed=-1 must be"),
        (dict(progress="yes"), "progress='yes' must be true or false"),
        (dict(device="foo"), "device='foo' is not a torch device"),
        (dict(out_dir=""), "out_dir='' is empty"),
    ],
)
def test_bad_parameters_are_refused_before_anything(data_dir, tmp_path, monkeypatch, no_model, kw, msg):
    from semclip.train import train

    out = tmp_path / "run"
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    with pytest.raises(ConfigError) as ei:
        train(**dict(_params(data_dir, out), **kw))
    print(ei.value)
    assert msg in str(ei.value)
    assert not out.exists() and list(cwd.iterdir()) == []


# ----------------------------------------------------------------------------- 18. semclip-train: one line, exit 2, before compute
@pytest.mark.parametrize("case", ["batch_size", "weight_decay", "out_dir_is_a_file", "read_only", "device", "lr_nan"])
def test_train_cli_fails_before_compute(data_dir, tmp_path, capsys, no_model, case):
    from semclip.train import cli

    afile = tmp_path / "afile"
    afile.write_text("x")
    ro = tmp_path / "ro"
    args, want = {
        "batch_size": (["--batch_size", "0"], "batch_size=0 must be a positive int"),
        "weight_decay": (["--weight_decay", "-1"], "weight_decay=-1.0 must be a non-negative number"),
        "out_dir_is_a_file": (["--out_dir", str(afile)], f"out_dir='{afile}' is a file, not a folder"),
        "read_only": (["--out_dir", str(ro / "run")], f"out_dir='{ro / 'run'}' is not writable"),
        "device": (["--device", "foo"], "device='foo' is not a torch device"),
        "lr_nan": (["--lr", "nan"], "lr=nan must be a finite number"),
    }[case]
    base = train_cli_args(_params(data_dir, tmp_path / "run"))
    with read_only(ro) if case == "read_only" else contextlib.nullcontext():
        code = _exit_code(cli, base + args)
    err = capsys.readouterr().err
    print(err)
    assert code == 2 and err.startswith("semclip-train: error: ") and err.count("\n") == 1, (code, err)
    assert want in err
    assert not (tmp_path / "run").exists()


def test_train_cli_exit_status_in_a_process(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "semclip.train", "--weight_decay", "-1", "--out_dir", str(tmp_path / "run")],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 2, (r.returncode, r.stderr[-3000:])
    assert (
        r.stderr.startswith("semclip-train: error: weight_decay=-1.0 must be a non-negative number")
        and r.stderr.count("\n") == 1
    ), r.stderr
    assert not (tmp_path / "run").exists()


# ----------------------------------------------------------------------------- 8. long captions
def test_long_captions_are_cut_before_tokenising(monkeypatch, tmp_path):
    "What the BPE receives, not how long it takes: a 10 MB one-word caption reaches it as at most 16 x context characters."
    from open_clip.tokenizer import SimpleTokenizer
    from semclip.model import create_model, save_checkpoint

    seen = []
    real = SimpleTokenizer.encode

    def spy(self, text):
        seen.append(len(text))
        return real(self, text[:300])  # never run the real BPE on a huge word, even before the fix

    monkeypatch.setattr(SimpleTokenizer, "encode", spy)
    b = create_model("semclip-tiny")
    limit = 16 * b.context_length
    huge = "qzx" * 3_400_000
    with pytest.warns(UserWarning, match=rf"1 of 2 texts .*longer than {limit} characters"):
        tok = b.tokenizer(["a red circle", huge])
    assert tok.shape == (2, b.context_length) and max(seen) <= limit, max(seen)
    seen.clear()
    with pytest.warns(UserWarning):
        b.encode_texts([huge])
    assert max(seen) <= limit
    seen.clear()
    b2 = create_model(
        checkpoint=save_checkpoint(tmp_path / "c.pt", model=b)
    )  # every bundle, also one from a checkpoint
    with pytest.warns(UserWarning):
        b2.tokenizer(huge)
    assert max(seen) <= limit


# ----------------------------------------------------------------------------- 16. the training-curve figure
def test_every_loss_term_is_plotted():
    from semclip.loss import make_loss
    from semclip.train import ARMS, loss_terms

    g = torch.Generator().manual_seed(0)
    f = lambda: torch.randn(8, 16, generator=g)
    for arm in ARMS:
        lf = make_loss(arm, 16)
        inputs = {f"{n}_features": f() for n in {"paraphrase", "negation", *lf.required_inputs}}
        out = lf(
            image_features=f(),
            text_features=f(),
            **inputs,
            output_dict=True,
            **(dict(logit_scale=torch.tensor(10.0)) if getattr(lf, "uses_model_logit_scale", False) else {}),
        )
        rec = dict(
            step=1,
            lr=1e-3,
            grad_norm=1.0,
            samples_per_s=100.0,
            **{k: v.item() for k, v in out.items() if v.numel() == 1},
        )
        plotted = set(loss_terms([rec])) | {"logit_scale"}
        assert set(rec) - {"step", "lr", "grad_norm", "samples_per_s"} <= plotted, (arm, sorted(rec), sorted(plotted))
        assert loss_terms([rec])[0] == "loss"

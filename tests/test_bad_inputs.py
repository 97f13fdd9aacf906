"""The bad inputs users really produce, thrown at the public entry points.

Each case checks three things: a semclip error type (not a bare exception from deep inside pandas, PIL or
torch), a message that names the file / row / parameter at fault, and nothing written half. Where an entry
point does not give a clear error today the test is `xfail(strict=True)` with the current behaviour as its
reason, so the gap stays visible and the test turns red (XPASS) once it is fixed.
"""

import json
import os
import shutil
import struct
import subprocess
import sys
import uuid
import zlib
from pathlib import Path
import pandas as pd
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from semclip.core import SemclipError, ConfigError, DataError, UnsafePathError, CheckpointError
from _shared import semclip_csv_from


def _err(fn, etype=SemclipError):
    "Call fn, which must raise `etype` (a semclip error); return the exception."
    with pytest.raises(etype) as ei:
        fn()
    assert isinstance(ei.value, SemclipError), (
        f"not a semclip error: {type(ei.value).__module__}.{type(ei.value).__name__}: {ei.value}"
    )
    print(f"{type(ei.value).__name__}: {ei.value}")
    return ei.value


def _files(d):
    return sorted(str(p.relative_to(d)) for p in Path(d).rglob("*") if p.is_file())


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def syn(tmp_path_factory):
    "A 20-image SynthNeg, copied into a folder of its own (a real images/ directory, no symlink)."
    from semclip.synth import make_synthneg

    base = tmp_path_factory.mktemp("syn")
    src = make_synthneg(base / "cache", n_pretrain=0, n_train=20, n_val=0, n_test=0, progress=False)
    d = base / "ds"
    shutil.copytree(src, d)
    return d


@pytest.fixture
def ds_dir(syn, tmp_path):
    "A fresh copy of the dataset folder whose triples.csv a test may break."
    d = tmp_path / "ds"
    shutil.copytree(syn, d, symlinks=True)
    return d


def _read(csv):
    from semclip.data import read_triples_csv, TripleDataset

    return TripleDataset(read_triples_csv(csv))


def _png(w, h):
    "A PNG whose header claims w x h pixels (with almost no pixel data)."

    def chunk(t, data):
        return struct.pack(">I", len(data)) + t + data + struct.pack(">I", zlib.crc32(t + data) & 0xFFFFFFFF)

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(b"\0" * 100))
        + chunk(b"IEND", b"")
    )


# ----------------------------------------------------------------------------- CSV files
def test_csv_cut_inside_a_quoted_field(ds_dir):
    csv = ds_dir / "triples.csv"
    lines = csv.read_text().splitlines(keepends=True)
    i = next(k for k, l in enumerate(lines[1:], 1) if '"' in l)  # a row with a quoted field
    q = lines[i].index('"')
    csv.write_text("".join(lines[:i]) + lines[i][: q + 5])  # EOF inside the quotes
    e = _err(lambda: _read(csv), DataError)
    assert e.file == str(csv) and "cannot parse the CSV" in str(e)


def test_csv_cut_before_the_last_fields(ds_dir):
    csv = ds_dir / "triples.csv"
    lines = csv.read_text().splitlines(keepends=True)
    csv.write_text("".join(lines[:6]) + "images/000005.png,a red circle")  # row 5 has image and caption only
    e = _err(lambda: _read(csv), DataError)
    assert (e.file, e.row) == (str(csv), 5) and "negation" in str(e)


def test_csv_cut_inside_the_last_rows_negation(ds_dir):
    "The file ends mid-negation ('a blue squ'), no final newline: refused, naming the row, not read as a short negation."
    import csv as csvmod
    import io

    csv = ds_dir / "triples.csv"
    lines = csv.read_text().splitlines(keepends=True)
    df = pd.read_csv(csv, dtype=str, keep_default_na=False)
    assert list(df.columns[:4]) == ["image", "caption", "paraphrased", "negation"] and len(df.columns) > 4
    r, buf = 5, io.StringIO()
    csvmod.writer(buf, lineterminator="").writerow(
        [*df.loc[5, ["image", "caption", "paraphrased"]], df.loc[5, "negation"][:-3]]
    )
    csv.write_text("".join(lines[: r + 1]) + buf.getvalue())  # rows 0..4, then row 5 cut inside its negation
    e = _err(lambda: _read(csv), DataError)
    assert (e.file, e.row) == (str(csv), r)
    assert f"the file ends in the middle of row {r}" in str(e) and "truncated download or copy?" in str(e)
    csv.write_text("".join(lines).rstrip("\n"))  # only the final newline missing
    assert len(_read(csv)) == len(lines) - 1


def test_csv_mis_encoded(ds_dir):
    csv = ds_dir / "triples.csv"
    text = csv.read_text()
    csv.write_bytes(text.replace("a ", "à ", 1).encode("latin-1"))  # latin-1 bytes, not utf-8
    e = _err(lambda: _read(csv), DataError)
    assert "triples.csv" in str(e) and "utf-8" in str(e).lower()
    csv.write_bytes(text.encode("utf-16"))  # UTF-16 with a BOM
    e = _err(lambda: _read(csv), DataError)
    assert "triples.csv" in str(e)


def test_csv_wrong_column_names(ds_dir):
    csv = ds_dir / "triples.csv"
    df = pd.read_csv(csv).rename(columns={"negation": "negative", "paraphrased": "paraphrase"})
    df.to_csv(csv, index=False)
    e = _err(lambda: _read(csv), DataError)
    assert "triples.csv" in str(e) and "missing column(s)" in str(e) and "negation" in str(e)


# ----------------------------------------------------------------------------- images
@pytest.mark.parametrize("kind", ["corrupt_png", "corrupt_jpeg", "truncated_png", "huge_png"])
def test_bad_image_is_named_with_its_row(ds_dir, kind):
    from semclip.data import read_triples_csv, TripleDataset

    df = pd.read_csv(ds_dir / "triples.csv")
    img = ds_dir / df["image"][3]
    if kind == "corrupt_png":
        img.write_bytes(b"not an image at all")
    elif kind == "corrupt_jpeg":
        img = img.with_suffix(".jpg")
        img.write_bytes(b"\xff\xd8\xff\xe0" + os.urandom(200))
        df.loc[3, "image"] = str(Path(df["image"][3]).with_suffix(".jpg"))
        df.to_csv(ds_dir / "triples.csv", index=False)
    elif kind == "truncated_png":
        img.write_bytes(img.read_bytes()[:40])
    else:
        img.write_bytes(_png(100_000, 100_000))  # a decompression bomb's header
    ds = TripleDataset(read_triples_csv(ds_dir / "triples.csv"))
    e = _err(lambda: ds[3], DataError)
    assert "row 3" in str(e) and img.name in str(e), str(e)
    if kind == "huge_png":
        assert "DecompressionBomb" in str(e) or "exceeds limit" in str(e)
    skip = TripleDataset(read_triples_csv(ds_dir / "triples.csv"), on_bad_sample="skip")
    skip.preload(progress=False)  # skipping counts and reports, never silent
    assert len(skip.skipped) == 1 and skip.skipped[0][0] == 3 and "skipped" in skip.report()


# ----------------------------------------------------------------------------- paths outside the data root
@pytest.mark.parametrize("bad", ["../outside.png", "/etc/passwd", "images/../../outside.png"])
def test_paths_outside_the_data_root(ds_dir, bad):
    csv = ds_dir / "triples.csv"
    df = pd.read_csv(csv)
    df.loc[4, "image"] = bad
    df.to_csv(csv, index=False)
    e = _err(lambda: _read(csv), UnsafePathError)
    assert "row 4" in str(e) and repr(bad) in str(e) and "escapes the data root" in str(e)


# ----------------------------------------------------------------------------- parameters
def test_unknown_arm_library_and_cli(tmp_path):
    from semclip.train import train

    e = _err(lambda: train(arm="x", out_dir=str(tmp_path / "run")), ConfigError)
    assert "arm='x' is not valid; choose one of: 'pretrain'" in str(e)
    r = subprocess.run(
        [sys.executable, "-m", "semclip.train", "--arm", "x", "--out_dir", str(tmp_path / "run")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert r.returncode == 2 and "argument --arm: invalid choice: 'x'" in r.stderr and "Traceback" not in r.stderr, (
        r.stderr[-2000:]
    )
    assert not (tmp_path / "run").exists()  # nothing written for a run that never started


@pytest.mark.parametrize("bs", [-4, 0])
def test_negative_batch_size(tmp_path, bs, capsys):
    "Through the one CLI boundary (semclip.core.cli_main): exit code 2 and one line on stderr."
    from semclip.train import cli

    with pytest.raises(SystemExit) as ei:
        cli(["--batch_size", str(bs), "--out_dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert (
        ei.value.code == 2
        and f"semclip-train: error: batch_size={bs} must be a positive int" in err
        and err.count("\n") == 1
    ), err
    assert not (tmp_path / "run").exists()


def test_symlinked_images_folder(ds_dir, tmp_path):
    "images/ is a link to another disk: the error says it is the link that leads out, and names the file and row."
    other = tmp_path / "other_disk"
    other.mkdir()
    shutil.move(str(ds_dir / "images"), str(other / "images"))
    os.symlink(other / "images", ds_dir / "images")
    e = _err(lambda: _read(ds_dir / "triples.csv"), UnsafePathError)
    assert (e.file, e.row) == (str(ds_dir / "triples.csv"), 0)
    assert (
        "escapes the data root" in str(e) and "(through a symbolic link" in str(e) and str(other / "images") in str(e)
    )


class _Shell:
    def __reduce__(self):
        return (os.system, ("true",))  # unpickling this would run a shell command


def _assert_plain_data_message(e, path):
    s = str(e)
    assert str(path) in s and f"not plain data (GLOBAL {os.system.__module__}.system)" in s, s
    assert "semclip never unpickles code" in s and "Re-save the file with plain data only" in s, s
    assert "weights_only=False" not in s and "weights_only` set to `False" not in s, s


def test_not_plain_pickles(tmp_path):
    "A file that names os.system (torch 2.14 words it 'unsupported GLOBAL posix.system'): every loader says so plainly."
    from semclip.data import load_plain
    from semclip.model import create_model, load_checkpoint

    p = tmp_path / "open_clip_pytorch_model.bin"
    torch.save(dict(w=torch.zeros(2), x=_Shell()), p)
    _assert_plain_data_message(_err(lambda: load_plain(p), DataError), p)
    _assert_plain_data_message(_err(lambda: load_checkpoint(p), CheckpointError), p)
    _assert_plain_data_message(_err(lambda: create_model("semclip-tiny", str(p)), CheckpointError), p)
    p.write_bytes(b"garbage" * 10)  # unreadable: torch's advice to load unsafely is not passed on
    for fn, et in (
        (lambda: load_plain(p), DataError),
        (lambda: load_checkpoint(p), CheckpointError),
        (lambda: create_model("semclip-tiny", str(p)), CheckpointError),
    ):
        s = str(_err(fn, et))
        assert str(p) in s and "weights_only=False" not in s and "does not fit" not in s, s


def test_batch_size_not_a_number_cli(capsys):
    from semclip.train import cli

    with pytest.raises(SystemExit):
        cli(["--batch_size", "abc"])
    err = capsys.readouterr().err
    assert "--batch_size" in err and "<lambda>" not in err and "int" in err


def test_unknown_parameter(tmp_path):
    from semclip.train import train

    e = _err(lambda: train(batchsize=32, out_dir=str(tmp_path / "run")), ConfigError)
    assert "unknown parameter(s) 'batchsize'" in str(e) and "batch_size" in str(e)


def test_unknown_dataset(tmp_path):
    from semclip.data import get_dataset
    from semclip.train import train

    e = _err(lambda: get_dataset("cc-neg"), ConfigError)
    assert "name='cc-neg' is not valid" in str(e) and "'ccneg'" in str(e)
    e = _err(lambda: train(dataset="cc-neg", out_dir=str(tmp_path / "run")), ConfigError)
    assert "dataset='cc-neg' is not valid" in str(e)


def test_missing_dataset_folder(tmp_path):
    from semclip.core import DatasetNotFoundError
    from semclip.data import get_dataset

    e = _err(lambda: get_dataset("ccneg", root=tmp_path / "nowhere"), DatasetNotFoundError)
    assert str(tmp_path / "nowhere") in str(e) and "data/README.md" in str(e)


def test_resume_from_truncated_checkpoint(syn, tmp_path):
    "resume=True with a checkpoint.pt cut short: a CheckpointError naming it, and the run's log left alone."
    from semclip.train import train

    d = semclip_csv_from(syn, tmp_path / "semclip_csv")
    out = tmp_path / "run"
    out.mkdir()
    (out / "checkpoint.pt").write_bytes(b"PK\x03\x04" + b"\0" * 1000)
    (out / "log.jsonl").write_text('{"step": 1, "loss": 3.0}\n')
    e = _err(
        lambda: train(
            dataset="semclip_csv",
            data_root=str(d),
            arm="pretrain",
            init_checkpoint=None,
            batch_size=4,
            steps=2,
            out_dir=str(out),
            resume=True,
            progress=False,
            device="cpu",
        ),
        CheckpointError,
    )
    assert str(out / "checkpoint.pt") in str(e) and "cannot be read" in str(e)
    assert (out / "log.jsonl").read_text() == '{"step": 1, "loss": 3.0}\n'


# ----------------------------------------------------------------------------- API keys
KEY_ENV = "SEMCLIP_TEST_API_KEY"


@pytest.fixture
def llm(monkeypatch):
    from llm_server import LLMServer

    key = "sk-semclip-" + uuid.uuid4().hex + uuid.uuid4().hex
    monkeypatch.setenv(KEY_ENV, key)
    with LLMServer() as srv:
        yield srv, key


def _backend(srv, **kw):
    from semclip.triples import OpenAIChatBackend

    return OpenAIChatBackend(
        base_url=srv.url,
        model="m",
        verifier_model="v",
        api_key_env=KEY_ENV,
        max_retries=1,
        backoff=0.01,
        concurrency=2,
        **kw,
    )


def _leaks(key, texts):
    "Any 12-character piece of `key` found in `texts` (strings or files)."
    pieces = {key[i : i + 12] for i in range(0, len(key) - 11)}
    out = []
    for t in texts:
        s = Path(t).read_bytes().decode("utf-8", "replace") if isinstance(t, Path) else str(t)
        out += [(str(t)[:80], p) for p in pieces if p in s]
    return out


def test_api_key_never_written(llm, tmp_path):
    "A server that echoes the Authorization header in its errors: the key reaches no file, report, repr or message."
    from semclip.triples import generate_triples_csv, LLMError, format_report

    srv, key = llm
    inp = tmp_path / "captions.csv"
    for d in ("out", "out2"):
        (tmp_path / d).mkdir()
    pd.DataFrame(dict(caption=["a dog is on the grass", "two cats are asleep", "a red car is parked"])).to_csv(
        inp, index=False
    )
    srv.add_fault("status", times=-1, kind="neg", match="cats", status=401, text="bad key: {auth}")
    srv.add_fault("status", times=-1, kind="para", match="car", status=500, text="upstream rejected {auth}")
    be = _backend(srv)
    rep = generate_triples_csv(inp, tmp_path / "out" / "triples.csv", backend=be, on_error="record", progress=False)
    assert ("Bearer " + key) in srv.auth, "the key was not sent: nothing tested"
    assert rep["errors"] == 2
    with pytest.raises(LLMError) as ei:
        generate_triples_csv(inp, tmp_path / "out2" / "triples.csv", backend=_backend(srv), cache=None, progress=False)
    print(ei.value)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"triples.csv", "triples.csv.report.json", "triples.csv.cache.jsonl"}
    assert not (tmp_path / "out2" / "triples.csv").exists()  # the failed run wrote no output
    texts = files + [ei.value, repr(be), json.dumps(be.describe()), json.dumps(rep, default=str), format_report(rep)]
    assert not _leaks(key, texts)
    assert "***" in str(ei.value)


def test_api_key_not_leaked_across_the_snippet_cut(llm, tmp_path):
    "An echoed key straddling the 300-character snippet cut: masked before the cut, so no piece reaches a file."
    from semclip.triples import generate_triples_csv

    srv, key = llm
    inp = tmp_path / "captions.csv"
    pd.DataFrame(dict(caption=["a dog is on the grass"])).to_csv(inp, index=False)
    pad = 300 - 20 - len('{"error": {"message": "') - len("Bearer ")  # the key starts 20 bytes before the cut
    srv.add_fault("status", times=-1, status=401, text="x" * pad + "{auth}")
    generate_triples_csv(inp, tmp_path / "out.csv", backend=_backend(srv), on_error="record", progress=False)
    assert not _leaks(key, [p for p in tmp_path.rglob("*") if p.is_file()])


# ----------------------------------------------------------------------------- hostile image files
def _within(fn, seconds=15, unblock=None):
    "fn() in a daemon thread: its result or exception, or an AssertionError when it is still blocked after `seconds`."
    import threading

    box = {}

    def run():
        try:
            box["ok"] = fn()
        except BaseException as e:
            box["err"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(seconds)
    if t.is_alive():
        if unblock is not None:
            unblock()
            t.join(5)
        raise AssertionError(f"still blocked after {seconds} s")
    if "err" in box:
        raise box["err"]
    return box.get("ok")


def _unblock_fifo(p):
    "Open the FIFO's write end and close it: a reader blocked in open() then sees end-of-file."

    def f():
        try:
            os.close(os.open(p, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            pass

    return f


def test_image_that_is_a_fifo(ds_dir):
    "An image path that is a named pipe: refused before opening (open() of a FIFO waits for a writer forever)."
    from semclip.data import read_triples_csv, TripleDataset

    csv = ds_dir / "triples.csv"
    img = ds_dir / pd.read_csv(csv)["image"][3]
    img.unlink()
    os.mkfifo(img)
    ds = TripleDataset(read_triples_csv(csv))
    e = _within(lambda: _err(lambda: ds[3], DataError), unblock=_unblock_fifo(img))
    assert (
        (e.file, e.row) == (str(csv), 3) and img.name in str(e) and "not a regular file" in str(e) and "FIFO" in str(e)
    ), str(e)


def test_shard_writer_refuses_a_fifo(ds_dir, tmp_path):
    from semclip.data import read_triples_csv
    from semclip.wds import write_shards

    csv = ds_dir / "triples.csv"
    img = ds_dir / pd.read_csv(csv)["image"][2]
    img.unlink()
    os.mkfifo(img)
    e = _within(
        lambda: _err(lambda: write_shards(read_triples_csv(csv), tmp_path / "out", progress=False), DataError),
        unblock=_unblock_fifo(img),
    )
    assert e.row == 2 and "not a regular file" in str(e), str(e)


def test_image_that_is_a_socket(tmp_path):
    "A unix socket where an image should be: refused by kind, not an OSError from deep inside open()."
    import socket
    from semclip.data import TripleDataset

    p = tmp_path / "sock.png"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(p))
    try:
        df = pd.DataFrame(dict(image=[str(p)], caption=["c"], paraphrased=["p"], negation=["n"]))
        e = _err(lambda: TripleDataset(df, source="s.csv")[0], DataError)
        assert "row 0" in str(e) and "socket" in str(e) and "not a regular file" in str(e), str(e)
    finally:
        s.close()


def _strip_png(path, w=100_000, h=1):
    from PIL import Image

    Image.new("L", (w, h), 90).save(path)
    return path


def test_strip_image_refused_before_decoding(ds_dir):
    "A 100000 x 1 PNG (a few hundred bytes) passes a pixel-count guard, but resizing its short side to 32 makes 3.2M x 32."
    from torchvision import transforms as T
    from semclip.data import read_triples_csv, TripleDataset

    csv = ds_dir / "triples.csv"
    img = _strip_png(ds_dir / pd.read_csv(csv)["image"][3])
    assert img.stat().st_size < 1000
    tf = T.Compose([T.Resize(32), T.CenterCrop(32), T.ToTensor()])  # what open_clip's preprocess does
    e = _err(lambda: TripleDataset(read_triples_csv(csv), transform=tf)[3], DataError)
    assert (e.file, e.row) == (str(csv), 3) and "100000 x 1" in str(e), str(e)
    e = _err(lambda: TripleDataset(read_triples_csv(csv))[3], DataError)  # plain ToTensor: the aspect ratio alone
    assert "100000 x 1" in str(e) and "aspect ratio" in str(e), str(e)


def test_16bit_greyscale_png_keeps_its_grey(ds_dir):
    "30% grey in a 16-bit PNG ('I;16'): convert('RGB') clips it to white; it must read as 30% grey."
    import numpy as np
    from PIL import Image
    from semclip.data import read_triples_csv, TripleDataset

    csv = ds_dir / "triples.csv"
    img = ds_dir / pd.read_csv(csv)["image"][1]
    Image.fromarray(np.full((8, 8), round(0.3 * 65535), np.uint16)).save(img)
    assert Image.open(img).mode == "I;16"
    x = TripleDataset(read_triples_csv(csv))[1][0]
    assert x.shape == (3, 8, 8) and abs(x.mean().item() - 0.3) < 1 / 255, x.mean().item()


def test_image_file_stamp(ds_dir):
    from semclip.data import image_file_stamp

    p = ds_dir / "images" / "000000.png"
    st = p.stat()
    assert image_file_stamp(p) == (str(p), st.st_size, st.st_mtime_ns)
    e = _err(lambda: image_file_stamp(ds_dir / "nope.png", file="t.csv", row=4), DataError)
    assert (e.file, e.row) == ("t.csv", 4) and "nope.png" in str(e) and "is missing" in str(e)


def test_missing_image_with_frozen_vision_tower(ds_dir):
    import types
    from semclip.data import read_triples_csv, TripleDataset
    from semclip.train import TripleTensors, image_feature_key

    ds = TripleDataset(read_triples_csv(ds_dir / "triples.csv"))
    img = ds.df["image"].iloc[3]
    os.remove(img)
    data = TripleTensors(images=None, tokens={}, df=ds.df.reset_index(drop=True), source=ds)
    e = _err(lambda: image_feature_key(types.SimpleNamespace(visual=torch.nn.Linear(2, 2)), data), DataError)
    first = ds.df["image"].tolist().index(img)  # the first row that uses the image
    assert (e.file, e.row) == (str(ds_dir / "triples.csv"), first) and "is missing" in str(e), str(e)


# ----------------------------------------------------------------------------- shards
def test_failed_shard_rewrite_keeps_the_old_shards(syn, tmp_path):
    "Rewriting shards into a folder that holds good ones, and failing half way: the old shards and manifest survive."
    from semclip.data import read_triples_csv
    from semclip.wds import write_shards, read_shards_frame

    df = read_triples_csv(syn / "triples.csv")
    out = tmp_path / "shards"
    write_shards(df, out, maxcount=4, progress=False)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    bad = df.copy()
    bad.loc[bad.index[10], "image"] = str(tmp_path / "missing.png")
    e = _err(lambda: write_shards(bad, out, maxcount=3, progress=False), DataError)
    assert "row 10" in str(e) and "missing.png" in str(e)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shards"]  # no half-written folder left beside it
    assert len(read_shards_frame(out)[0]) == len(df)


# ----------------------------------------------------------------------------- CC-Neg schema
@pytest.mark.parametrize(
    "edit,want",
    [
        (lambda g: dict(g, image_paths=5), "field 'image_paths' must be a list of strings, found int"),
        (lambda g: dict(g, annotations="abc"), "field 'annotations' must be a list of dicts, found str"),
        (
            lambda g: dict(g, image_paths=g["image_paths"][:2] + [7] + g["image_paths"][3:]),
            "row 2: field 'image_paths' entry must be a string, found int",
        ),
        (
            lambda g: dict(g, annotations=g["annotations"][:4] + [["x"]] + g["annotations"][5:]),
            "row 4: field 'annotations' entry must be a dict, found list",
        ),
        (
            lambda g: dict(
                g, annotations=[dict(a, json=dict(caption=5)) if i == 1 else a for i, a in enumerate(g["annotations"])]
            ),
            "row 1: annotation ['json']['caption'] must be a string, found int",
        ),
        (lambda g: dict(g, annotations=g["annotations"][:5]), "'image_paths' has 6 entries but 'annotations' has 5"),
    ],
)
def test_ccneg_schema(tmp_path, edit, want):
    from semclip.data import read_ccneg

    src = ROOT / "data" / "fixtures" / "ccneg"
    d = tmp_path / "ccneg"
    shutil.copytree(src, d)
    f = d / "ccneg_preprocessed.pt"
    torch.save(edit(torch.load(f, weights_only=True)), f)
    e = _err(lambda: read_ccneg(f), DataError)
    assert e.file == str(f) and want in str(e), str(e)


def test_shard_that_is_a_fifo(tmp_path):
    "A shard path (or a manifest.json) that is a named pipe: refused by kind, never a reader blocked forever."
    from semclip.wds import iter_shard, ShardTriples

    p = tmp_path / "shard-000000.tar"
    os.mkfifo(p)
    e = _within(lambda: _err(lambda: list(iter_shard(p)), DataError), unblock=_unblock_fifo(p))
    assert e.file == str(p) and "not a regular file" in str(e), str(e)
    e = _within(lambda: _err(lambda: ShardTriples(str(p)), DataError), unblock=_unblock_fifo(p))
    assert e.file == str(p) and "not a regular file" in str(e), str(e)

"""Images as users really have them, and as an attacker would make them, through the public readers.

Part 1, one test per PIL mode: a known pixel value in every mode semclip can meet (1, L, LA, La, P with and
without transparency, PA, RGB, RGBA, RGBa, RGBX, CMYK, YCbCr, LAB, HSV, I, I;16 and its variants, F) must come
out as the 8-bit RGB value written down here from the mode's definition (not from PIL's `convert`): alpha
composited on semclip's background, 16-bit values divided by 257, `I` read as 16-bit data, `F` as [0, 1].
Modes a file can hold go through a file and `TripleDataset`; the others through `semclip.data.to_rgb`.

Part 2, Hypothesis: random modes, sizes (1 x N strips, 1 x 1, extreme aspect ratios, 16-bit), random and
mutated bytes, odd file kinds (FIFO, directory, socket) and CSV rows with random unicode and paths, through
`TripleDataset`, `read_triples_csv`, `semclip.wds.image_bytes` and `decode_sample`: every example ends in a
semclip `DataError`/`ConfigError` or in a correct RGB tensor with values in [0, 1]; never a hang, never an
exception of another type.
"""

import contextlib
import io
import os
import shutil
import signal
import socket
import sys
import tempfile
from pathlib import Path
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from semclip.core import SemclipError, ConfigError, DataError
from semclip.data import TripleDataset, read_triples_csv, to_rgb, MAX_ASPECT
from semclip.wds import image_bytes, decode_sample
from torchvision import transforms as T

BG = (255, 255, 255)  # semclip.data.ALPHA_BACKGROUND: transparent pixels become white


def _frame(paths, src="t.csv"):
    n = len(paths)
    return pd.DataFrame(
        dict(
            image=[str(p) for p in paths],
            caption=["c"] * n,
            paraphrased=["p"] * n,
            negation=["n"] * n,
            src_file=src,
            src_row=range(n),
        )
    )


def _read(path, transform=None):
    "The image at `path` through TripleDataset, as uint8 RGB [H, W, 3]."
    x = TripleDataset(_frame([path]), transform=transform)[0][0]
    assert x.dtype == torch.float32 and x.shape[0] == 3 and 0 <= x.min() and x.max() <= 1
    return (x * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()


def _comp(c, a, bg=BG):
    "Straight alpha `a` (0..255) over the background, per channel."
    c, a = np.asarray(c, float), float(a)
    return np.clip(np.round(c * a / 255 + np.asarray(bg, float) * (255 - a) / 255), 0, 255)


def _comp_pre(c, a, bg=BG):
    "Premultiplied colour `c` with alpha `a` over the background."
    return np.clip(np.round(np.asarray(c, float) + np.asarray(bg, float) * (255 - a) / 255), 0, 255)


def _srgb_grey(L):
    "The sRGB grey of CIE lightness L* (a = b = 0), 0..255."
    y = ((L + 16) / 116) ** 3 if L > 8 else L / 903.3
    v = 12.92 * y if y <= 0.0031308 else 1.055 * y ** (1 / 2.4) - 0.055
    return round(255 * v)


def _same(got, want, tol=1):
    got, want = np.asarray(got, float), np.broadcast_to(np.asarray(want, float), np.asarray(got).shape)
    assert np.abs(got - want).max() <= tol, (
        f"got {got.reshape(-1, 3)[:4].tolist()}, want {want.reshape(-1, 3)[:4].tolist()}"
    )


# ----------------------------------------------------------------------------- part 1: one test per mode
def _pal(im):
    im.putpalette([0, 0, 0, 200, 30, 60, 10, 220, 90] + [0] * (256 * 3 - 9))
    return im


# mode -> (image, expected RGB of every pixel, file format that holds the mode or None)
def _cases():
    a16 = np.array([[0, 19661, 65535, 257 * 100]], np.uint16)
    want16 = np.stack([np.round(a16 / 257)] * 3, -1)
    c = {}
    c["1"] = (
        Image.fromarray(np.array([[0, 1, 1, 0]], bool)),
        np.array([[[0] * 3, [255] * 3, [255] * 3, [0] * 3]]),
        "PNG",
    )
    c["L"] = (Image.new("L", (3, 2), 77), (77, 77, 77), "PNG")
    c["LA"] = (Image.new("LA", (3, 2), (40, 100)), _comp((40,) * 3, 100), "PNG")
    c["La"] = (Image.new("La", (3, 2), (30, 100)), _comp_pre((30,) * 3, 100), None)
    p = _pal(Image.new("P", (3, 2), 1))
    c["P"] = (p, (200, 30, 60), "PNG")
    pt = _pal(Image.fromarray(np.array([[1, 2, 1]], np.uint8), "P"))
    pt.info["transparency"] = 1
    c["P+transparency"] = (pt, np.array([[BG, (10, 220, 90), BG]]), "PNG")
    pb = _pal(Image.new("P", (2, 2), 2))
    pb.info["transparency"] = bytes([255, 255, 64] + [255] * 253)  # index 2: alpha 64
    c["P+alpha bytes"] = (pb, _comp((10, 220, 90), 64), "PNG")
    pa = Image.new("PA", (2, 2), (1, 128))
    _pal(pa)
    c["PA"] = (pa, _comp((200, 30, 60), 128), None)
    c["RGB"] = (Image.new("RGB", (3, 2), (10, 20, 30)), (10, 20, 30), "PNG")
    c["RGBA"] = (Image.new("RGBA", (3, 2), (200, 100, 0, 51)), _comp((200, 100, 0), 51), "PNG")
    c["RGBA opaque"] = (Image.new("RGBA", (3, 2), (200, 100, 0, 255)), (200, 100, 0), "PNG")
    c["RGBa"] = (Image.new("RGBa", (3, 2), (40, 20, 0, 51)), _comp_pre((40, 20, 0), 51), None)
    c["RGBX"] = (Image.new("RGBX", (3, 2), (1, 2, 3, 0)), (1, 2, 3), None)
    c["CMYK"] = (Image.new("CMYK", (2, 1), (255, 0, 0, 0)), (0, 255, 255), "TIFF")
    c["CMYK white"] = (Image.new("CMYK", (2, 1), (0, 0, 0, 0)), (255, 255, 255), "JPEG")
    c["YCbCr"] = (Image.new("YCbCr", (2, 2), (90, 128, 128)), (90, 90, 90), "TIFF")
    c["LAB"] = (
        Image.frombytes("LAB", (2, 2), bytes([128, 0, 0] * 4)),
        (_srgb_grey(128 / 255 * 100),) * 3,
        "TIFF",
    )  # (Image.new offsets a, b)
    c["HSV"] = (Image.new("HSV", (2, 2), (0, 255, 255)), (255, 0, 0), None)
    c["HSV grey"] = (Image.new("HSV", (2, 2), (17, 0, 90)), (90, 90, 90), None)
    ai = np.array([[-5, 0, 19661, 65535, 70000]], np.int32)
    c["I"] = (Image.fromarray(ai, "I"), np.stack([np.round(np.clip(ai, 0, 65535) / 257)] * 3, -1), "TIFF")
    c["I;16"] = (Image.fromarray(a16), want16, "PNG")
    for m in ("I;16L", "I;16B", "I;16N"):
        im = Image.new(m, (4, 1))
        for x in range(4):
            im.putpixel((x, 0), int(a16[0, x]))
        c[m] = (im, want16, "TIFF" if m != "I;16N" else None)
    af = np.array([[np.nan, -1, 0, 0.3, 1, 2.5]], np.float32)
    c["F"] = (Image.fromarray(af, "F"), np.stack([np.round(np.clip(np.nan_to_num(af), 0, 1) * 255)] * 3, -1), "TIFF")
    return c


CASES = _cases()


@pytest.mark.parametrize("name", list(CASES))
def test_mode(name, tmp_path):
    im, want, fmt = CASES[name]
    out = to_rgb(im)
    assert out.mode == "RGB" and out.size == im.size
    _same(np.asarray(out), want, tol=0 if name not in ("LAB", "CMYK", "HSV", "YCbCr", "La", "RGBa", "PA") else 2)
    if fmt is not None:  # and through a file and the dataset reader
        p = tmp_path / f"x.{fmt.lower()}"
        im.save(p, format=fmt)
        _same(_read(p), want, tol=2 if fmt == "JPEG" or name in ("LAB", "YCbCr", "CMYK") else 0)


def test_16bit_png_is_read_as_16bit(tmp_path):
    "The first bug: 30% grey in a 16-bit PNG read back as white."
    p = tmp_path / "g.png"
    Image.fromarray(np.full((4, 4), 19661, np.uint16)).save(p)
    _same(_read(p), (77, 77, 77), tol=1)


# ----------------------------------------------------------------------------- part 2: Hypothesis
from hypothesis import given, settings, strategies as st, HealthCheck  # semclip[dev]; pinned in constraints.txt

ACCEPT = (DataError, ConfigError)


@contextlib.contextmanager
def _alarm(seconds=20):
    "Turn a hang (a blocking open, an endless decode) into a failure instead of a stuck test run."

    def boom(*_):
        raise TimeoutError(f"hung for more than {seconds} s")

    old = signal.signal(signal.SIGALRM, boom)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _outcome(fn):
    "'ok' and the result, or the accepted semclip error; anything else propagates (and fails the example)."
    with _alarm():
        try:
            return "ok", fn()
        except ACCEPT as e:
            assert isinstance(e, SemclipError) and str(e)
            return "error", e


SCRATCH = Path(tempfile.mkdtemp(prefix="semclip-hostile-"))
_SOCKETS = []


@pytest.fixture(scope="module", autouse=True)
def _cleanup():
    yield
    for s in _SOCKETS:
        s.close()
    shutil.rmtree(SCRATCH, ignore_errors=True)


_n = [0]


def _path(ext):
    _n[0] += 1
    return SCRATCH / f"{_n[0]:06d}.{ext}"


# the formats that can hold each mode, and how a uniform pixel of it should read
FILE_MODES = {
    "1": ["PNG", "BMP", "TIFF"],
    "L": ["PNG", "JPEG", "BMP", "TIFF", "GIF", "WEBP"],
    "LA": ["PNG", "TIFF"],
    "P": ["PNG", "GIF", "BMP", "TIFF"],
    "RGB": ["PNG", "JPEG", "BMP", "TIFF", "WEBP"],
    "RGBA": ["PNG", "TIFF", "WEBP"],
    "CMYK": ["JPEG", "TIFF"],
    "YCbCr": ["TIFF"],
    "LAB": ["TIFF"],
    "I": ["TIFF"],
    "I;16": ["PNG", "TIFF"],
    "I;16B": ["TIFF"],
    "F": ["TIFF"],
}


def _uniform(mode, v):
    "A uniform pixel of `mode` from random bytes `v`, and the RGB it should read as (None: not checked)."
    v = list(v)
    if mode == "1":
        return v[0] & 1, (255 * (v[0] & 1),) * 3
    if mode in ("L", "P"):
        return v[0], (v[0],) * 3 if mode == "L" else None
    if mode == "LA":
        return (v[0], v[1]), tuple(_comp((v[0],) * 3, v[1]))
    if mode == "RGB":
        return tuple(v[:3]), tuple(v[:3])
    if mode == "RGBA":
        return tuple(v[:4]), tuple(_comp(v[:3], v[3]))
    if mode == "YCbCr":
        return (v[0], 128, 128), (v[0],) * 3
    if mode == "CMYK":
        return (0, 0, 0, v[0]), None
    if mode == "LAB":
        return (v[0], 0, 0), (_srgb_grey(v[0] / 255 * 100),) * 3
    if mode in ("I;16", "I;16B"):
        x = v[0] * 256 + v[1]
        return x, (round(x / 257),) * 3
    if mode == "I":
        x = int.from_bytes(bytes(v[:4]), "little", signed=True) % 140000 - 20000
        return x, (round(min(max(x, 0), 65535) / 257),) * 3
    if mode == "F":
        x = (v[0] - 40) / 150
        return x, (round(min(max(x, 0), 1) * 255),) * 3


def _make(mode, size, v):
    px, want = _uniform(mode, v)
    w, h = size
    if mode == "I;16B":
        im = Image.frombytes(mode, size, px.to_bytes(2, "big") * (w * h))
    elif mode == "LAB":
        im = Image.frombytes(mode, size, bytes(px) * (w * h))  # Image.new would offset a and b
    else:
        im = Image.new(mode, size, px)
    return im, want


sizes = st.one_of(
    st.tuples(st.integers(1, 48), st.integers(1, 48)),  # ordinary and tiny
    st.tuples(st.just(1), st.integers(1, 4000)),
    st.tuples(st.integers(1, 4000), st.just(1)),  # strips
    st.tuples(st.integers(1, 3), st.integers(150, 1500)),
)  # extreme aspect ratios


@st.composite
def images(draw):
    mode = draw(st.sampled_from(sorted(FILE_MODES)))
    fmt = draw(st.sampled_from(FILE_MODES[mode]))
    w, h = draw(sizes)
    if fmt == "WEBP":
        w, h = min(w, 2000), min(h, 2000)
    return mode, fmt, (w, h), draw(st.binary(min_size=4, max_size=4))


@settings(max_examples=120, deadline=10_000, database=None, suppress_health_check=list(HealthCheck))
@given(images(), st.sampled_from(["tensor", "resize"]))
def test_random_images_read_right_or_are_refused(img, tf):
    mode, fmt, size, v = img
    im, want = _make(mode, size, v)
    p = _path(fmt.lower())
    try:
        im.save(p, format=fmt)
    except (OSError, ValueError, KeyError):
        return  # a combination this Pillow cannot write: nothing to test
    transform = T.Compose([T.Resize(8), T.CenterCrop(8), T.ToTensor()]) if tf == "resize" else None
    kind, r = _outcome(lambda: _read(p, transform))
    w, h = size
    if max(w, h) / min(w, h) > MAX_ASPECT:
        assert kind == "error" and "aspect ratio" in str(r), (kind, size)
        return
    assert kind == "ok", f"{mode} {fmt} {size}: {r}"
    if tf == "tensor":
        assert r.shape == (h, w, 3)
    lossy = fmt in ("JPEG", "WEBP") or (fmt == "GIF" and mode != "P")
    if want is not None and not lossy:
        _same(r, want, tol=2 if mode in ("LAB", "YCbCr") or tf == "resize" else 0)


def _valid_bytes(fmt):
    b = io.BytesIO()
    Image.new("RGB" if fmt != "GIF" else "P", (9, 7), (30, 60, 90) if fmt != "GIF" else 3).save(b, format=fmt)
    return b.getvalue()


VALID = {f: _valid_bytes(f) for f in ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP")}


@st.composite
def hostile_bytes(draw):
    how = draw(st.sampled_from(["random", "truncate", "flip", "splice"]))
    if how == "random":
        return draw(st.binary(max_size=600))
    b = bytearray(VALID[draw(st.sampled_from(sorted(VALID)))])
    if how == "truncate":
        return bytes(b[: draw(st.integers(0, len(b)))])
    if how == "flip":
        for _ in range(draw(st.integers(1, 8))):
            b[draw(st.integers(0, len(b) - 1))] = draw(st.integers(0, 255))
        return bytes(b)
    i = draw(st.integers(0, len(b)))
    return bytes(b[:i]) + draw(st.binary(max_size=64)) + bytes(b[i:])


@settings(max_examples=250, deadline=10_000, database=None, suppress_health_check=list(HealthCheck))
@given(hostile_bytes(), st.sampled_from(["png", "jpg", "gif", "tif", "bin"]))
def test_hostile_bytes(data, ext):
    p = _path(ext)
    p.write_bytes(data)
    kind, r = _outcome(lambda: _read(p))
    if kind == "error":
        assert p.name in str(r) and "row 0" in str(r)
    kind2, r2 = _outcome(lambda: image_bytes(p, file="t.csv", row=0))
    if kind2 == "ok":
        b, e = r2
        kind3, s = _outcome(
            lambda: decode_sample("000", {e: b, "json": b'{"caption": "c", "negation": "n"}'}, "x.tar", 0)
        )
        if kind3 == "ok":
            assert s["image"].mode == "RGB"
    kind4, s = _outcome(
        lambda: decode_sample("000", {"png": data, "json": b'{"caption": "c", "negation": "n"}'}, "x.tar", 0)
    )
    if kind4 == "ok":
        assert s["image"].mode == "RGB"


def _fifo(p):
    os.mkfifo(p)


def _dir(p):
    p.mkdir()


def _sock(p):
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(p))
    _SOCKETS.append(s)


def _link_fifo(p):
    q = p.with_suffix(".fifo")
    os.mkfifo(q)
    os.symlink(q, p)


def _missing(p):
    pass


@settings(max_examples=20, deadline=10_000, database=None, suppress_health_check=list(HealthCheck))
@given(st.sampled_from([_fifo, _dir, _sock, _link_fifo, _missing]))
def test_not_a_regular_file(make):
    p = _path("png")
    make(p)
    for fn in (lambda: _read(p), lambda: image_bytes(p, file="t.csv", row=0)):
        kind, r = _outcome(fn)
        assert kind == "error" and p.name in str(r), (make.__name__, r)


text = st.text(st.characters(blacklist_categories=["Cs"]), max_size=40)
paths = st.one_of(
    text,
    st.sampled_from(
        [
            "images/000000.png",
            "../x.png",
            "/etc/passwd",
            "images/../../x",
            "",
            " ",
            ".",
            "images",
            "images/000000.png\0",
            "images/%s.png" % ("a" * 300),
            "~/x.png",
            "images/000000.png/x",
            "C:\\x.png",
            "images//000000.png",
        ]
    ),
)


@settings(max_examples=120, deadline=10_000, database=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.tuples(paths, text, text, text), min_size=1, max_size=4))
def test_csv_rows_with_random_text(rows):
    import csv

    d = SCRATCH / f"csv{_n[0]}"
    _n[0] += 1
    (d / "images").mkdir(parents=True)
    Image.new("RGB", (4, 4), (1, 2, 3)).save(d / "images" / "000000.png")
    with open(d / "triples.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["image", "caption", "paraphrased", "negation"])
        w.writerows(rows)

    def run():
        ds = TripleDataset(read_triples_csv(d / "triples.csv"))
        return [ds[i] for i in range(len(ds))]

    kind, r = _outcome(run)
    if kind == "ok":
        for x, *_ in r:
            assert x.shape == (3, 4, 4)
    else:
        assert "triples.csv" in str(r) or str(d) in str(r), str(r)

"""Property-based: any value of any numeric training parameter, through the library and the command line.

`resolve_params` (the library's door) and `semclip-train`'s argument parser (the command line's) must answer
every value with either a clear `ConfigError` naming the parameter or a run configuration whose number is
finite and in range: never another exception, never a NaN or a negative count slipping through.
"""

import argparse
import math
import os
from hypothesis import given, settings, HealthCheck, strategies as st

os.environ.setdefault("HF_HUB_OFFLINE", "1")
from semclip.core import ConfigError
from semclip.train import resolve_params, _INTS, _OPTIONAL_INTS, _FLOATS
from semclip.cli import command_parser

NUMERIC = sorted({*_INTS, *_OPTIONAL_INTS, *_FLOATS, "lr", "seed"})
values = st.one_of(
    st.integers(-(10**12), 10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.text(max_size=8),
    st.none(),
    st.just([1]),
)
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)


def _in_range(name, v):
    "The resolved value is a plain finite number within its documented range (None only where allowed)."
    if v is None:
        return name in _OPTIONAL_INTS or name == "lr"
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return False
    if name in _INTS:
        return isinstance(v, int) and v >= _INTS[name]
    if name in _OPTIONAL_INTS:
        return isinstance(v, int) and v >= _OPTIONAL_INTS[name]
    if name in _FLOATS:
        lo, hi = _FLOATS[name]
        return (lo is None or v >= lo) and (hi is None or v <= hi)
    if name == "lr":
        return v > 0
    if name == "seed":
        return 0 <= v <= 2**32 - 1
    return True


@SETTINGS
@given(name=st.sampled_from(NUMERIC), value=values)
def test_library_parameters_are_refused_or_sound(name, value, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("run"))
    try:
        p = resolve_params(arm="baseline", init_checkpoint=None, out_dir=out, **{name: value})
    except ConfigError as e:
        assert name in str(e), (name, value, str(e))
        return
    assert _in_range(name, getattr(p, name)), (name, value, getattr(p, name))


@SETTINGS
@given(
    name=st.sampled_from(NUMERIC),
    text=st.one_of(
        st.text(max_size=12),
        st.from_regex(r"-?[0-9]{1,25}(\.[0-9]*)?(e-?[0-9]{1,3})?", fullmatch=True),
        st.sampled_from(["nan", "inf", "-inf", "1e999", "none", "None", "0x10", ""]),
    ),
)
def test_command_line_values_are_refused_or_sound(name, text, tmp_path_factory):
    "Parsing never raises anything but a usage error; what parses is then refused by name or sound."
    ap = command_parser("semclip-train")
    ap.exit = lambda status=0, message=None: (_ for _ in ()).throw(argparse.ArgumentError(None, message or ""))
    ap.error = lambda message: (_ for _ in ()).throw(argparse.ArgumentError(None, message))
    flag = f"--{name}"
    try:
        args = ap.parse_args([flag, text])
    except argparse.ArgumentError:
        return
    kw = vars(args)
    kw.update(arm="baseline", init_checkpoint=None, out_dir=str(tmp_path_factory.mktemp("run")))
    try:
        p = resolve_params(**kw)
    except ConfigError as e:
        assert name in str(e), (name, text, str(e))
        return
    assert _in_range(name, getattr(p, name)), (name, text, getattr(p, name))

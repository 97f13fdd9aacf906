"""The shared mechanisms of semclip.core, across real processes: `cli_main` (the one error boundary of every
console script: exit codes, one-line messages, tracebacks only for bugs), `RunLock` (one run per folder, even
across processes; a dead holder never blocks) and `check_number`."""

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from semclip.core import SemclipError, ConfigError

ENV = {**os.environ, "PYTHONPATH": str(ROOT)}

SCRIPT = textwrap.dedent("""
    import errno, os, sys, time
    from semclip.core import cli_main, DataError, ConfigError

    def main(what):
        if what == 'ok': print('done'); return 0
        if what == 'data': raise DataError('empty caption', file='x.csv', row=3)
        if what == 'multiline': raise ConfigError('first line\\n  second line')
        if what == 'missing': open('/nonexistent-semclip/x.csv')
        if what == 'perm': raise PermissionError(errno.EACCES, 'Permission denied', '/root/x')
        if what == 'isdir': open('/')
        if what == 'enospc': raise OSError(errno.ENOSPC, 'No space left on device', 'runs/ckpt.pt')
        if what == 'erofs': raise OSError(errno.EROFS, 'Read-only file system')
        if what == 'interrupt': raise KeyboardInterrupt
        if what == 'sleep': print('ready', flush=True); time.sleep(60)
        if what == 'bug': return 1 / 0
        if what == 'oserror-bug': raise OSError(errno.EBADF, 'Bad file descriptor')
        if what == 'exit': sys.exit(3)

    cli_main(main, 'semclip-demo', sys.argv[1])
""")


def _run(what, timeout=60):
    return subprocess.run(
        [sys.executable, "-c", SCRIPT, what], capture_output=True, text=True, timeout=timeout, env=ENV, cwd=ROOT
    )


@pytest.mark.parametrize(
    "what,want",
    [
        ("data", "semclip-demo: error: file 'x.csv', row 3: empty caption"),
        ("missing", "semclip-demo: error: No such file or directory: '/nonexistent-semclip/x.csv'"),
    ],
)
def test_errors_become_one_line_and_exit_2(what, want):
    "In a real process: exit code 2, one line on stderr, nothing on stdout."
    r = _run(what)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert r.stderr == want + "\n", r.stderr
    assert r.stdout == ""


@pytest.mark.parametrize(
    "what,want",
    [
        ("multiline", "semclip-demo: error: first line second line"),
        ("perm", "semclip-demo: error: Permission denied: '/root/x'"),
        ("isdir", "semclip-demo: error: Is a directory: '/'"),
        ("enospc", "semclip-demo: error: No space left on device: 'runs/ckpt.pt'"),
        ("erofs", "semclip-demo: error: Read-only file system"),
    ],
)
def test_error_messages(what, want, capsys):
    "The message of each kind of user error (in this process: the exit itself is checked above)."
    ns = {}
    exec(SCRIPT.replace("cli_main(main, 'semclip-demo', sys.argv[1])", ""), ns)
    with pytest.raises(SystemExit) as ei:
        ns["cli_main"](ns["main"], "semclip-demo", what)
    assert ei.value.code == 2 and capsys.readouterr().err == want + "\n"


def test_success_passes_through():
    r = _run("ok")
    assert (r.returncode, r.stdout, r.stderr) == (0, "done\n", "")


def test_keyboard_interrupt_exits_130():
    r = _run("interrupt")
    assert (r.returncode, r.stderr) == (130, "semclip-demo: interrupted\n"), r.stderr


def test_real_ctrl_c_exits_130():
    # a shell that started these tests in the background ignores SIGINT, and its children inherit that: restore the default
    p = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, "sleep"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
        cwd=ROOT,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        assert p.stdout.readline() == "ready\n"
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    assert (p.returncode, err) == (130, "semclip-demo: interrupted\n"), err


@pytest.mark.parametrize(
    "what,exc", [("bug", "ZeroDivisionError"), ("oserror-bug", "OSError: [Errno 9] Bad file descriptor")]
)
def test_bugs_keep_their_traceback(what, exc):
    r = _run(what)
    assert r.returncode == 1 and "Traceback (most recent call last)" in r.stderr and exc in r.stderr, r.stderr


def test_sys_exit_passes_through():
    r = _run("exit")
    assert (r.returncode, r.stderr) == (3, "")


# ----------------------------------------------------------------------------- RunLock
HOLDER = textwrap.dedent("""
    import sys, time
    from semclip.core import RunLock
    with RunLock(sys.argv[1]):
        print('locked', flush=True)
        sys.stdin.readline()                 # hold it until told to go, or until killed
    print('released', flush=True)
""")


def _holder(folder):
    p = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(folder)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
        cwd=ROOT,
    )
    assert p.stdout.readline() == "locked\n", p.stderr.read()
    return p


def test_runlock_two_processes(tmp_path):
    from semclip.core import RunLock, RunInUseError

    run = tmp_path / "run"
    p = _holder(run)
    try:
        rec = json.loads((run / ".lock").read_text())
        assert rec["pid"] == p.pid
        with pytest.raises(RunInUseError) as ei:
            with RunLock(run):
                pass
        msg = str(ei.value)
        print(msg)
        assert isinstance(ei.value, SemclipError)
        assert msg.startswith(f"'{run}' is in use by pid {p.pid} (started ") and msg.endswith(
            "); wait for it or choose another folder"
        )
        assert rec["started"] in msg
        p.stdin.write("\n")
        p.stdin.flush()  # the holder lets go: the folder is free
        assert p.stdout.readline() == "released\n"
        p.wait(30)
        with RunLock(run) as lk:
            assert json.loads((run / ".lock").read_text())["pid"] == os.getpid() and lk.path == run
    finally:
        if p.poll() is None:
            p.kill()


def test_runlock_dead_holder_does_not_block(tmp_path):
    from semclip.core import RunLock

    run = tmp_path / "run"
    p = _holder(run)
    p.kill()
    p.wait(30)  # SIGKILL: no clean-up, the .lock file stays
    assert (run / ".lock").exists() and json.loads((run / ".lock").read_text())["pid"] == p.pid
    with RunLock(run):
        assert json.loads((run / ".lock").read_text())["pid"] == os.getpid()


def test_runlock_cli_boundary(tmp_path):
    "A second run through a console script: one line on stderr, exit 2."
    run = tmp_path / "run"
    p = _holder(run)
    try:
        code = "import sys; from semclip.core import cli_main, RunLock\ndef main():\n    with RunLock(sys.argv[1]): pass\ncli_main(main, 'semclip-x')"
        r = subprocess.run(
            [sys.executable, "-c", code, str(run)], capture_output=True, text=True, timeout=60, env=ENV, cwd=ROOT
        )
        assert (
            r.returncode == 2
            and r.stderr.startswith(f"semclip-x: error: '{run}' is in use by pid {p.pid}")
            and r.stderr.count("\n") == 1
        ), r.stderr
    finally:
        p.kill()
        p.wait(30)


# ----------------------------------------------------------------------------- check_number
def test_check_number():
    from semclip.core import check_number

    assert check_number("batch_size", 8, min=1) == 8
    assert check_number("batch_size", np.int64(8), min=1) == 8 and type(check_number("n", np.int64(8))) is int
    assert check_number("lr", 1, kind=float, min=0, min_inclusive=False) == 1.0
    assert check_number("lr", None, kind=float, allow_none=True) is None
    for v, want in [
        (True, "batch_size=True must be a positive int (got bool)"),
        ("8", "batch_size='8' must be a positive int (got str)"),
        (0, "batch_size=0 must be a positive int"),
        (2.0, "batch_size=2.0 must be a positive int (got float)"),
        (None, "batch_size=None must be a positive int (got NoneType)"),
    ]:
        with pytest.raises(ConfigError) as ei:
            check_number("batch_size", v, min=1)
        assert str(ei.value) == want
    for v in (math.nan, math.inf, -math.inf, np.float32("nan")):
        with pytest.raises(ConfigError, match="must be a finite number"):
            check_number("lr", v, kind=float)
    with pytest.raises(ConfigError, match=r"lr=0\.0 must be a positive number"):
        check_number("lr", 0.0, kind=float, min=0, min_inclusive=False)
    with pytest.raises(ConfigError, match=r"p=1\.5 must be a number in \[0, 1\]"):
        check_number("p", 1.5, kind=float, min=0, max=1)
    with pytest.raises(ConfigError, match=r"rank=2 must be an int in \[0, 1\]"):
        check_number("rank", 2, min=0, max=1)
    with pytest.raises(ConfigError, match="workers=-1 must be a non-negative int"):
        check_number("workers", -1, min=0)
    with pytest.raises(TypeError, match="kind"):
        check_number("x", 1, kind=str)  # a bug in the caller, not a user's error

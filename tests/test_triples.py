"""Integration tests of semclip.triples against a real HTTP server (tests/llm_server.py), no mocks.

Each failure mode of the server is answered by a retry or a clear error; the pipeline killed with SIGKILL half way
through 5,000 captions and rerun loses, duplicates and re-requests nothing beyond the requests that were in flight.
"""
import json, os, signal, subprocess, sys, time
from pathlib import Path
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from llm_server import LLMServer, answer  # noqa: E402
from semclip.core import ConfigError  # noqa: E402
from semclip.triples import OpenAIChatBackend, LLMError, RuleBackend, generate_triples, generate_triples_csv  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SECRET = 'sk-test-SECRET-4f9a2c71'            # a fake key that must never reach a file, a repr or a message
ENV = 'SEMCLIP_TEST_KEY'
CAP = 'A man is riding a horse on the beach.'


@pytest.fixture
def srv():
    with LLMServer() as s: yield s


@pytest.fixture(autouse=True)
def _key(monkeypatch): monkeypatch.setenv(ENV, SECRET)


def llm(srv, **kw):
    return OpenAIChatBackend(srv.url, **{**dict(model='gen', verifier_model='ver', api_key_env=ENV, backoff=0.01, timeout=2.0,
                                                max_retries=2), **kw})


# ---- each failure mode: a retry, or a clear error ------------------------------------------------------------------

def test_429_waits_for_retry_after(srv):
    srv.add_fault('status', times=2, status=429, retry_after=0.3)
    b = llm(srv); t = time.perf_counter()
    assert b.paraphrase(CAP) == answer('para', CAP, 'gen')
    assert time.perf_counter() - t >= 0.6                   # the two Retry-After waits were honoured
    assert (srv.total, b.stats()['retry_429']) == (3, 2)


def test_429_retry_after_too_long_is_a_clear_error_at_once(srv):
    srv.add_fault('status', times=-1, status=429, retry_after=120)
    with pytest.raises(LLMError, match=r"asks to wait 120 s \(Retry-After\), more than max_backoff=30.0 s"): llm(srv).paraphrase(CAP)
    assert srv.total == 1


def test_429_forever_fails_after_max_retries(srv):
    srv.add_fault('status', times=-1, status=429)
    with pytest.raises(LLMError, match=r"failed after 3 attempt\(s\); last error: HTTP 429 Too Many Requests"): llm(srv).negate(CAP)
    assert srv.total == 3


@pytest.mark.parametrize('status', [500, 502, 503])
def test_5xx_is_retried_then_succeeds(srv, status):
    srv.add_fault('status', times=2, status=status)
    b = llm(srv)
    assert b.negate(CAP) == 'A man is not riding a horse on the beach.'
    assert (srv.total, b.stats()['retry_5xx']) == (3, 2)


def test_500_forever_names_request_url_model_and_error(srv):
    srv.add_fault('status', times=-1, status=500)
    with pytest.raises(LLMError) as e: llm(srv).paraphrase(CAP)
    assert str(e.value) == (f"paraphrase of {CAP!r}: POST {srv.url}/chat/completions (model 'gen') failed after 3 attempt(s); "
                            f"last error: HTTP 500 Internal Server Error: {{\"error\": {{\"message\": \"injected 500\"}}}}")


def test_stall_times_out_then_the_retry_succeeds(srv):
    srv.add_fault('stall', times=1, seconds=3)
    b = llm(srv, timeout=0.3)
    assert b.paraphrase(CAP) == answer('para', CAP, 'gen')
    assert (srv.total, b.stats()['retry_timeout']) == (2, 1)


def test_stall_forever_is_a_clear_error_in_bounded_time(srv):
    srv.add_fault('stall', times=-1, seconds=2)
    t = time.perf_counter()
    with pytest.raises(LLMError, match=r"failed after 2 attempt\(s\); last error: no answer within timeout=0.2 s"):
        llm(srv, timeout=0.2, max_retries=1).paraphrase(CAP)
    assert time.perf_counter() - t < 2.0


@pytest.mark.parametrize('mode,msg', [('malformed', 'malformed JSON in the answer'), ('shape', r'no choices\[0\].message.content')])
def test_malformed_answer_is_retried_then_a_clear_error(srv, mode, msg):
    srv.add_fault(mode, times=1)
    b = llm(srv)
    assert b.paraphrase(CAP) == answer('para', CAP, 'gen') and b.stats()['retry_malformed'] == 1
    srv.add_fault(mode, times=-1)
    with pytest.raises(LLMError, match=rf"failed after 3 attempt\(s\); last error: {msg}"): b.paraphrase(CAP)


def test_verdict_without_yes_or_no_is_retried_then_a_clear_error(srv):
    srv.add_fault('answer', times=1, kind='verify_para', text='Maybe.')
    b = llm(srv)
    assert b.verify('para', CAP, 'x') is True and srv.total == 2
    srv.add_fault('answer', times=-1, kind='verify_neg', text='Hard to say.')
    with pytest.raises(LLMError, match="the verifier answered neither Yes nor No: 'Hard to say.'"): b.verify('neg', CAP, 'x')


def test_dropped_connection_is_retried(srv):
    srv.add_fault('drop', times=1)
    b = llm(srv)
    assert b.paraphrase(CAP) == answer('para', CAP, 'gen')
    assert b.stats()['retry_connection'] == 1


def test_server_down_is_a_clear_error(srv):
    url = srv.url; srv.stop()
    b = OpenAIChatBackend(url, max_retries=1, backoff=0.01, timeout=1)
    with pytest.raises(LLMError, match=r"failed after 2 attempt\(s\); last error: connection failed: ConnectionRefusedError"): b.paraphrase(CAP)


def test_401_is_not_retried_says_where_to_look_and_masks_the_key(srv):
    srv.add_fault('status', times=1, status=401, text='bad key: {auth}')   # a server that echoes the key back
    with pytest.raises(LLMError) as e: llm(srv).paraphrase(CAP)
    msg = str(e.value)
    assert 'HTTP 401 Unauthorized' in msg and f'(is the key in ${ENV} right?); not retried' in msg
    assert SECRET not in msg and 'Bearer ***' in msg and srv.total == 1


def test_empty_and_refused_answers_are_counted_and_regenerated(srv):
    srv.add_fault('empty', times=1, kind='para')
    srv.add_fault('refusal', times=1, kind='neg')
    df, rep = generate_triples([CAP], llm(srv), progress=False)
    assert df.loc[0, ['paraphrased', 'para_attempts', 'para_verified']].tolist() == [answer('para', CAP, 'ver'), 2, True]
    assert df.loc[0, ['negation', 'neg_attempts', 'neg_issue']].tolist() == ['A man is not riding a horse on the beach.', 2, '']
    assert rep['para']['invalid_answers']['empty'] == 1 and rep['neg']['invalid_answers']['refusal'] == 1


def test_refusal_on_every_attempt_leaves_the_row_empty_and_flagged(srv):
    srv.add_fault('refusal', times=-1, kind='para')
    df, rep = generate_triples([CAP], llm(srv), max_regen=2, progress=False)
    assert df.loc[0, ['paraphrased', 'para_verified', 'para_attempts', 'para_issue']].tolist() == ['', False, 3, 'refusal']
    assert rep['para']['invalid_answers']['refusal'] == 3 and rep['para']['final_issues'] == {'refusal': 1}


def test_verifier_no_regenerates_with_the_regeneration_model(srv):
    srv.add_fault('answer', times=1, kind='verify_para', text='No')
    df, rep = generate_triples([CAP], llm(srv), progress=False)
    assert df.loc[0, ['paraphrased', 'para_attempts', 'para_verified']].tolist() == [answer('para', CAP, 'ver'), 2, True]
    assert rep['para']['rejections'] == 1 and srv.models['ver'] == 4 and srv.models['gen'] == 2
    srv.add_fault('answer', times=-1, kind='verify_neg', text='No.')
    df, _ = generate_triples(['The cat is on the mat.'], llm(srv), progress=False)
    assert df.loc[0, ['negation', 'neg_verified', 'neg_issue']].tolist() == ['The cat is not on the mat.', False, 'rejected']


def test_on_error_raise_names_the_row_and_record_goes_on(srv, tmp_path):
    caps = [f'A dog number {i} is running.' for i in range(6)]
    srv.add_fault('status', times=-1, status=503, match='number 4 ')
    b = llm(srv, max_retries=1, concurrency=3)
    with pytest.raises(LLMError, match=r"row 4: paraphrase of 'A dog number 4 is running.'"):
        generate_triples(caps, b, cache=tmp_path / 'c.jsonl', progress=False)
    n = srv.total
    df, rep = generate_triples(caps, b, cache=tmp_path / 'c.jsonl', progress=False, on_error='record')
    assert rep['errors'] == 1 and df.para_issue.tolist() == ['', '', '', '', 'error', ''] and 'HTTP 503' in df.error[4]
    assert rep['requests'] + 2 == srv.total - n             # the new answers, and the two failed tries of row 4
    assert all(v == 1 for (k, c), v in srv.counts.items() if 'number 4 ' not in c)   # nothing answered was asked again


def test_concurrency_is_bounded(srv):
    srv.latency = 0.05
    df, rep = generate_triples([f'A cat number {i} is sleeping.' for i in range(24)], llm(srv, concurrency=3), progress=False)
    assert 2 <= srv.max_inflight <= 3 and (df.para_issue == '').all()


def test_key_is_sent_but_never_stored(srv, tmp_path):
    pd.DataFrame(dict(caption=[CAP, 'The cat sits on the mat.'])).to_csv(tmp_path / 'in.csv', index=False)
    b = llm(srv)
    rep = generate_triples_csv(tmp_path / 'in.csv', tmp_path / 'out.csv', backend=b, progress=False)
    assert srv.auth == {f'Bearer {SECRET}'}
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ['in.csv', 'out.csv', 'out.csv.cache.jsonl', 'out.csv.report.json']
    for f in files: assert SECRET not in (tmp_path / f).read_text(), f
    assert SECRET not in repr(b) + json.dumps(rep) + json.dumps(b.__dict__, default=repr)
    with pytest.raises(ConfigError, match='must be the NAME of an environment variable'): OpenAIChatBackend(api_key_env=SECRET)


def test_no_key_no_header(srv, monkeypatch):
    monkeypatch.delenv(ENV)
    llm(srv).paraphrase(CAP)
    assert srv.auth == set()


def test_truncated_cache_line_is_dropped_counted_and_only_it_is_asked_again(srv, tmp_path):
    caps = [f'A bird number {i} is flying.' for i in range(5)]
    _, rep1 = generate_triples(caps, llm(srv), cache=tmp_path / 'c.jsonl', progress=False)
    data = (tmp_path / 'c.jsonl').read_bytes()
    (tmp_path / 'c.jsonl').write_bytes(data[:-25])          # a crash in the middle of writing the last line
    n = srv.total
    _, rep2 = generate_triples(caps, llm(srv), cache=tmp_path / 'c.jsonl', progress=False)
    assert rep2['cache']['truncated_lines'] == 1 and rep2['cache']['loaded'] == rep1['requests'] - 1
    assert rep2['requests'] == srv.total - n == 1


def test_cache_key_depends_on_backend_model_prompt_caption_kind_attempt(srv):
    b = llm(srv)
    keys = {b.cache_key('para', CAP), b.cache_key('para', CAP, 1), b.cache_key('neg', CAP), b.cache_key('para', CAP + ' '),
            llm(srv, model='other').cache_key('para', CAP), llm(srv, para_prompt='Say it again: {caption}').cache_key('para', CAP),
            b.cache_key('verify_para', CAP, 0, 'x'), b.cache_key('verify_para', CAP, 0, 'y')}
    assert len(keys) == 8 and b.cache_key('para', CAP) == llm(srv).cache_key('para', CAP)
    assert RuleBackend().cache_key('para', CAP) is None


def test_console_script_runs_the_rule_backend(tmp_path):
    "`semclip-triples` (the installed entry point; `python -m semclip.triples` if it is not installed yet)."
    script = Path(sys.executable).parent / 'semclip-triples'
    cmd = [str(script)] if script.exists() else [sys.executable, '-m', 'semclip.triples']
    pd.DataFrame(dict(caption=['The cat sits on the mat.'])).to_csv(tmp_path / 'in.csv', index=False)
    r = subprocess.run(cmd + [str(tmp_path / 'in.csv'), str(tmp_path / 'out.csv'), '--no-progress'],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert pd.read_csv(tmp_path / 'out.csv').negation[0] == 'The cat does not sit on the mat.'
    assert 'wrote' in r.stdout


def test_cli_errors_exit_1_with_the_message(tmp_path, capsys):
    from semclip.triples import cli
    assert cli([str(tmp_path / 'missing.csv'), str(tmp_path / 'o.csv')]) == 1
    assert f"semclip-triples: error: file '{tmp_path / 'missing.csv'}': no such caption CSV" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e: cli(['only-one-arg'])
    assert e.value.code == 2


# ---- SIGKILL half way, then rerun --------------------------------------------------------------------------------

def _lines(p: Path) -> int:
    try: return p.read_bytes().count(b'\n')
    except FileNotFoundError: return 0


def test_sigkill_half_way_then_rerun_loses_duplicates_and_repeats_nothing(srv, tmp_path):
    n, conc = 5000, 8
    caps = [f'a red circle number {i} is above a blue square' for i in range(n)]
    images = [f'{i:05d}.png' for i in range(n)]
    pd.DataFrame(dict(image=images, caption=caps)).to_csv(tmp_path / 'in.csv', index=False)
    out, cache = tmp_path / 'out.csv', tmp_path / 'cache.jsonl'
    cmd = [sys.executable, '-m', 'semclip.triples', str(tmp_path / 'in.csv'), str(out), '--backend', 'openai',
           '--base-url', srv.url, '--model', 'gen', '--verifier-model', 'ver', '--api-key-env', ENV,
           '--concurrency', str(conc), '--cache', str(cache), '--timeout', '10', '--backoff', '0.01', '--no-progress']
    needed = 4 * n                                           # paraphrase, its check, negation, its check
    srv.latency = 0.002                                      # so that most workers have a request in flight at the kill
    p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while _lines(cache) < needed // 2:
        assert p.poll() is None, p.stderr.read().decode()
        assert time.time() < deadline, 'the first run did not get half way in time'
        time.sleep(0.01)
    os.kill(p.pid, signal.SIGKILL); p.wait(); p.stderr.close()
    assert p.returncode == -signal.SIGKILL
    assert not out.exists()                                  # the output is written once, at the end
    time.sleep(0.5)                                          # let the server count what was already on the wire
    served1, lines1 = srv.total, _lines(cache)

    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    rep = json.loads((tmp_path / 'out.csv.report.json').read_text())
    kinds = ('para', 'verify_para', 'neg', 'verify_neg')
    assert set(srv.counts) == {(k, c) for c in caps for k in kinds}           # every request needed was served ...
    re_requested = sum(v - 1 for v in srv.counts.values())
    assert max(srv.counts.values()) <= 2 and srv.total == needed + re_requested  # ... at most twice
    assert rep['cache']['loaded'] == lines1 and rep['cache_hits'] == lines1   # the rerun used every cached answer ...
    assert rep['requests'] == srv.total - served1 == needed - lines1         # ... and asked only for what was missing
    in_flight_lost = served1 - lines1               # answered (or being answered) when killed, never cached
    assert re_requested == in_flight_lost <= conc   # the only repeats: at most one per worker
    df = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert len(df) == n and df.caption.tolist() == caps and df.image.tolist() == images
    assert df.paraphrased.tolist() == [answer('para', c, 'gen') for c in caps]
    assert (df.negation == df.caption.str.replace(' is ', ' is not ', n=1, regex=False)).all()
    assert (df.para_verified == 'True').all() and (df.neg_verified == 'True').all() and (df.para_issue == '').all()
    for f in tmp_path.iterdir(): assert SECRET not in f.read_text(), f
    assert srv.auth == {f'Bearer {SECRET}'}
    print(f'\nSIGKILL at {lines1}/{needed} cached answers; server requests: run 1 {served1}, rerun {srv.total - served1}, '
          f'total {srv.total} for {needed} needed; re-requested {re_requested} (bound: concurrency {conc}); '
          f'truncated cache lines {rep["cache"]["truncated_lines"]}')

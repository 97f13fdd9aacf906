"""A small OpenAI-compatible chat-completions server for tests: deterministic answers, faults on demand.

It answers `POST /v1/chat/completions` (any path ending in /chat/completions) the way semclip's prompts expect:

- paraphrase request ("Rephrase the following sentence ...")  -> "<prefix>, <caption>" (the prefix depends on the model)
- negation request ("... false version of this sentence ...")  -> the caption with "not" after its first is/are,
  else "It is not true that <caption>"
- verification request ("The original sentence is: ...")       -> "Yes"

It counts every request it receives per (kind, caption), so a test can prove that nothing was asked twice, and it
can be told to misbehave, from Python (`add_fault`) or over HTTP (`POST /_control/fault`, same fields as JSON):

    mode='status'     answer with `status` (429, 500, 503, 401, ...), with a Retry-After header if `retry_after`;
                      the error message is `text` if given (a server that echoes secrets: see below)
    mode='stall'      sleep `seconds` (at most max_stall) before answering normally
    mode='malformed'  200 with a body that is not JSON
    mode='shape'      200 with JSON that has no choices[0].message.content
    mode='empty'      200 with an empty answer
    mode='refusal'    200 with "I'm sorry, I can't help with that request."
    mode='answer'     200 with `text` as the answer (e.g. "No" for a verification, "Maybe" for a malformed verdict)
    mode='drop'       close the connection without answering
    mode='trickle'    send the normal answer one byte every `seconds` (a server too slow to ever finish)
    mode='big'        200 with an answer of `size` bytes, streamed in 64 KiB pieces (the server never holds it whole),
                      ended by closing the connection; with text='announce', a Content-Length header announces it

In `text` ('status' and 'answer'), "{auth}" is replaced by the request's Authorization header, "{key}" by the key in
it (without "Bearer "), and "{key[A:B]}" by that slice of the key (Python slice syntax, e.g. {key[:-4]}): a server
that echoes secrets, whole or in part.

A fault applies `times` times (-1: forever) to requests of `kind` ('para', 'neg', 'verify_para', 'verify_neg',
None: any) whose caption contains `match` (None: any). `GET /_stats` returns the counts; `POST /_control/reset`
clears faults and counts. It binds 127.0.0.1 only, on an ephemeral port by default.

    python tests/llm_server.py [--port 0] [--latency 0.0] [--lifetime 600]
"""

from __future__ import annotations
import argparse
import json
import re
import sys
import threading
import time
import zlib
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PREFIXES = ("In other words, ", "Put differently, ", "That is to say, ")
REFUSAL = "I'm sorry, I can't help with that request."
_ORIG = re.compile(r'original sentence is: "(.*?)"\n')
_KEY_SLICE = re.compile(r"\{key\[(-?\d*):(-?\d*)\]\}")


def echo(text: str, auth: str) -> str:
    "`text` with {auth}, {key} and {key[A:B]} filled from the Authorization header `auth`."
    key = auth[len("Bearer ") :] if auth.startswith("Bearer ") else auth
    text = _KEY_SLICE.sub(
        lambda m: key[int(m.group(1)) if m.group(1) else None : int(m.group(2)) if m.group(2) else None], text
    )
    return text.replace("{auth}", auth).replace("{key}", key)


def classify(prompt: str):
    "(kind, caption) of a prompt written with semclip's default templates; ('other', prompt) otherwise."
    if "The original sentence is:" in prompt:
        kind = "verify_neg" if "false sentence" in prompt else "verify_para"
        m = _ORIG.search(prompt)
        return kind, (m.group(1) if m else prompt)
    if prompt.startswith("Rephrase the following sentence"):
        return "para", prompt.split("\n", 1)[-1]
    if "false version of this sentence" in prompt:
        return "neg", prompt.split("\n", 1)[-1]
    return "other", prompt


def _lower_first(s):
    return s[:1].lower() + s[1:]


def answer(kind: str, caption: str, model: str) -> str:
    "The deterministic answer to a request."
    if kind == "para":
        return PREFIXES[zlib.crc32(model.encode()) % len(PREFIXES)] + _lower_first(caption)
    if kind == "neg":
        new, n = re.subn(r"\b(is|are)\b", r"\1 not", caption, count=1)
        return new if n else "It is not true that " + _lower_first(caption)
    if kind.startswith("verify"):
        return "Yes"
    return "OK"


class LLMServer:
    "A deterministic OpenAI-compatible test server on 127.0.0.1 (use as a context manager)."

    def __init__(self, port: int = 0, latency: float = 0.0, max_stall: float = 30.0):
        self.port, self.latency, self.max_stall = port, latency, max_stall
        self.lock = threading.Lock()
        self._stopping = threading.Event()
        self.reset()
        self.httpd = None

    # ---- control -----------------------------------------------------------------------------------------------
    def reset(self):
        "Forget faults and counts."
        with self.lock:
            self.faults, self.counts, self.status_counts = [], Counter(), Counter()
            self.total, self.auth, self.models = 0, set(), Counter()
            self.inflight = self.max_inflight = 0

    def add_fault(
        self,
        mode: str,
        times: int = 1,
        kind: str | None = None,
        match: str | None = None,
        status: int = 500,
        retry_after: float | None = None,
        seconds: float = 5.0,
        text: str = "",
        size: int = 0,
    ):
        "Misbehave on the next `times` matching requests (see the module docstring)."
        assert mode in (
            "status",
            "stall",
            "malformed",
            "shape",
            "empty",
            "refusal",
            "answer",
            "drop",
            "trickle",
            "big",
        ), mode
        with self.lock:
            self.faults.append(
                dict(
                    mode=mode,
                    times=times,
                    kind=kind,
                    match=match,
                    status=status,
                    retry_after=retry_after,
                    seconds=min(seconds, self.max_stall),
                    text=text,
                    size=size,
                )
            )

    def stats(self) -> dict:
        with self.lock:
            return dict(
                total=self.total,
                max_inflight=self.max_inflight,
                status=dict(self.status_counts),
                models=dict(self.models),
                counts=[[k, c, n] for (k, c), n in self.counts.items()],
            )

    def _take_fault(self, kind, caption):
        with self.lock:
            for f in self.faults:
                if f["times"] != 0 and f["kind"] in (None, kind) and (f["match"] is None or f["match"] in caption):
                    if f["times"] > 0:
                        f["times"] -= 1
                    return dict(f)
        return None

    # ---- lifecycle ---------------------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def start(self):
        self.httpd = _QuietServer(("127.0.0.1", self.port), _handler(self))
        self.httpd.daemon_threads = True
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs=dict(poll_interval=0.05), daemon=True)
        self._thread.start()
        return self

    def stop(self):
        self._stopping.set()
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()
            self._thread.join(5)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


class _QuietServer(ThreadingHTTPServer):
    "No traceback when a client hung up first (a client that timed out, or was killed)."

    def handle_error(self, request, client_address):
        if isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            return
        super().handle_error(request, client_address)


def _handler(srv: LLMServer):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as real servers do
        disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms delayed-ACK stall

        def log_message(self, *a):
            pass

        def _send(self, status, body: bytes, ctype="application/json", headers=()):
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for k, v in headers:
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)
            with srv.lock:
                srv.status_counts[status] += 1

        def _json(self, status, obj, headers=()):
            self._send(status, json.dumps(obj).encode(), headers=headers)

        def do_GET(self):
            if self.path.rstrip("/") == "/_stats":
                return self._json(200, srv.stats())
            self._json(404, dict(error=dict(message=f"no route {self.path}")))

        def do_POST(self):
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.path.startswith("/_control/"):
                if self.path == "/_control/reset":
                    srv.reset()
                elif self.path == "/_control/fault":
                    srv.add_fault(**json.loads(raw))
                else:
                    return self._json(404, dict(error=dict(message="unknown control")))
                return self._json(200, dict(ok=True))
            if not self.path.endswith("/chat/completions"):
                return self._json(404, dict(error=dict(message=f"no route {self.path}")))
            try:
                req = json.loads(raw)
                model, prompt = req["model"], req["messages"][-1]["content"]
            except (ValueError, KeyError, IndexError, TypeError):
                return self._json(400, dict(error=dict(message="bad request body")))
            kind, caption = classify(prompt)
            with srv.lock:
                srv.total += 1
                srv.counts[(kind, caption)] += 1
                srv.models[model] += 1
                if self.headers.get("Authorization"):
                    srv.auth.add(self.headers["Authorization"])
                srv.inflight += 1
                srv.max_inflight = max(srv.max_inflight, srv.inflight)
            try:
                self._answer(kind, caption, model, prompt)
            finally:
                with srv.lock:
                    srv.inflight -= 1

        def _answer(self, kind, caption, model, prompt):
            if srv.latency:
                time.sleep(srv.latency)
            f = srv._take_fault(kind, caption)
            mode = f["mode"] if f else None
            auth = self.headers.get("Authorization", "")
            if mode == "status":
                hdr = [("Retry-After", f"{f['retry_after']:g}")] if f["retry_after"] is not None else []
                msg = echo(f["text"] or f"injected {f['status']}", auth)
                return self._json(f["status"], dict(error=dict(message=msg)), headers=hdr)
            if mode == "stall":
                srv._stopping.wait(f["seconds"])
            if mode == "malformed":
                return self._send(200, b'{"choices": [{"message": {"content": "trunc')
            if mode == "shape":
                return self._json(200, dict(object="chat.completion", result="no choices here"))
            if mode == "drop":
                self.close_connection = True
                return
            if mode == "big":
                return self._big(f["size"], announce=f["text"] == "announce")
            content = (
                {"empty": "", "refusal": REFUSAL, "answer": echo(f["text"], auth) if f else ""}.get(mode)
                if mode
                else None
            )
            if content is None:
                content = answer(kind, caption, model)
            obj = dict(
                id="chatcmpl-test",
                object="chat.completion",
                created=0,
                model=model,
                choices=[dict(index=0, message=dict(role="assistant", content=content), finish_reason="stop")],
                usage=dict(prompt_tokens=len(prompt.split()), completion_tokens=len(content.split())),
            )
            if mode == "trickle":
                return self._trickle(json.dumps(obj).encode(), f["seconds"])
            self._json(200, obj)

        def _trickle(self, body: bytes, every: float):
            "The whole response, status line included, one byte every `every` seconds (until the client or server gives up)."
            head = (
                f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode()
            self.close_connection = True
            for i, b in enumerate(head + body):
                if srv._stopping.wait(every if i else 0):
                    return
                self.wfile.write(bytes([b]))
                self.wfile.flush()

        def _big(self, size: int, announce: bool):
            "A 200 whose answer is `size` bytes of text, written in pieces so that the server never holds it whole."
            pre = b'{"choices": [{"index": 0, "message": {"role": "assistant", "content": "'
            post = b'"}, "finish_reason": "stop"}]}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            if announce:
                self.send_header("Content-Length", str(len(pre) + size + len(post)))
            else:
                self.send_header("Connection", "close")  # the body ends when the connection does
            self.end_headers()
            self.close_connection = True
            piece = b"x" * 65536
            try:
                self.wfile.write(pre)
                for n in range(0, size, len(piece)):
                    self.wfile.write(piece[: min(len(piece), size - n)])
                self.wfile.write(post)
            except (BrokenPipeError, ConnectionResetError):
                return  # the client stopped reading: as it should

    return Handler


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--latency", type=float, default=0.0)
    p.add_argument("--lifetime", type=float, default=600.0, help="stop after this many seconds")
    a = p.parse_args()
    with LLMServer(a.port, a.latency) as s:
        print(s.url, flush=True)
        try:
            s._stopping.wait(a.lifetime)
        except KeyboardInterrupt:
            pass
    sys.exit(0)

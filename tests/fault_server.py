"""A small chat-completions server for tests and benchmarks: deterministic answers, faults injected on schedule.

It speaks the OpenAI wire format over real HTTP/1.1 on 127.0.0.1 (keep-alive, JSON bodies): `POST /v1/chat/completions`
answers `choices[i].message.content`, `finish_reason` and `usage`; `GET /health` and `GET /v1/models` answer too.
The reply is a function of the request alone (`answer`), so a test knows what every completion must say.

Faults are given per prompt (the last message's content) as a list, one entry per attempt: the first request for
that prompt gets `faults[prompt][0]`, the second `faults[prompt][1]`, and so on; later attempts succeed. `fault_fn(prompt,
attempt)` adds rule-based faults. A fault is one of
  "429" or "429:SECONDS"   429 Too Many Requests, with Retry-After (default 0)
  "500", "503", "400", ...  that status with an error body
  "slow:SECONDS"           wait that long, then answer normally (longer than the client's timeout: a timeout)
  "drop"                   close the connection without a reply

Every request is recorded (`requests`, with an id, the port, the prompt, its attempt number, the fault applied and
the Authorization header), and the server tracks the most requests in flight at once (`max_in_flight`).

Run alone for benchmarks: `python tests/fault_server.py --ports 1 --latency 0.05 [--fault-every 5 --fault 429:0.05]`
prints one JSON line with the base URLs, then serves until killed.
"""
from __future__ import annotations

import argparse, asyncio, json, sys, threading, time
from dataclasses import dataclass, field
from typing import Callable

REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 429: "Too Many Requests",
           500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}


def answer(prompt: str, index: int, max_tokens: int | None) -> tuple[str, str, int]:
    "The deterministic reply to `prompt` as choice `index`: (text, finish_reason, completion tokens as words)."
    words = f"reply {index} to: {prompt}".split()
    if max_tokens is not None and len(words) > max_tokens: return " ".join(words[:max_tokens]), "length", max_tokens
    return " ".join(words), "stop", len(words)


@dataclass
class Record:
    id: int
    port: int
    prompt: str | None
    attempt: int
    fault: str | None
    auth: str | None
    n: int | None
    t_start: float
    t_end: float | None = None
    status: int | None = None


@dataclass
class FaultServer:
    ports: int = 1                                   # how many listening ports (one base URL each)
    latency: float = 0.0                             # seconds before each normal reply
    faults: dict[str, list[str]] = field(default_factory=dict)
    fault_fn: Callable[[str, int], str | None] | None = None
    max_choices: int | None = None                   # answer at most this many choices per request
    api_key: str | None = None                       # when set, any other key gets a 401

    def __post_init__(self):
        self.requests: list[Record] = []
        self.in_flight = self.max_in_flight = 0
        self._attempts: dict[str, int] = {}
        self._lock = threading.Lock()
        self.base_urls: list[str] = []

    # -- lifecycle -------------------------------------------------------------------------------------------------
    def start(self) -> "FaultServer":
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(ready,), daemon=True, name="fault-server")
        self._thread.start()
        if not ready.wait(10): raise RuntimeError("fault server did not start")
        return self

    def _serve(self, ready):
        asyncio.set_event_loop(self._loop)
        self._servers = [self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
                         for _ in range(self.ports)]
        self.base_urls = [f"http://127.0.0.1:{s.sockets[0].getsockname()[1]}/v1" for s in self._servers]
        ready.set()
        self._loop.run_forever()

    def stop(self):
        async def _close():
            for s in self._servers: s.close()
            for t in [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]: t.cancel()
        asyncio.run_coroutine_threadsafe(_close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def __enter__(self): return self.start()
    def __exit__(self, *exc): self.stop()

    # -- what tests read -------------------------------------------------------------------------------------------
    def count(self, prompt: str) -> int:
        "How many requests arrived for `prompt`."
        return sum(r.prompt == prompt for r in self.requests)

    def per_port(self) -> dict[int, int]:
        out: dict[int, int] = {}
        for r in self.requests: out[r.port] = out.get(r.port, 0) + 1
        return out

    # -- HTTP ------------------------------------------------------------------------------------------------------
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        port = writer.get_extra_info("sockname")[1]
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {k.strip().lower(): v.strip() for k, v in (l.split(":", 1) for l in lines[1:] if ":" in l)}
                body = await reader.readexactly(int(headers.get("content-length", 0)))
                keep = await self._dispatch(method, path, headers, body, port, writer)
                if not keep or headers.get("connection", "").lower() == "close": break
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError): pass
        finally:
            try: writer.close()
            except Exception: pass

    async def _send(self, writer, status: int, obj, extra: dict | None = None):
        data = json.dumps(obj).encode()
        hdrs = {"Content-Type": "application/json", "Content-Length": str(len(data)), **(extra or {})}
        writer.write((f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}\r\n" +
                      "".join(f"{k}: {v}\r\n" for k, v in hdrs.items()) + "\r\n").encode() + data)
        await writer.drain()

    async def _dispatch(self, method, path, headers, body, port, writer) -> bool:
        "Answer one request; False when the connection was dropped."
        if method == "GET" and path in ("/health", "/v1/health"):
            await self._send(writer, 200, {"status": "ok"}); return True
        if method == "GET" and path == "/v1/models":
            await self._send(writer, 200, {"object": "list", "data": [{"id": "fault-model", "object": "model"}]}); return True
        if method != "POST" or path != "/v1/chat/completions":
            await self._send(writer, 404, {"error": {"message": f"no route {method} {path}"}}); return True
        req = json.loads(body or b"{}")
        msgs = req.get("messages") or []
        prompt = msgs[-1].get("content") if msgs else None
        with self._lock:
            attempt = self._attempts.get(prompt, 0)
            self._attempts[prompt] = attempt + 1
            sched = self.faults.get(prompt, [])
            fault = sched[attempt] if attempt < len(sched) else (self.fault_fn(prompt, attempt) if self.fault_fn else None)
            rec = Record(id=len(self.requests), port=port, prompt=prompt, attempt=attempt, fault=fault,
                         auth=headers.get("authorization"), n=req.get("n"), t_start=time.monotonic())
            self.requests.append(rec)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await self._reply(req, msgs, prompt, fault, headers, writer, rec)
        finally:
            with self._lock:
                self.in_flight -= 1
                rec.t_end = time.monotonic()

    async def _reply(self, req, msgs, prompt, fault, headers, writer, rec) -> bool:
        if self.api_key is not None and headers.get("authorization") != f"Bearer {self.api_key}":
            rec.status = 401
            await self._send(writer, 401, {"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}})
            return True
        if fault == "drop":
            await asyncio.sleep(self.latency)
            writer.transport.abort()
            return False
        if fault and fault.startswith("slow:"):
            await asyncio.sleep(float(fault.split(":")[1]))
        elif fault:
            code, _, after = fault.partition(":")
            rec.status = int(code)
            await asyncio.sleep(self.latency)
            extra = {"Retry-After": after or "0"} if int(code) in (429, 503) else {}
            await self._send(writer, int(code), {"error": {"message": f"injected {code}", "type": "server_error"}}, extra)
            return True
        await asyncio.sleep(self.latency)
        n = req.get("n") or 1
        if self.max_choices: n = min(n, self.max_choices)
        outs = [answer(prompt or "", i, req.get("max_tokens")) for i in range(n)]
        ptoks = sum(len(str(m.get("content", "")).split()) for m in msgs)
        rec.status = 200
        await self._send(writer, 200, {
            "id": f"chatcmpl-{rec.id}", "object": "chat.completion", "created": int(time.time()), "model": req.get("model"),
            "choices": [{"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": f, "logprobs": None}
                        for i, (t, f, _) in enumerate(outs)],
            "usage": {"prompt_tokens": ptoks, "completion_tokens": sum(c for *_, c in outs),
                      "total_tokens": ptoks + sum(c for *_, c in outs)}})
        return True


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ports", type=int, default=1)
    ap.add_argument("--latency", type=float, default=0.05)
    ap.add_argument("--fault-every", type=int, default=0, help="fault the first attempt of every k-th request")
    ap.add_argument("--fault", default="429:0.05")
    a = ap.parse_args()
    seen = [0]
    def every(prompt, attempt):
        if attempt or not a.fault_every: return None
        seen[0] += 1
        return a.fault if seen[0] % a.fault_every == 0 else None
    srv = FaultServer(ports=a.ports, latency=a.latency, fault_fn=every).start()
    print(json.dumps({"base_urls": srv.base_urls}), flush=True)
    try:
        while True: time.sleep(3600)
    except KeyboardInterrupt: pass
    finally: srv.stop()


if __name__ == "__main__": sys.exit(main())

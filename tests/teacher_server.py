"""A real chat-completions HTTP server on 127.0.0.1 that answers MATH problems with their reference solutions.

The teacher for sampling tests: it finds the problem in the prompt, and for each requested choice answers with the
reference solution (correct) or with a wrong boxed answer, decided by a hash of (problem, seed, choice) against
`error_rate`. Requests are served over the same wire format as vLLM's or any OpenAI-compatible server.
"""
import hashlib, json, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from mixcot_nb.core import unwrap_prompt


class TeacherServer:
    def __init__(self, problems, error_rate=0.5, latency=0.0):
        self.by_text = {p.problem: p for p in problems}
        self.error_rate, self.latency, self.requests = error_rate, latency, 0
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a): pass
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with outer.lock: outer.requests += 1
                if outer.latency: time.sleep(outer.latency)
                reply = json.dumps(outer.complete(body)).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def correct(self, problem, seed, j) -> bool:
        h = int(hashlib.sha1(f"{problem}|{seed}|{j}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
        return h >= self.error_rate

    def complete(self, body):
        problem = unwrap_prompt(body["messages"][-1]["content"])
        p = self.by_text[problem]
        choices = []
        for j in range(body.get("n", 1)):
            text = p.solution if self.correct(problem, body.get("seed"), j) else "I think it is \\boxed{-12345}."
            choices.append({"index": j, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"})
        words = sum(len(c["message"]["content"].split()) for c in choices)
        return {"id": "cmpl", "object": "chat.completion", "created": int(time.time()), "model": body["model"],
                "choices": choices, "usage": {"prompt_tokens": len(problem.split()), "completion_tokens": words,
                                              "total_tokens": words + len(problem.split())}}

    def close(self):
        self.httpd.shutdown(); self.httpd.server_close()

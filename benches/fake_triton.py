"""A fake Triton for benches/footprint.sh (Python standard library only).

Serves, over keep-alive HTTP/1.1 as Triton does:
  GET /metrics                    the page file given as argument (read once)
  GET /v2/health/ready, /live     200, empty body
  GET /v2/models/<m>/ready        200, empty body
  GET /v2/models/<m>/config       tests/fixtures/v2_models_fast_config.json with the name
                                  replaced (a plain model, not an ensemble)
  GET /_fake/metrics_hits         how many times /metrics was served (to check polling goes on)

Usage: python3 fake_triton.py PAGE.prom PORT_FILE   (binds 127.0.0.1:0, writes the port)
"""
import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HERE = os.path.dirname(os.path.abspath(__file__))
PAGE = open(sys.argv[1], "rb").read()
CONFIG = json.load(open(os.path.join(HERE, "..", "tests", "fixtures", "v2_models_fast_config.json")))
HITS = 0
LOCK = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, code, body=b"", ctype="text/plain"):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        global HITS
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            with LOCK:
                HITS += 1
            self.reply(200, PAGE, "text/plain; charset=utf-8; version=0.0.4")
        elif path in ("/v2/health/ready", "/v2/health/live"):
            self.reply(200)
        elif path.startswith("/v2/models/") and path.endswith("/ready"):
            self.reply(200)
        elif path.startswith("/v2/models/") and path.endswith("/config"):
            cfg = dict(CONFIG, name=path.split("/")[3])
            self.reply(200, json.dumps(cfg).encode(), "application/json")
        elif path == "/_fake/metrics_hits":
            self.reply(200, str(HITS).encode())
        else:
            self.reply(404)


def main():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    with open(sys.argv[2] + ".tmp", "w") as f:
        f.write(str(srv.server_address[1]))
    os.replace(sys.argv[2] + ".tmp", sys.argv[2])
    srv.serve_forever()


if __name__ == "__main__":
    main()

"""A fake Triton for tests/image/check_image.py (Python standard library only).

    python3 fake_triton.py PAGE_FILE PORT_FILE

Binds 127.0.0.1 on a free port and writes the port to PORT_FILE. Serves, over keep-alive
HTTP/1.1 as Triton does:
  GET /metrics                  PAGE_FILE, read on every request: the test swaps the file (a
                                rename) to turn Triton from busy to idle during a drain
  GET /v2/health/ready, /live   200
  GET /v2/models/<m>/ready      200
  GET /v2/models/<m>/config     tests/fixtures/v2_models_fast_config.json with the name replaced
Unlike benches/fake_triton.py, which reads its page once (the footprint benchmark must not
measure file reads).
"""
import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HERE = os.path.dirname(os.path.abspath(__file__))
PAGE_FILE, PORT_FILE = sys.argv[1], sys.argv[2]
with open(os.path.join(HERE, "..", "fixtures", "v2_models_fast_config.json")) as f:
    CONFIG = json.load(f)


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
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            with open(PAGE_FILE, "rb") as f:
                page = f.read()
            self.reply(200, page, "text/plain; charset=utf-8; version=0.0.4")
        elif path in ("/v2/health/ready", "/v2/health/live"):
            self.reply(200)
        elif path.startswith("/v2/models/") and path.endswith("/ready"):
            self.reply(200)
        elif path.startswith("/v2/models/") and path.endswith("/config"):
            cfg = dict(CONFIG, name=path.split("/")[3])
            self.reply(200, json.dumps(cfg).encode(), "application/json")
        else:
            self.reply(404)


def main():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    with open(PORT_FILE + ".tmp", "w") as f:
        f.write(str(srv.server_address[1]))
    os.replace(PORT_FILE + ".tmp", PORT_FILE)
    srv.serve_forever()


if __name__ == "__main__":
    main()

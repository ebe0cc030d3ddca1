"""A loopback HTTP server for download tests (never the network): serves files
from memory with HTTP Range, can hang up early, and answers as a proxy too
(``http_proxy=http://127.0.0.1:PORT`` makes every http:// URL a request to it,
with the whole URL as the path)."""
import http.server
import io
import socket
import tarfile
import threading

import pytest


class RangeHandler(http.server.BaseHTTPRequestHandler):
    files = {}
    ranges = []
    cut = {}          # path -> bytes sent before the connection is closed (Content-Length full)

    def do_GET(self):
        body = self.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        if self.path in self.cut and not self.headers.get("Range"):
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[:self.cut[self.path]])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        start = 0
        rng = self.headers.get("Range")
        if rng:
            self.ranges.append(rng)
            start = int(rng.split("=")[1].split("-")[0])
            if start >= len(body):
                self.send_error(416)
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        self.wfile.write(body[start:])

    def log_message(self, *args):
        pass


def start():
    """(server, its URL), serving RangeHandler.files in a thread; shutdown() stops it."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RangeHandler)
    RangeHandler.files, RangeHandler.ranges, RangeHandler.cut = {}, [], {}
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    return httpd, f"http://127.0.0.1:{httpd.server_address[1]}"


@pytest.fixture
def server():
    httpd, url = start()
    yield httpd, url
    httpd.shutdown()


def tar_of(folder, prefix):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        t.add(folder, arcname=prefix)
    return buf.getvalue()

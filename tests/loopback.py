"""A loopback HTTP server for download tests (never the network): serves files
from memory with HTTP Range and If-Range (an ETag per content), can hang up early,
and answers as a proxy too: ``http_proxy=http://127.0.0.1:PORT`` makes every
http:// URL a request to it, with the whole URL as the path, and
``https_proxy`` the same, every https:// URL a CONNECT that it answers itself with
TLS, under a certificate of a test authority (``proxy_env`` gives the variables,
SSL_CERT_FILE among them). ``files`` is keyed by the whole URL ("/name" for a
request made to the server directly)."""
import functools
import hashlib
import http.server
import io
import socket
import socketserver
import ssl
import subprocess
import tarfile
import tempfile
import threading
from pathlib import Path

import pytest

# Every host whose https URLs the tests download from through the proxy.
HOSTS = ("www2.eecs.berkeley.edu", "cs.stanford.edu", "raw.githubusercontent.com",
         "github.com", "dl.caffe.berkeleyvision.org", "host.robots.ox.ac.uk",
         "www.robots.ox.ac.uk")


@functools.lru_cache(maxsize=1)
def authority():
    """(CA certificate file, server certificate file, server key file), made once per
    process with openssl: a test CA, and a certificate for HOSTS signed by it."""
    d = Path(tempfile.mkdtemp(prefix="fcn-test-ca-"))

    def openssl(*args):
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
            "ca.pem", "-days", "2", "-subj", "/CN=fcn test authority", "-addext",
            "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "host.key", "-out", "host.csr",
            "-subj", "/CN=loopback")
    (d / "ext.cnf").write_text(
        "subjectAltName=" + ",".join(f"DNS:{h}" for h in HOSTS) + "\n"
        "basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n")
    openssl("x509", "-req", "-in", "host.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "host.pem", "-days", "2", "-extfile", "ext.cnf")
    return d / "ca.pem", d / "host.pem", d / "host.key"


def proxy_env(url):
    """What makes every http(s) download of a process go to the server at ``url``."""
    return {"http_proxy": url, "HTTP_PROXY": url, "https_proxy": url, "HTTPS_PROXY": url,
            "no_proxy": "", "NO_PROXY": "", "SSL_CERT_FILE": str(authority()[0])}


class RangeHandler(http.server.BaseHTTPRequestHandler):
    files = {}
    ranges = []
    cut = {}          # path -> bytes sent before the connection is closed (Content-Length full)
    tunnel = ""       # "https://host" inside a CONNECT

    def do_CONNECT(self):
        """The proxy's tunnel for an https URL, answered here: TLS as that host."""
        self.send_response(200, "Connection established")
        self.end_headers()
        _, cert, key = authority()
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self.connection = context.wrap_socket(self.connection, server_side=True)
        self.rfile = self.connection.makefile("rb", self.rbufsize)
        self.wfile = socketserver._SocketWriter(self.connection)
        self.tunnel = "https://" + self.path.rsplit(":", 1)[0]
        self.close_connection = False

    def do_GET(self):
        self.path = self.tunnel + self.path
        body = self.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        etag = f'"{hashlib.sha256(body).hexdigest()[:16]}"'
        if self.path in self.cut and not self.headers.get("Range"):
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("ETag", etag)
            self.end_headers()
            self.wfile.write(body[:self.cut[self.path]])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        start = 0
        rng = self.headers.get("Range")
        if rng and self.headers.get("If-Range") not in (None, etag):
            rng = None                    # the file changed since: the whole of it
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
        self.send_header("ETag", etag)
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

"""A real web server (Debian's nginx) on the loopback, a test CA made with openssl, and a
TCP proxy that drops connections mid-transfer: what the URL-source tests and the benchmark
serve packages with. No sleeps: waits are bounded waits on a process or a socket."""

import os
import shutil
import socket
import subprocess
import threading
from pathlib import Path

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"

CONF = """\
worker_processes 1;
daemon off;
user root;
error_log {d}/error.log;
pid {d}/nginx.pid;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    types {{ }}
    default_type application/octet-stream;
    server {{ listen 127.0.0.1:{http}; root {root}; }}
    server {{
        listen 127.0.0.1:{https} ssl;
        ssl_certificate {d}/server.crt;
        ssl_certificate_key {d}/server.key;
        root {root};
    }}
}}
"""


def have_nginx():
    return os.path.exists(NGINX) and shutil.which("openssl") is not None


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc=None, tries=400):
    """Until something accepts on port (bounded: each try waits on the process, not a sleep)."""
    for _ in range(tries):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if proc is not None:
                try:
                    proc.wait(timeout=0.025)
                    raise RuntimeError("the server exited with status %s" % proc.returncode)
                except subprocess.TimeoutExpired:
                    pass
    raise RuntimeError("nothing listens on port %d" % port)


def openssl(*args, cwd):
    subprocess.run(["openssl"] + list(args), cwd=cwd, check=True, capture_output=True)


def make_ca(d, name):
    """A self-signed CA: d/name.crt, d/name.key."""
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=%s" % name,
            "-keyout", name + ".key", "-out", name + ".crt", cwd=d)
    return Path(d) / (name + ".crt")


def make_server_cert(d, ca="ca"):
    """server.crt/server.key for 127.0.0.1 and localhost, signed by the CA `ca`."""
    (Path(d) / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", "server.key",
            "-out", "server.csr", cwd=d)
    openssl("x509", "-req", "-in", "server.csr", "-CA", ca + ".crt", "-CAkey", ca + ".key", "-CAcreateserial",
            "-days", "2", "-extfile", "san.ext", "-out", "server.crt", cwd=d)


class Nginx:
    """nginx serving root over http and https on free loopback ports, until stop()."""

    def __init__(self, workdir, root):
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.root = Path(root)
        self.ca = make_ca(self.dir, "ca")
        self.other_ca = make_ca(self.dir, "other")
        make_server_cert(self.dir)
        self.http, self.https = free_port(), free_port()
        (self.dir / "nginx.conf").write_text(CONF.format(d=self.dir, root=self.root, http=self.http,
                                                         https=self.https))
        self.proc = subprocess.Popen([NGINX, "-p", str(self.dir), "-c", str(self.dir / "nginx.conf")],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            wait_port(self.http, self.proc)
            wait_port(self.https, self.proc)
        except BaseException:
            self.stop()
            raise

    def url(self, name, tls=False, port=None):
        if tls:
            return "https://127.0.0.1:%d/%s" % (port or self.https, name)
        return "http://127.0.0.1:%d/%s" % (port or self.http, name)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class DroppingProxy:
    """A TCP proxy to 127.0.0.1:upstream that cuts each of the first `drops` connections
    after `cut` bytes from the server have passed."""

    def __init__(self, upstream, drops=3, cut=700000, on_drop=None):
        self.upstream = upstream
        self.on_drop = on_drop
        self.drops = drops
        self.cut = cut
        self.connections = 0
        self.dropped = 0
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.threads = []
        t = threading.Thread(target=self._accept, daemon=True)
        t.start()

    def _accept(self):
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            drop = self.dropped < self.drops
            if drop:
                self.dropped += 1
            t = threading.Thread(target=self._serve, args=(client, self.cut if drop else None), daemon=True)
            t.start()
            self.threads.append(t)

    def _serve(self, client, cut):
        try:
            server = socket.create_connection(("127.0.0.1", self.upstream), timeout=10)
        except OSError:
            client.close()
            return
        up = threading.Thread(target=self._pump, args=(client, server, None), daemon=True)
        up.start()
        self._pump(server, client, cut, self.on_drop)
        for s in (client, server):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    @staticmethod
    def _pump(src, dst, cut, on_drop=None):
        sent = 0
        try:
            while cut is None or sent < cut:
                data = src.recv(65536 if cut is None else min(65536, cut - sent))
                if not data:
                    break
                dst.sendall(data)
                sent += len(data)
        except OSError:
            pass
        if cut is not None:
            if on_drop is not None:
                on_drop()  # before the client sees the drop
            try:
                dst.shutdown(socket.SHUT_RDWR)
                src.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def stop(self):
        self.sock.close()


class Silent:
    """A TCP server that accepts and never answers."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]

    def stop(self):
        self.sock.close()


class Request:
    """What a client sent on one connection of a Scripted server."""

    def __init__(self, n, head):
        self.n = n  # the connection's index, from 0
        self.head = head
        lines = head.split(b"\r\n")
        self.line = lines[0].decode("latin-1")
        parts = self.line.split(" ")
        self.method, self.target = (parts + ["", ""])[:2]
        self.headers = {}
        for ln in lines[1:]:
            name, _, value = ln.decode("latin-1").partition(":")
            if name:
                self.headers[name.strip().lower()] = value.strip()

    def range_start(self):
        """N of `Range: bytes=N-`, else None."""
        value = self.headers.get("range", "")
        if value.startswith("bytes=") and value.endswith("-") and value[6:-1].isdigit():
            return int(value[6:-1])
        return None


def answer(status=200, headers=(), body=b"", reason=None):
    """The bytes of an HTTP/1.1 answer (headers as (name, value) pairs, taken as they are)."""
    reason = reason if reason is not None else {200: "OK", 206: "Partial Content", 302: "Found", 401: "Unauthorized",
                                                404: "Not Found", 412: "Precondition Failed"}.get(status, "X")
    head = "HTTP/1.1 %d %s\r\n" % (status, reason) + "".join("%s: %s\r\n" % h for h in headers) + "\r\n"
    return head.encode("latin-1") + body


def ranged(data, req, validators=(), extra=(), length=None):
    """An answer serving data as a file that honours `Range: bytes=N-` (206), with the given
    validator headers (ETag, Last-Modified) and extra headers. length: cut the body after
    this many bytes (the connection is then closed by the server)."""
    start = req.range_start()
    headers = list(validators) + list(extra) + [("Accept-Ranges", "bytes"), ("Connection", "close")]
    if start is None:
        out = answer(200, headers + [("Content-Length", len(data))], b"")
        body = data
    else:
        out = answer(206, headers + [("Content-Length", len(data) - start),
                                     ("Content-Range", "bytes %d-%d/%d" % (start, len(data) - 1, len(data)))], b"")
        body = data[start:]
    return [out + (body if length is None else body[:length])]


class Scripted:
    """An HTTP server on 127.0.0.1 (TLS with tls=(cert, key)) whose answers come from a
    script: script(request) returns the steps of the answer: bytes (sent as they are), a
    number (a pause of that many seconds, cut short by stop()), or None (close now). The
    connection is closed after the last step. Bounded: after max_connections, connections
    are closed unanswered; an answer's pauses stop after max_seconds in all. The requests
    are kept in .requests; .reached is set once an answer has passed a "reached" step."""

    REACHED = "reached"

    def __init__(self, script, tls=None, max_connections=50, max_seconds=20.0):
        self.script = script
        self.max_connections = max_connections
        self.max_seconds = max_seconds
        self.requests = []
        self.connections = 0
        self.stopped = threading.Event()
        self.reached = threading.Event()
        self.ctx = None
        if tls is not None:
            import ssl

            self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.ctx.load_cert_chain(*[str(p) for p in tls])
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.clients = []
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, path="/p.bin.gz", userinfo=""):
        return "%s://%s127.0.0.1:%d%s" % ("https" if self.ctx else "http", userinfo, self.port, path)

    def _accept(self):
        while not self.stopped.is_set():
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            n = self.connections
            self.connections += 1
            self.clients.append(client)
            if n >= self.max_connections:
                client.close()
                continue
            threading.Thread(target=self._serve, args=(client, n), daemon=True).start()

    def _serve(self, client, n):
        try:
            client.settimeout(5)
            if self.ctx is not None:
                client = self.ctx.wrap_socket(client, server_side=True)
            head = b""
            while b"\r\n\r\n" not in head and len(head) < 65536:
                data = client.recv(4096)
                if not data:
                    return
                head += data
            req = Request(n, head.partition(b"\r\n\r\n")[0])
            self.requests.append(req)
            paused = 0.0
            for step in self.script(req):
                if self.stopped.is_set() or step is None:
                    break
                if step == self.REACHED:
                    self.reached.set()
                elif isinstance(step, (int, float)):
                    pause = min(float(step), self.max_seconds - paused)
                    if pause <= 0 or self.stopped.wait(pause):
                        break
                    paused += pause
                else:
                    client.sendall(step)
        except (OSError, ValueError):
            pass
        finally:
            try:
                client.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            client.close()

    def stop(self):
        self.stopped.set()
        self.sock.close()
        for c in self.clients:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def drip(data, every):
    """Steps that send data one byte at a time, a pause of `every` seconds before each."""
    for i in range(len(data)):
        yield every
        yield data[i:i + 1]

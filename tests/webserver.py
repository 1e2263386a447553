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

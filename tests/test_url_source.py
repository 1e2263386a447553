"""otaunpack -x URL: packages served by a real nginx on the loopback, through a proxy that
drops connections, over HTTPS with a test CA; --no-spool and a file replaced between passes;
a 404 and a server that never answers."""

import gzip
import os
import random
import subprocess
import sys

import pytest

from sstarota import packer, schema

import webserver

pytestmark = pytest.mark.skipif(not webserver.have_nginx(), reason="needs nginx and openssl")

PART = 3 << 20
FAST = ["--timeout", "2", "--retries", "3", "--time-limit", "60"]


def otaunpack(*argv):
    return subprocess.run([sys.executable, "-m", "sstarota.cli.otaunpack"] + [str(a) for a in argv],
                          capture_output=True, text=True)


def image(seed, size=PART - 4096):
    return random.Random(seed).randbytes(size)


def build(path, seed):
    """A gzip package of two block records (incompressible images: several MB on the wire)."""
    raw = path.with_suffix("")
    specs = [packer.RecordSpec(schema.OP_BLOCK, "/dev/mtdblock%d" % i, packer.BytesData(image(seed + i), "p%d" % i),
                               dst_size=PART) for i in (3, 4)]
    packer.build(str(raw), specs, "0.4")
    path.write_bytes(gzip.compress(raw.read_bytes(), 1))
    return path


def fresh_root(tmp_path, name):
    root = tmp_path / name
    (root / "dev").mkdir(parents=True)
    for i in (3, 4):
        (root / "dev" / ("mtdblock%d" % i)).write_bytes(b"\xff" * PART)
    return root


def snapshot(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    base = tmp_path_factory.mktemp("www")
    www = base / "www"
    www.mkdir()
    build(www / "SStarOta.bin.gz", 1)
    server = webserver.Nginx(base / "nginx", www)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def local(served, tmp_path_factory):
    """The root a local install of the served package gives."""
    tmp = tmp_path_factory.mktemp("local")
    root = fresh_root(tmp, "root")
    proc = otaunpack("-x", served.root / "SStarOta.bin.gz", "--root", root, "-q")
    assert proc.returncode == 0, proc.stderr
    return snapshot(root)


def spools(tmp):
    return [p for p in os.listdir(tmp) if p.startswith("sstarota-")]


def test_install_through_dropped_connections_equals_a_local_install(served, local, tmp_path):
    proxy = webserver.DroppingProxy(served.http, drops=4, cut=900000)
    try:
        root, spool = fresh_root(tmp_path, "root"), tmp_path / "spool"
        spool.mkdir()
        proc = otaunpack("-x", served.url("SStarOta.bin.gz", port=proxy.port), "--root", root, "-t", spool, *FAST)
    finally:
        proxy.stop()
    assert proc.returncode == 0, proc.stderr
    assert proxy.dropped == 4 and proxy.connections >= 5
    assert snapshot(root) == local
    assert spools(spool) == []  # the spool is removed after success
    assert "downloading" in proc.stderr and "MiB/s" in proc.stderr


def test_no_spool_through_dropped_connections(served, local, tmp_path):
    proxy = webserver.DroppingProxy(served.http, drops=3, cut=1500000)
    try:
        root, spool = fresh_root(tmp_path, "root"), tmp_path / "spool"
        spool.mkdir()
        proc = otaunpack("-x", served.url("SStarOta.bin.gz", port=proxy.port), "--root", root, "-t", spool,
                         "--no-spool", "-q", *FAST)
    finally:
        proxy.stop()
    assert proc.returncode == 0, proc.stderr
    assert proxy.dropped == 3
    assert snapshot(root) == local and spools(spool) == []


def test_https_with_the_test_ca_and_a_wrong_ca_refused(served, local, tmp_path):
    root = fresh_root(tmp_path, "root")
    proc = otaunpack("-x", served.url("SStarOta.bin.gz", tls=True), "--root", root, "-t", tmp_path,
                     "--ca", served.ca, "-q", *FAST)
    assert proc.returncode == 0, proc.stderr
    assert snapshot(root) == local
    other = fresh_root(tmp_path, "other")
    before = snapshot(other)
    proc = otaunpack("-x", served.url("SStarOta.bin.gz", tls=True), "--root", other, "-t", tmp_path,
                     "--ca", served.other_ca, "-q", *FAST)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "certificate is not trusted" in lines[0], proc.stderr
    assert snapshot(other) == before


def test_a_file_replaced_between_the_no_spool_passes_writes_nothing(served, tmp_path):
    """The package's begin script replaces the file on the server (between pass 1 and the
    apply pass): the later pass is refused and no partition changes."""
    www = served.root
    replacement = build(tmp_path / "other.bin.gz", 7)
    raw = tmp_path / "swap.bin"
    begin = tmp_path / "begin.sh"
    begin.write_text("cp %s %s/swap.tmp && mv %s/swap.tmp %s/swap.bin.gz\n" % (replacement, www, www, www))
    assert subprocess.run([sys.executable, "-m", "sstarota.cli.otapack", "-c", raw, "-b", begin]).returncode == 0
    for i in (3, 4):
        part = tmp_path / ("p%d" % i)
        part.write_bytes(image(10 + i))
        assert subprocess.run([sys.executable, "-m", "sstarota.cli.otapack", "-a", raw, "-s", part, "-d",
                               "/dev/mtdblock%d" % i, "-t", hex(PART), "--block-update"]).returncode == 0
    (www / "swap.bin.gz").write_bytes(gzip.compress(raw.read_bytes(), 1))
    os.utime(www / "swap.bin.gz", (1000000000, 1000000000))
    root = fresh_root(tmp_path, "root")
    before = snapshot(root)
    proc = otaunpack("-x", served.url("swap.bin.gz"), "--root", root, "-t", tmp_path, "--no-spool", "-q", *FAST)
    assert proc.returncode == 1, proc.stderr
    assert "changed on the server since it was first read" in proc.stderr.strip().splitlines()[-1], proc.stderr
    assert snapshot(root) == before


def test_404_and_a_silent_server_give_one_line_each(served, tmp_path):
    root = fresh_root(tmp_path, "root")
    before = snapshot(root)
    proc = otaunpack("-x", served.url("missing.bin.gz"), "--root", root, "-t", tmp_path, *FAST)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == ["otaunpack: error: cannot download %s: HTTP 404 Not Found"
                                        % served.url("missing.bin.gz")]
    silent = webserver.Silent()
    try:
        url = "http://127.0.0.1:%d/SStarOta.bin.gz" % silent.port
        proc = otaunpack("-x", url, "--root", root, "-t", tmp_path, "--timeout", "0.3", "--retries", "0")
    finally:
        silent.stop()
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == ["otaunpack: error: cannot download %s: no answer within 0.3 s" % url]
    assert snapshot(root) == before and spools(tmp_path) == []


def test_no_room_under_t_is_refused_before_the_download(served, tmp_path, monkeypatch):
    from sstarota import sources

    class Tiny:
        f_bavail, f_frsize = 10, 4096

    monkeypatch.setattr(sources.os, "statvfs", lambda path: Tiny)
    with pytest.raises(sources.InputError, match="work directory .* has 40960 bytes free"):
        sources.open_source(served.url("SStarOta.bin.gz"), tmpdir=str(tmp_path))
    assert spools(tmp_path) == []


def test_proxy_from_the_environment(served, local, tmp_path, monkeypatch):
    """http_proxy names nginx itself, which serves an absolute-URL request as its own."""
    root = fresh_root(tmp_path, "root")
    env = dict(os.environ, http_proxy="http://127.0.0.1:%d" % served.http, no_proxy="")
    url = "http://sstarota.invalid/SStarOta.bin.gz"
    proc = subprocess.run([sys.executable, "-m", "sstarota.cli.otaunpack", "-x", url, "--root", str(root), "-t",
                           str(tmp_path), "-q"] + FAST, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    assert snapshot(root) == local


def test_a_file_install_imports_no_http_module(served, tmp_path):
    probe = ("import sys\nfrom sstarota.cli import otaunpack\ncode = otaunpack.main(sys.argv[1:])\n"
             "sys.stderr.write('MODULES ' + ' '.join(sorted(sys.modules)) + '\\n')\nsys.exit(code)\n")
    root = fresh_root(tmp_path, "root")
    proc = subprocess.run([sys.executable, "-c", probe, "-x", served.root / "SStarOta.bin.gz", "--root", root, "-q"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    mods = proc.stderr.rsplit("MODULES ", 1)[1].split()
    assert not [m for m in mods if m.split(".")[0] in ("http", "ssl", "socket") or m == "sstarota.netsource"]


def test_a_file_replaced_mid_download_is_refused_not_mixed(served, tmp_path):
    """The spool download drops; before it resumes the file is replaced: the resumed request
    is pinned to the first ETag (If-Match), so the server's 412 ends it with one line."""
    www = served.root
    (www / "moving.bin.gz").write_bytes((www / "SStarOta.bin.gz").read_bytes())

    def replace():
        build(tmp_path / "new.bin.gz", 9)
        os.replace(tmp_path / "new.bin.gz", www / "moving.bin.gz")
        os.utime(www / "moving.bin.gz", (1000000000, 1000000000))

    proxy = webserver.DroppingProxy(served.http, drops=1, cut=900000, on_drop=replace)
    try:
        root = fresh_root(tmp_path, "root")
        before = snapshot(root)
        proc = otaunpack("-x", served.url("moving.bin.gz", port=proxy.port), "--root", root, "-t", tmp_path, "-q",
                         *FAST)
    finally:
        proxy.stop()
    assert proc.returncode == 2
    assert proc.stderr.strip().endswith("changed on the server since it was first read (precondition failed)")
    assert snapshot(root) == before and spools(tmp_path) == []


def test_a_server_without_range_support_is_an_error_after_a_drop(served, tmp_path):
    """Python's http.server ignores Range: after a drop, its 200 to a ranged request ends the
    download with one line (never a mix of two answers, never a hang)."""
    import functools
    import http.server
    import threading

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served.root))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    proxy = webserver.DroppingProxy(server.server_address[1], drops=1, cut=900000)
    try:
        proc = otaunpack("-x", "http://127.0.0.1:%d/SStarOta.bin.gz" % proxy.port, "--root",
                         fresh_root(tmp_path, "root"), "-t", tmp_path, "-q", *FAST)
    finally:
        proxy.stop()
        server.shutdown()
        server.server_close()
    assert proc.returncode == 2
    assert len(proc.stderr.splitlines()) == 1 and "cannot resume" in proc.stderr


def test_url_options_need_a_url_and_numbers(tmp_path):
    proc = otaunpack("-x", tmp_path / "p.bin.gz", "--no-spool")
    assert proc.returncode == 2 and "--no-spool and --ca go with an http:// or https:// package URL" in proc.stderr
    proc = otaunpack("-x", "http://127.0.0.1:1/p.bin.gz", "--timeout", "soon")
    assert proc.returncode == 2 and "Invalid value for '--timeout'" in proc.stderr
    proc = otaunpack("-x", "ftp://127.0.0.1/p.bin.gz")
    assert proc.returncode == 2 and "cannot open package ftp://" in proc.stderr


def test_a_python_without_ssl_refuses_https_in_one_line(monkeypatch):
    from sstarota import netsource

    monkeypatch.setattr(netsource, "ssl", None)
    with pytest.raises(netsource.InputError, match="no ssl module .* https:// URLs cannot be verified"):
        netsource.Remote("https://127.0.0.1:1/p.bin.gz").get(0)


def test_download_progress_reaches_the_json_renderer(served, tmp_path):
    events = tmp_path / "events.jsonl"
    root = fresh_root(tmp_path, "root")
    with open(events, "w") as f:
        proc = subprocess.run([sys.executable, "-m", "sstarota.cli.otaunpack", "-x", served.url("SStarOta.bin.gz"),
                               "--root", str(root), "-t", str(tmp_path), "-q", "--progress-fd", str(f.fileno())],
                              capture_output=True, text=True, pass_fds=(f.fileno(),))
    assert proc.returncode == 0, proc.stderr
    import json

    stages = [json.loads(line) for line in events.read_text().splitlines()]
    down = [e for e in stages if e["stage"] == "downloading"]
    mib = (served.root / "SStarOta.bin.gz").stat().st_size / 1048576.0
    assert down and down[-1]["message"].startswith("%.1f MiB of %.1f MiB at " % (mib, mib))
    order = [e["stage"] for e in stages]
    assert order.index("downloading") < order.index("verifying") and order[-1] == "done"

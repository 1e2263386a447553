"""otaunpack -x URL: packages served by a real nginx on the loopback, through a proxy that
drops connections, over HTTPS with a test CA; --no-spool and a file replaced between passes;
a 404 and a server that never answers."""

import gzip
import os
import random
import subprocess
import sys

import pytest

from sstarota import netsource, packer, schema, sources
from sstarota.cli import otaunpack as otaunpack_cli

import webserver
from support import otaunpack, otaunpack_events, snapshot

pytestmark = pytest.mark.skipif(not webserver.have_nginx(), reason="needs nginx and openssl")

PART = 3 << 20
FAST = ["--timeout", "2", "--retries", "3", "--time-limit", "60"]


def image(seed, size=PART - 4096):
    return random.Random(seed).randbytes(size)


def build_gz(path, seed):
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


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    base = tmp_path_factory.mktemp("www")
    www = base / "www"
    www.mkdir()
    build_gz(www / "SStarOta.bin.gz", 1)
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
    replacement = build_gz(tmp_path / "other.bin.gz", 7)
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

    build_gz(tmp_path / "new.bin.gz", 9)  # made before: the swap at the drop is quicker than --timeout

    def replace():
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
    root = fresh_root(tmp_path, "root")
    proc, stages = otaunpack_events(tmp_path / "events.jsonl", "-x", served.url("SStarOta.bin.gz"), "--root", root,
                                    "-t", tmp_path, "-q")
    assert proc.returncode == 0, proc.stderr
    down = [e for e in stages if e["stage"] == "downloading"]
    mib = (served.root / "SStarOta.bin.gz").stat().st_size / 1048576.0
    assert down and down[-1]["message"].startswith("%.1f MiB of %.1f MiB at " % (mib, mib))
    order = [e["stage"] for e in stages]
    assert order.index("downloading") < order.index("verifying") and order[-1] == "done"


# ---------------------------------------------------------------------------- hostile servers (issue 20)
# A scripted server (webserver.Scripted) answers as a test says: slow, lying, malformed. The
# library is driven in-process where the outcome is a DownloadError's reason word; the CLI where
# it is an exit code.


SMALL = 96 << 10
QUICK = netsource.Net(timeout=2, retries=2, time_limit=1)


def small_package(seed, gz=True):
    """Raw bytes of a package of two block records of SMALL bytes each (gzip unless gz=False),
    and the offset where the second record starts."""
    specs = [packer.RecordSpec(schema.OP_BLOCK, "/dev/mtdblock%d" % i,
                               packer.BytesData(image(seed + i, SMALL), "p%d" % i), dst_size=PART) for i in (3, 4)]
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "p.bin")
        packer.build(path, specs, "0.4")
        raw = open(path, "rb").read()
    second = len(raw) - SMALL - 288  # header of 0.4 records: 288 bytes
    return (gzip.compress(raw, 1) if gz else raw), second


@pytest.fixture(scope="module")
def pkg():
    return small_package(20)[0]


@pytest.fixture(scope="module")
def pkg_root(pkg, tmp_path_factory):
    """What installing pkg from a file gives."""
    tmp = tmp_path_factory.mktemp("pkgroot")
    (tmp / "p.bin.gz").write_bytes(pkg)
    root = fresh_root(tmp, "root")
    proc = otaunpack("-x", tmp / "p.bin.gz", "--root", root, "-q")
    assert proc.returncode == 0, proc.stderr
    return snapshot(root)


def fetch(url, net=QUICK, spool_dir=None, spool=True):
    """Every pass's bytes of a URL source, as the installer reads them (one pass if spooled)."""
    src = sources.open_source(url, tmpdir=spool_dir, net=net, spool=spool)
    try:
        with src.stream() as s:
            return s.read()
    finally:
        src.close()


def reason(url, **kw):
    with pytest.raises(netsource.DownloadError) as info:
        fetch(url, **kw)
    assert "\n" not in str(info.value)
    return info.value.reason


def head_ok(length, extra=()):
    return answer(200, [("Content-Length", length), ("Connection", "close")] + list(extra))


answer, ranged, drip, Scripted = webserver.answer, webserver.ranged, webserver.drip, webserver.Scripted


# item 7: --time-limit bounds the whole pass, whatever the server does

@pytest.mark.parametrize("where", ["status", "headers", "body", "chunk-line", "chunk-data"])
@pytest.mark.parametrize("spool", [True, False])
def test_a_dripping_server_is_stopped_by_the_time_limit(where, spool, pkg, tmp_path):
    import time

    def script(req):
        if where == "status":
            return drip(b"HTTP/1.1 200 OK" + b"K" * 400, 0.02)
        if where == "headers":
            return [b"HTTP/1.1 200 OK\r\n"] + list(drip(b"X-Slow: " + b"a" * 400, 0.02))
        if where == "body":
            return [head_ok(len(pkg))] + list(drip(pkg, 0.02))
        head = answer(200, [("Transfer-Encoding", "chunked"), ("Connection", "close")])
        if where == "chunk-line":
            return [head] + list(drip(b"10;" + b"x" * 400, 0.02))
        return [head, b"%x\r\n" % len(pkg)] + list(drip(pkg, 0.02))

    with Scripted(script, max_seconds=6) as server:
        start = time.monotonic()
        assert reason(server.url(), spool=spool, spool_dir=tmp_path) == "time-limit"
        assert time.monotonic() - start < QUICK.time_limit + 2
    assert spools(tmp_path) == []


# item 8: no validator: a resume must not mix two files

def serve_then_replace(first, then, cut, validators=()):
    """Connection 0 serves `first` and drops after `cut` bytes of it; later ones serve `then`
    (honouring Range), as a server whose file was replaced during the drop."""

    def script(req):
        if req.n == 0:
            return ranged(first, req, validators, length=cut)
        return ranged(then, req, validators)

    return Scripted(script)


def test_without_a_validator_a_file_replaced_mid_download_is_refused_not_mixed(tmp_path):
    """Raw packages A and B differ in both records; the download of A drops at B's second record
    and the server then has B: resumed by Range, A's first record and B's second install
    (each record's checksum holds). Without ETag or Last-Modified, the resume reads from 0 and
    checks the bytes already read against their hash."""
    a, second = small_package(30, gz=False)
    b, _ = small_package(40, gz=False)
    assert len(a) == len(b)
    root = fresh_root(tmp_path, "root")
    before = snapshot(root)
    with serve_then_replace(a, b, second) as server:
        code = otaunpack("-r", server.url("/p.bin"), "--root", root, "-t", tmp_path, "-q", *FAST)
        assert [r.range_start() for r in server.requests] == [None, None]
    assert code.returncode == 2, code.stderr
    assert snapshot(root) == before and spools(tmp_path) == []
    with serve_then_replace(a, b, second) as server:
        assert reason(server.url("/p.bin"), spool=False) == "changed"


@pytest.mark.parametrize("spool", [True, False])
def test_without_a_validator_a_resume_of_the_same_file_succeeds(spool, pkg, tmp_path):
    with serve_then_replace(pkg, pkg, len(pkg) // 2) as server:
        assert fetch(server.url(), spool=spool, spool_dir=tmp_path) == gzip.decompress(pkg)
        assert [r.range_start() for r in server.requests] == [None, None]


def test_with_a_validator_a_resume_asks_a_range(pkg, tmp_path):
    etag = [("ETag", '"v1"')]
    with serve_then_replace(pkg, pkg, len(pkg) // 2, etag) as server:
        assert fetch(server.url(), spool_dir=tmp_path) == gzip.decompress(pkg)
        assert [r.range_start() for r in server.requests] == [None, len(pkg) // 2]
        assert server.requests[1].headers.get("if-match") == '"v1"'


# item 9: no downgrade from https to http

@pytest.fixture(scope="module")
def tls(served):
    return (served.dir / "server.crt", served.dir / "server.key"), served.ca


def test_an_https_redirect_to_http_is_refused(tls, pkg, tmp_path):
    with Scripted(lambda req: ranged(pkg, req)) as plain:
        target = plain.url()
        with Scripted(lambda req: [answer(302, [("Location", target), ("Content-Length", 0)])], tls=tls[0]) as s:
            net = netsource.Net(timeout=2, retries=2, time_limit=5, ca=str(tls[1]))
            assert reason(s.url(), net=net, spool_dir=tmp_path) == "downgrade"
            assert len(s.requests) == 1
        assert plain.requests == []
        # https to https (and http to https) is followed
        with Scripted(lambda req: [answer(302, [("Location", target), ("Content-Length", 0)])]) as s:
            assert fetch(s.url(), spool_dir=tmp_path) == gzip.decompress(pkg)


# item 10: user:password in a URL: Basic auth, never printed, never sent elsewhere

def basic(user, password):
    import base64

    return "Basic " + base64.b64encode(("%s:%s" % (user, password)).encode()).decode()


def test_user_and_password_log_in_with_basic_auth_and_are_never_printed(pkg, pkg_root, tmp_path, cli):
    want = basic("ota", "se cret@1")

    def script(req):
        if req.headers.get("authorization") != want:
            return [answer(401, [("WWW-Authenticate", 'Basic realm="x"'), ("Content-Length", 0)])]
        if req.target == "/gone":
            return [answer(404, [("Content-Length", 0)])]
        return ranged(pkg, req)

    with Scripted(script) as server:
        root = fresh_root(tmp_path, "root")
        code, out, err = cli(otaunpack_cli.main, "-x", server.url(userinfo="ota:se%20cret%401@"), "--root", root,
                             "-t", tmp_path, "-q", *FAST)
        assert code == 0, err
        assert snapshot(root) == pkg_root
        assert server.requests[0].target == "/p.bin.gz"
        assert server.requests[0].headers["host"] == "127.0.0.1:%d" % server.port
        code, out, err = cli(otaunpack_cli.main, "-x", server.url("/gone", userinfo="ota:se%20cret%401@"), "--root",
                             root, "-t", tmp_path, "-q", *FAST)
        assert code == 2 and len(err.splitlines()) == 1
        code, out, err2 = cli(otaunpack_cli.main, "-x", server.url(userinfo="ota:wrong@"), "--root", root,
                              "-t", tmp_path, "-q", *FAST)
        assert code == 2 and len(err2.splitlines()) == 1
    for text in (err, err2):
        assert "cret" not in text and "wrong" not in text


def test_credentials_go_neither_into_a_proxy_request_line_nor_to_another_host(pkg, tmp_path, monkeypatch):
    with Scripted(lambda req: ranged(pkg, req)) as proxy:
        monkeypatch.setenv("http_proxy", "http://127.0.0.1:%d" % proxy.port)
        monkeypatch.setenv("no_proxy", "")
        assert fetch("http://ota:pw@sstarota.invalid:81/p.bin.gz", spool_dir=tmp_path) == gzip.decompress(pkg)
        req = proxy.requests[0]
        assert req.target == "http://sstarota.invalid:81/p.bin.gz" and req.headers["host"] == "sstarota.invalid:81"
        assert req.headers["authorization"] == basic("ota", "pw")
    monkeypatch.delenv("http_proxy")
    with Scripted(lambda req: ranged(pkg, req)) as other:
        there = other.url()
        with Scripted(lambda req: [answer(302, [("Location", there), ("Content-Length", 0)])]) as first:
            assert fetch(first.url(userinfo="ota:pw@"), spool_dir=tmp_path) == gzip.decompress(pkg)
            assert first.requests[0].headers["authorization"] == basic("ota", "pw")
        assert "authorization" not in other.requests[0].headers


# item 11: one line, never a traceback, for bad URLs, redirects and proxies

BAD_LOCATIONS = ["http://127.0.0.1:99999/p", "http://127.0.0.1:port/p", "http://[::1/p", "http://\xfc.example/p",
                 "/\xfcber.bin.gz", "ftp://127.0.0.1/p", "http://%s/p" % ("a" * 64), "http://127.0.0.1:1/a b"]


@pytest.mark.parametrize("location", BAD_LOCATIONS)
def test_a_bad_redirect_location_is_one_line(location, tmp_path, cli):
    with Scripted(lambda req: [answer(302, [("Location", location), ("Content-Length", 0)])]) as server:
        assert reason(server.url(), spool_dir=tmp_path) == "bad-redirect"
        code, out, err = cli(otaunpack_cli.main, "-x", server.url(), "-t", tmp_path, "-q", *FAST)
        assert len(server.requests) == 2
    assert code == 2 and len(err.splitlines()) == 1, err


BAD_URLS = ["http://127.0.0.1:99999/p.bin.gz", "http://127.0.0.1:x/p.bin.gz", "http://[::1/p.bin.gz",
            "http://127.0.0.1/a b.bin.gz", "http://127.0.0.1/\xfc.bin.gz", "http:///p.bin.gz",
            "http://127.0.0.1/p\r\nX: y"]


@pytest.mark.parametrize("url", BAD_URLS + ["http://u:SeCr/et@127.0.0.1/p", "http://u:SeCr[et@127.0.0.1/p"])
def test_a_bad_url_is_one_line(url, tmp_path, cli):
    code, out, err = cli(otaunpack_cli.main, "-x", url, "-t", tmp_path, "-q", *FAST)
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "SeCr" not in err, err
    with pytest.raises(netsource.DownloadError) as info:
        fetch(url, spool_dir=tmp_path)
    assert info.value.reason == "bad-url"


@pytest.mark.parametrize("proxy", ["http://[::1", "http://127.0.0.1:99999", "http://127.0.0.1:x", "http://u:p@:3/"])
def test_a_bad_proxy_is_one_line_without_its_password(proxy, tmp_path, cli, monkeypatch):
    monkeypatch.setenv("http_proxy", proxy)
    monkeypatch.setenv("no_proxy", "")
    code, out, err = cli(otaunpack_cli.main, "-x", "http://127.0.0.1:1/p.bin.gz", "-t", tmp_path, "-q", *FAST)
    assert code == 2 and len(err.splitlines()) == 1 and ":p@" not in err, err
    with pytest.raises(netsource.DownloadError) as info:
        fetch("http://127.0.0.1:1/p.bin.gz", spool_dir=tmp_path)
    assert info.value.reason == "bad-proxy"


@pytest.mark.parametrize("coding", ["gzip", "x-gzip"])
@pytest.mark.parametrize("spool", [True, False])
def test_a_gzip_content_encoding_installs_under_x(coding, spool, pkg, pkg_root, tmp_path, cli):
    """A server that compresses the answer (Content-Encoding: gzip over the .gz: two layers), or
    labels the .gz file itself so (Apache's AddEncoding x-gzip: one layer)."""
    for body in (gzip.compress(pkg, 1), pkg):
        with Scripted(lambda req: ranged(body, req, extra=[("Content-Encoding", coding)])) as server:
            root = fresh_root(tmp_path, "root-%d" % len(body))
            code, out, err = cli(otaunpack_cli.main, "-x", server.url(), "--root", root, "-t", tmp_path, "-q",
                                 *FAST + ([] if spool else ["--no-spool"]))
        assert code == 0, err
        assert snapshot(root) == pkg_root


def test_an_unknown_content_encoding_is_refused(pkg, tmp_path):
    with Scripted(lambda req: ranged(pkg, req, extra=[("Content-Encoding", "br")])) as server:
        assert reason(server.url(), spool_dir=tmp_path) == "encoding"
        assert len(server.requests) == 1


TRAILING = "9 byte(s) after the end of the gzip data ignored"


@pytest.mark.parametrize("how", ["file", "spool", "no-spool", "stdin"])
def test_bytes_after_the_gzip_data_give_one_warning_from_every_source(how, pkg, pkg_root, tmp_path):
    body = pkg + b"SIGNATURE"
    (tmp_path / "p.bin.gz").write_bytes(body)
    root = fresh_root(tmp_path, "root")
    with Scripted(lambda req: ranged(body, req)) as server:
        where = {"file": tmp_path / "p.bin.gz", "stdin": "-"}.get(how, server.url())
        proc = subprocess.run([sys.executable, "-m", "sstarota.cli.otaunpack", "-x", str(where), "--root", str(root),
                               "-t", str(tmp_path), "-q"] + FAST + (["--no-spool"] if how == "no-spool" else []),
                              input=body if how == "stdin" else None, capture_output=True)
    err = proc.stderr.decode()
    assert proc.returncode == 0, err
    assert [ln for ln in err.splitlines() if "after the end of the gzip data" in ln] == [
        "otaunpack: warning: %s: %s (not package data)" % ("<stdin>" if how == "stdin" else where, TRAILING)]
    assert snapshot(root) == pkg_root


# item 12: retry only what can change; a stop before writing writes nothing and says so

PERMANENT = {
    "headers": [answer(200, [("X-H%d" % i, "v") for i in range(120)])],
    "long-header": [answer(200, [("X-Long", "v" * 70000)])],
    "big-head": [answer(200, [("X-Big-%d" % i, "v" * 8000) for i in range(12)])],  # 96 KB in 12 lines
    "status-line": [b"HTTP/1.1 200 OK" + b"K" * 70000 + b"\r\n\r\n"],
    "garbage": [b"SSH-2.0-OpenSSH_9.2\r\n\r\n"],
    "protocol": [b"HTTP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n"],
    "transfer-encoding": [answer(200, [("Transfer-Encoding", "gzip, chunked")]) + b"0\r\n\r\n"],
}


@pytest.mark.parametrize("what", sorted(PERMANENT))
def test_an_answer_no_retry_can_mend_is_not_retried(what, tmp_path):
    with Scripted(lambda req: PERMANENT[what]) as server:
        net = netsource.Net(timeout=2, retries=8, time_limit=30)
        assert reason(server.url(), net=net, spool_dir=tmp_path) == "protocol"
        assert server.connections == 1


def test_transient_failures_are_retried(pkg, tmp_path):
    def script(req):
        if req.n == 0:
            return [answer(503, [("Content-Length", 0)])]
        if req.n == 1:
            return []  # closed without an answer
        return ranged(pkg, req)

    with Scripted(script) as server:
        assert fetch(server.url(), spool_dir=tmp_path) == gzip.decompress(pkg)
        assert server.connections == 3


@pytest.mark.parametrize("spool", [True, False])
def test_sigterm_during_the_download_writes_nothing_and_says_so(spool, pkg, tmp_path):
    import signal

    def script(req):
        return [head_ok(len(pkg)), pkg[:1000], Scripted.REACHED] + list(drip(pkg[1000:1100], 0.1))

    root = fresh_root(tmp_path, "root")
    before = snapshot(root)
    with Scripted(script) as server:
        proc = subprocess.Popen([sys.executable, "-m", "sstarota.cli.otaunpack", "-x", server.url(), "--root",
                                 str(root), "-t", str(tmp_path), "-q"] + FAST + ([] if spool else ["--no-spool"]),
                                stderr=subprocess.PIPE, text=True)
        try:
            assert server.reached.wait(20)
            proc.send_signal(signal.SIGTERM)
            err = proc.communicate(timeout=20)[1]
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 3, err
    assert len(err.splitlines()) == 1
    assert snapshot(root) == before and spools(tmp_path) == []


def test_the_time_limit_holds_over_https_too(tls, pkg, tmp_path):
    import time

    with Scripted(lambda req: [head_ok(len(pkg))] + list(drip(pkg, 0.02)), tls=tls[0], max_seconds=6) as server:
        net = netsource.Net(timeout=2, retries=2, time_limit=1, ca=str(tls[1]))
        start = time.monotonic()
        assert reason(server.url(), net=net, spool_dir=tmp_path) == "time-limit"
        assert time.monotonic() - start < net.time_limit + 2


@pytest.mark.parametrize("url, want", [
    ("http://u:pw@h/p", "http://u:***@h/p"), ("http://u@h/p", "http://u@h/p"), ("http://u:p@w@h/p", "http://u:***@h/p"),
    ("http://u:pa/ss@h/p", "http://u:***@h/p"), ("http://u:pa?ss@h/p", "http://u:***@h/p"),
    ("http://h:8080/a@2x.bin", "http://h:8080/a@2x.bin"), ("http://h/a@b", "http://h/a@b"),
    ("http://u:pw@[::1/p", "http://u:***@[::1/p"), ("no url", "no url")])
def test_messages_show_a_url_without_its_password(url, want):
    assert netsource.shown(url) == want


def test_basic_auth_from_the_environment_where_ps_cannot_read_it(pkg, tmp_path, monkeypatch):
    monkeypatch.setenv(netsource.AUTH_ENV, "ota:pw")
    with Scripted(lambda req: ranged(pkg, req)) as server:
        assert fetch(server.url(), spool_dir=tmp_path) == gzip.decompress(pkg)
        assert server.requests[0].headers["authorization"] == basic("ota", "pw")
        assert fetch(server.url(userinfo="url:own@"), spool_dir=tmp_path) == gzip.decompress(pkg)
        assert server.requests[1].headers["authorization"] == basic("url", "own")


def test_the_time_limit_holds_over_a_name_lookup_that_never_ends(tmp_path, monkeypatch):
    import threading
    import time

    release = threading.Event()
    real = netsource.socket.getaddrinfo

    def stuck(host, *args, **kw):
        if host == "stuck.invalid":
            release.wait(30)
            raise netsource.socket.gaierror("stuck")
        return real(host, *args, **kw)

    for name in ("http_proxy", "HTTP_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(netsource.socket, "getaddrinfo", stuck)
    try:
        start = time.monotonic()
        assert reason("http://stuck.invalid:1/p.bin.gz", spool_dir=tmp_path) == "time-limit"
        assert time.monotonic() - start < QUICK.time_limit + 2
    finally:
        release.set()

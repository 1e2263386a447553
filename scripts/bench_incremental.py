"""scripts/bench incremental: incremental packages against full ones, and URL installs against curl.

1. The test image sets of tests/test_incremental.py (a raw kernel with a few bytes changed,
   a squashfs made twice, an unchanged partition, a logo whose delta does not pay, a ubifs
   image) and a larger set (an 8 MiB raw kernel with 300 scattered edits in place of the
   small one): the incremental package's gzip size against the full package's, and the
   time otapack --incremental takes.
2. A 32 MiB package served by nginx on the loopback (tests/webserver.py): curl of the file
   into -t, our download alone (UrlSource spooling it), and otaunpack -x URL against
   otaunpack -x FILE; the overhead of the URL install is (URL install - file install),
   shown against curl's time. Best of 5 each, same run.
"""

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
MiB = 1 << 20


def _best(n, fn):
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def _incremental(tool, old, new, config, out):
    t0 = time.perf_counter()
    p = subprocess.run([tool("otapack"), "-c", str(out), "--incremental", str(old), str(new), "--config",
                        str(config), "--json"], capture_output=True, text=True, check=True)
    return json.loads(p.stdout), time.perf_counter() - t0


def _line(name, r, secs):
    choices = " ".join("%s=%s" % (c["partition"], c["choice"]) for c in r["partitions"])
    print("  %-22s incremental %9d B   full %9d B   %5.1f%%   %.2f s   (%s)"
          % (name, r["package_gz"], r["full_gz"], 100.0 * r["package_gz"] / r["full_gz"], secs, choices))


def bench_sizes(tool, scattered_edits, mixed_data):
    import test_incremental as ti

    print("incremental packages (otapack --incremental, gzip sizes; 0.95 threshold):")
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        (d / "partitions.mk").write_text(ti.CONFIG)
        old, new = ti.image_set(d / "a" / "old", 1), ti.image_set(d / "a" / "new", 2)
        r, secs = _incremental(tool, old, new, d / "partitions.mk", d / "p1.bin")
        _line("test image sets", r, secs)
        base = mixed_data(8 * MiB, 7)
        (old / "kernel").write_bytes(base)
        (new / "kernel").write_bytes(scattered_edits(base, 8)[:8 * MiB])
        (d / "big.mk").write_text(ti.CONFIG.replace("kernel$(PATSIZE) = 0x100000", "kernel$(PATSIZE) = 0x1000000"))
        r, secs = _incremental(tool, old, new, d / "big.mk", d / "p2.bin")
        _line("8 MiB kernel, 300 edits", r, secs)


def bench_url(tool, mixed_data):
    import webserver

    if not webserver.have_nginx() or not shutil.which("curl"):
        print("URL install: skipped (needs nginx, openssl and curl)")
        return
    from sstarota import packer, schema, sources

    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        (d / "www").mkdir()
        (d / "spool").mkdir()
        raw = d / "pkg.bin"
        spec = packer.RecordSpec(schema.OP_BLOCK, "/dev/mtdblock3", packer.BytesData(mixed_data(48 * MiB, 3), "img"),
                                 dst_size=48 * MiB)
        packer.build(str(raw), [spec], "0.4")
        gz = packer.gzip_package(str(raw))
        shutil.move(gz, d / "www" / "SStarOta.bin.gz")
        size = (d / "www" / "SStarOta.bin.gz").stat().st_size
        server = webserver.Nginx(d / "nginx", d / "www")
        try:
            url = server.url("SStarOta.bin.gz")
            root = d / "root"
            (root / "dev").mkdir(parents=True)

            def install(src, *extra):
                (root / "dev" / "mtdblock3").write_bytes(b"")
                subprocess.run([tool("otaunpack"), "-x", str(src), "--root", str(root), "-t", str(d / "spool"), "-q"]
                               + list(extra), check=True)

            t_curl = _best(5, lambda: subprocess.run(["curl", "-sf", "-o", str(d / "spool" / "c.gz"), url],
                                                     check=True))
            t_ours = _best(5, lambda: sources.UrlSource(url, str(d / "spool")).close())
            t_file = _best(5, lambda: install(d / "www" / "SStarOta.bin.gz"))
            t_url = _best(5, lambda: install(url))
            t_nospool = _best(5, lambda: install(url, "--no-spool"))
        finally:
            server.stop()
    print("URL install of a %.1f MiB package from nginx on the loopback (best of 5; on a loaded machine "
          "the overheads vary by a few tenths of a second):" % (size / MiB))
    print("  curl to -t                %6.3f s  (%.0f MiB/s)" % (t_curl, size / MiB / t_curl))
    print("  our download to -t        %6.3f s  (%.0f MiB/s, %.2f x curl; in-process: no start-up)"
          % (t_ours, size / MiB / t_ours, t_ours / t_curl))
    print("  otaunpack -x FILE         %6.3f s" % t_file)
    print("  otaunpack -x URL          %6.3f s  (overhead %.3f s = %.2f x curl's time)"
          % (t_url, t_url - t_file, (t_url - t_file) / t_curl))
    print("  otaunpack -x URL --no-spool %4.3f s  (overhead %.3f s = %.2f x curl's time)"
          % (t_nospool, t_nospool - t_file, (t_nospool - t_file) / t_curl))


def run(tool, scattered_edits, mixed_data):
    bench_sizes(tool, scattered_edits, mixed_data)
    bench_url(tool, mixed_data)

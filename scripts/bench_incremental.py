"""scripts/bench incremental: incremental packages against full ones, and URL installs against curl.

1. The image sets tests/test_incremental.py installs too (a raw kernel with a few bytes changed,
   a squashfs made twice, an unchanged partition, a logo whose delta does not pay, a ubifs
   image) and a larger set (an 8 MiB raw kernel with 300 scattered edits in place of the
   small one): the incremental package's gzip size against the full package's, and the
   time otapack --incremental takes.
2. A 32 MiB package served by nginx on the loopback: curl of the file
   into -t, our download alone (UrlSource spooling it), and otaunpack -x URL against
   otaunpack -x FILE; the overhead of the URL install is (URL install - file install),
   shown against curl's time. Best of 5 each, same run.
"""

import json
import random
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import webserver  # scripts/: nginx on the loopback, as the URL tests serve packages

HERE = Path(__file__).resolve().parent
MiB = 1 << 20

#: the partitions of the image sets, as ALKAID's configs write them (the suffixes come from the
#: image makefile)
CONFIG = """\
# as ALKAID's configs: the suffixes come from the image makefile
OTA_IMAGE_LIST = kernel rootfs logo misc customer
kernel$(OTABLK) = /dev/mtdblock3
kernel$(PATSIZE) = 0x100000
rootfs$(OTABLK) = /dev/mtdblock4
rootfs$(PATSIZE) = 0x200000
rootfs$(FSTYPE) = squashfs
logo$(OTABLK) = /dev/mtdblock2
logo$(PATSIZE) = 0x40000
misc$(OTABLK) = /dev/mtdblock6
misc$(PATSIZE) = 0x20000
misc$(FSTYPE) = fwfs
customer$(OTABLK) = /dev/ubi0_0
customer$(PATSIZE) = 0x400000
customer$(FSTYPE) = ubifs
"""


def _squashfs(tree_dir, out, version):
    t = tree_dir / ("tree-%d" % version)
    (t / "etc").mkdir(parents=True)
    rnd = random.Random(5)
    (t / "bin").mkdir()
    (t / "bin" / "busybox").write_bytes(rnd.randbytes(300000))
    for i in range(40):
        (t / "etc" / ("conf%02d.ini" % i)).write_text("[section]\nkey=%d\n" % i * 30)
    (t / "etc" / "version").write_text("build %d\n" % version)
    subprocess.run(["mksquashfs", str(t), str(out), "-noappend", "-all-root", "-quiet", "-mkfs-time", "0",
                    "-all-time", "0"], check=True, stdout=subprocess.DEVNULL)


def _ubifs(tree_dir, out, version):
    t = tree_dir / ("ubi-%d" % version)
    t.mkdir()
    (t / "data.txt").write_text("customer data, build %d\n" % version * 100)
    if shutil.which("mkfs.ubifs"):
        subprocess.run(["mkfs.ubifs", "-r", str(t), "-m", "2048", "-e", "126976", "-c", "64", "-o", str(out)],
                       check=True)
    else:  # packed whole whatever it holds: any bytes stand for one
        out.write_bytes(random.Random(version).randbytes(200000))


def image_set(d, version):
    """Version 1 or 2 of the images: a raw kernel with a few bytes changed, a squashfs made
    twice, a logo whose delta does not pay, an unchanged partition, a ubifs image."""
    d.mkdir(parents=True)
    kernel = bytearray(random.Random(1).randbytes(700000))
    if version == 2:
        for off in (1000, 250000, 600000):
            kernel[off:off + 4] = b"NEW!"
    (d / "kernel").write_bytes(bytes(kernel))
    _squashfs(d.parent, d / "rootfs.sqfs", version)
    (d / "logo").write_bytes(random.Random(100 + version).randbytes(200000))
    (d / "misc.fwfs").write_bytes(b"misc settings\n" * 1000)
    _ubifs(d.parent, d / "customer.ubifs", version)
    return d


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
    print("incremental packages (otapack --incremental, gzip sizes; 0.95 threshold):")
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        (d / "partitions.mk").write_text(CONFIG)
        old, new = image_set(d / "a" / "old", 1), image_set(d / "a" / "new", 2)
        r, secs = _incremental(tool, old, new, d / "partitions.mk", d / "p1.bin")
        _line("test image sets", r, secs)
        base = mixed_data(8 * MiB, 7)
        (old / "kernel").write_bytes(base)
        (new / "kernel").write_bytes(scattered_edits(base, 8)[:8 * MiB])
        (d / "big.mk").write_text(CONFIG.replace("kernel$(PATSIZE) = 0x100000", "kernel$(PATSIZE) = 0x1000000"))
        r, secs = _incremental(tool, old, new, d / "big.mk", d / "p2.bin")
        _line("8 MiB kernel, 300 edits", r, secs)


def bench_url(tool, mixed_data):
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

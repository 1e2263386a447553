"""scripts/bench peers: otaunpack against Debian's SWUpdate and RAUC on the same payloads.

The payload is firmware-like: half a squashfs (of /usr/share, gzip), a quarter ELF (the
system's shared libraries and programs), an eighth random, an eighth 0xFF (erased flash).
Each tool gets it in its own package format, compressed as it compresses:

  ours       otapack 0.4 (byte-sums), 0.4 signed (manifest + Ed25519) and 1.6 (MD5), one
             block record, `otapack --gzip` (level 6); otaunpack -x --root (and
             --allow-devices for the loop device): verify pass, then write pass, fsync.
             otaunpack is what a board runs: the board bundle (scripts/board-bundle, built
             from this tree in the run), started by a Python with nothing installed in it
             (a venv without pip), not the project's editable development install, whose
             import hook costs every start about 20 ms and 2 MiB
  SWUpdate   a .swu (cpio, sw-description signed with CMS: Debian's build refuses unsigned
             images) holding the image gzip -6'ed, "raw" handler; default mode (the image is
             spooled to $TMPDIR and checked, then written) and `installed-directly`
             (streamed, checked at the end). Its time is taken when it logs success: it then
             lingers a fixed 1 s before it exits, which is not counted.
  RAUC       a plain bundle (squashfs, signed), raw slot type, installed through a `rauc
             service` (started before each install and not timed; RAUC runs as a daemon on a
             board) on a private D-Bus; it writes the inactive slot B of an A/B pair.

Targets: an image file, and a loop device over a file when one can be set up. Rounds
alternate the tools (the order rotates every round); each install starts from the same
target state (its first MiB zeroed, so no tool finds the image already in place). For every
install: wall time, CPU time (user + sys; for RAUC the client's and the service's), peak RSS
(the process that does the work: otaunpack, swupdate, the rauc service), and the fsync of
the target afterwards (ours has already synced; the peers have not). Ratios are ours /
theirs within one round, then the median over rounds.
"""

import hashlib
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MiB = 1 << 20
#: GNU time runs every timed command: a small C parent, so that the peak RSS it reports is the
#: command's own (a child forked from this Python process would count this process's pages)
TIME = "/usr/bin/time"
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sstarota-bench"
DEVNULL = subprocess.DEVNULL


# ---------------------------------------------------------------------------- set-up

def ensure_tools():
    """Debian's swupdate and rauc, and what their packaging needs, installed with apt-get."""
    need = {"swupdate": "swupdate", "rauc": "rauc", "mksquashfs": "squashfs-tools", "cpio": "cpio",
            "openssl": "openssl", "gdbus": "libglib2.0-bin", "dbus-daemon": "dbus-daemon", "losetup": "mount",
            TIME: "time"}
    missing = sorted({pkg for prog, pkg in need.items() if not shutil.which(prog)})
    if missing:
        print("peers: apt-get install %s" % " ".join(missing), file=sys.stderr)
        subprocess.run(["apt-get", "install", "-y", "-q"] + missing, check=True, stdout=DEVNULL,
                       env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))


def version_of(package):
    r = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", package], capture_output=True, text=True)
    return "%s %s" % (package, r.stdout.strip() if r.returncode == 0 else "?")


def squashfs_source(need):
    """`need` bytes of a gzip squashfs of /usr/share (made once, kept in the cache)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    sq = CACHE / "usr-share.sqfs"
    if not sq.exists():
        print("peers: making the squashfs part of the payload (once): mksquashfs /usr/share", file=sys.stderr)
        tmp = sq.with_suffix(".tmp")
        subprocess.run(["mksquashfs", "/usr/share", str(tmp), "-comp", "gzip", "-noappend", "-no-progress",
                        "-quiet", "-all-root", "-no-xattrs", "-mkfs-time", "0", "-all-time", "0"],
                       check=True, stdout=DEVNULL)
        tmp.rename(sq)
    with open(sq, "rb") as f:
        data = f.read(need)
    while len(data) < need:
        data += data[:need - len(data)]
    return data


def elf_source(need):
    """`need` bytes of ELF files (shared libraries, programs), in name order."""
    out = bytearray()
    for d in ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib/arm-linux-gnueabihf", "/usr/lib",
              "/usr/bin"):
        if not os.path.isdir(d):
            continue
        for name in sorted(os.listdir(d)):
            p = os.path.join(d, name)
            if os.path.islink(p) or not os.path.isfile(p):
                continue
            try:
                with open(p, "rb") as f:
                    if f.read(4) != b"\x7fELF":
                        continue
                    f.seek(0)
                    out += f.read(need - len(out))
            except OSError:
                continue
            if len(out) >= need:
                return bytes(out)
    while len(out) < need:
        out += out[:need - len(out)]
    return bytes(out)


def make_payload(path, size):
    """Half squashfs, a quarter ELF, an eighth random, an eighth 0xFF."""
    sq, elf, rnd = size // 2, size // 4, size // 8
    rng = random.Random(size)
    with open(path, "wb") as f:
        f.write(squashfs_source(sq))
        f.write(elf_source(elf))
        f.write(rng.getrandbits(8 * rnd).to_bytes(rnd, "little"))
        f.write(b"\xff" * (size - sq - elf - rnd))


# ---------------------------------------------------------------------------- running

class Run:
    """One timed command: wall seconds (to `done` when a line marks it), peak RSS in KiB."""

    def __init__(self, wall, rss_kib, cpu, out=""):
        self.wall, self.rss, self.cpu, self.out = wall, rss_kib, cpu, out
        self.sync = 0.0


def run(cmd, env=None, done_marker=None, rss_file=None):
    """Run cmd under GNU time (its peak RSS). With done_marker, the time is taken at the first
    output line holding it (the tool is done; what follows is its exit)."""
    rss_file = rss_file or "/tmp/sstarota-peers-rss.%d" % os.getpid()
    full = [TIME, "-f", "%M %U %S", "-o", rss_file] + [str(c) for c in cmd]
    t0 = time.perf_counter()
    p = subprocess.Popen(full, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    t_done = None
    lines = []
    for line in p.stdout:
        lines.append(line)
        if done_marker is not None and t_done is None and done_marker in line:
            t_done = time.perf_counter()
    rc = p.wait()
    t_end = time.perf_counter()
    out = b"".join(lines).decode(errors="replace")
    if rc != 0 or (done_marker is not None and t_done is None):
        raise SystemExit("peers: %s failed (%s):\n%s" % (" ".join(map(str, cmd)), rc, out[-3000:]))
    with open(rss_file) as f:
        rss, user, system = f.read().split()[-3:]
    os.unlink(rss_file)
    return Run((t_done or t_end) - t0, int(rss), float(user) + float(system), out)


class RaucService:
    """`rauc service` on a private bus for one install; its peak RSS when stopped."""

    def __init__(self, conf, env):
        self.env = env
        self.p = subprocess.Popen(["rauc", "--conf", str(conf), "--override-boot-slot=A", "service"],
                                  stdout=DEVNULL, stderr=DEVNULL, env=env)
        subprocess.run(["gdbus", "wait", "--system", "--timeout", "20", "de.pengutronix.rauc"], check=True, env=env)

    def stop(self):
        """Stop the service; its VmHWM (the high-water mark of its own memory since exec) and
        its CPU seconds."""
        with open("/proc/%d/status" % self.p.pid) as f:
            hwm = [int(line.split()[1]) for line in f if line.startswith("VmHWM:")][0]
        with open("/proc/%d/stat" % self.p.pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        self.p.send_signal(signal.SIGTERM)
        self.p.wait()
        return hwm, cpu


class Bus:
    """A private dbus-daemon (session policy: anyone may own any name) posing as the system bus."""

    def __init__(self):
        out = subprocess.run(["dbus-daemon", "--session", "--fork", "--nopidfile", "--print-address=1",
                              "--print-pid=1"], capture_output=True, text=True, check=True).stdout.split()
        self.address, self.pid = out[0], int(out[1])
        self.env = dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS=self.address)

    def close(self):
        try:
            os.kill(self.pid, signal.SIGTERM)
        except OSError:
            pass


class Loop:
    """A loop device over a file, or None when the machine has none to give."""

    @staticmethod
    def attach(backing):
        try:
            r = subprocess.run(["losetup", "-f", "--show", str(backing)], capture_output=True, text=True)
        except OSError:
            return None
        dev = r.stdout.strip()
        return dev if r.returncode == 0 and dev.startswith("/dev/") else None

    @staticmethod
    def detach(dev):
        subprocess.run(["losetup", "-d", dev], stdout=DEVNULL, stderr=DEVNULL)


def reset_target(path):
    """The same starting state for every install: the first MiB zeroed and synced."""
    with open(path, "r+b") as f:
        f.write(bytes(MiB))
        f.flush()
        os.fsync(f.fileno())


def sync_time(path):
    t0 = time.perf_counter()
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return time.perf_counter() - t0


def same_prefix(path, digest, size):
    return file_digest(path, size) == digest


def file_digest(path, size):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        left = size
        while left:
            piece = f.read(min(MiB, left))
            if not piece:
                break
            h.update(piece)
            left -= len(piece)
    return h.digest()


# ---------------------------------------------------------------------------- packages

SW_DESCRIPTION = """software = {
  version = "1.0.0";
  hardware-compatibility = [ "1.0" ];
  images: ( {
    filename = "payload.img.gz";
    device = "%(device)s";
    type = "raw";
    compressed = "zlib";
    sha256 = "%(sha)s";%(extra)s
  } );
}
"""


class Packer:
    def __init__(self, tool, w, img):
        self.tool, self.w, self.img = tool, w, img
        self.key = w / "ours-ed25519"
        subprocess.run([tool("otapack"), "--gen-key", self.key, "--key-type", "ed25519"], check=True, stdout=DEVNULL)
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", w / "peer.key", "-out",
                        w / "peer.pem", "-days", "3650", "-subj", "/O=sstarota bench/CN=bench"], check=True,
                       stdout=DEVNULL, stderr=DEVNULL)
        (w / "sw").mkdir()
        (w / "rauc").mkdir()

    def ours(self, kind):
        """otapack -c, -a (block image), [--sign], --gzip: the CLI calls a build makes."""
        pkg = self.w / ("ours-%s.bin" % kind)
        otapack = self.tool("otapack")
        create = {"0.4": ["--format", "0.4"], "0.4s": ["--format", "0.4", "--manifest"], "1.6": ["--format", "1.6"]}
        calls = [["-c", pkg] + create[kind], ["-a", pkg, "-s", self.img, "-d", "/dev/mtdblock4", "--block-update"]]
        if kind == "0.4s":
            calls.append(["-a", pkg, "--sign", self.key])
        calls.append(["--gzip", pkg])
        t0 = time.perf_counter()
        for c in calls:
            subprocess.run([otapack] + c, check=True, stdout=DEVNULL, stderr=DEVNULL)
        return time.perf_counter() - t0

    def swupdate(self, mode):
        """gzip -6 the image, hash it, write and sign sw-description (CMS), cpio -H crc."""
        d = self.w / "sw"
        t0 = time.perf_counter()
        with open(d / "payload.img.gz", "wb") as f:
            subprocess.run(["gzip", "-6", "-n", "-c", self.img], stdout=f, check=True)
        sha = subprocess.run(["sha256sum", d / "payload.img.gz"], capture_output=True, text=True,
                             check=True).stdout.split()[0]
        extra = "\n    installed-directly = true;" if mode == "streamed" else ""
        (d / "sw-description").write_text(SW_DESCRIPTION % dict(device=self.w / "sw-target", sha=sha, extra=extra))
        subprocess.run(["openssl", "cms", "-sign", "-in", d / "sw-description", "-out", d / "sw-description.sig",
                        "-signer", self.w / "peer.pem", "-inkey", self.w / "peer.key", "-outform", "DER",
                        "-nosmimecap", "-binary"], check=True)
        with open(self.w / ("sw-%s.swu" % mode), "wb") as f:
            subprocess.run(["cpio", "-o", "-H", "crc", "--quiet"], input=b"sw-description\nsw-description.sig\n"
                           b"payload.img.gz\n", stdout=f, cwd=str(d), check=True)
        return time.perf_counter() - t0

    def rauc(self):
        """rauc bundle: a plain (squashfs) bundle of the raw image, signed."""
        d = self.w / "rauc" / "content"
        if d.exists():
            shutil.rmtree(d)
        d.mkdir()
        os.link(self.img, d / "rootfs.img")
        (d / "manifest.raucm").write_text("[update]\ncompatible=sstarota-bench\nversion=1.0\n\n[bundle]\n"
                                          "format=plain\n\n[image.rootfs]\nfilename=rootfs.img\n")
        out = self.w / "bundle.raucb"
        if out.exists():
            out.unlink()
        t0 = time.perf_counter()
        subprocess.run(["rauc", "bundle", "--cert", self.w / "peer.pem", "--key", self.w / "peer.key", d, out],
                       check=True, stdout=DEVNULL, stderr=DEVNULL)
        return time.perf_counter() - t0


# ---------------------------------------------------------------------------- one size

def rauc_conf(w, name, target):
    conf = w / ("rauc-%s.conf" % name)
    (w / ("rauc-data-%s" % name)).mkdir(exist_ok=True)
    conf.write_text("[system]\ncompatible=sstarota-bench\nbootloader=noop\nbundle-formats=plain\n"
                    "data-directory=%s\n\n[keyring]\npath=%s\n\n[slot.rootfs.0]\ndevice=%s\ntype=raw\nbootname=A\n\n"
                    "[slot.rootfs.1]\ndevice=%s\ntype=raw\nbootname=B\n"
                    % (w / ("rauc-data-%s" % name), w / "peer.pem", w / "slot-a.img", target))
    return conf


def board_otaunpack(w, rev=None):
    """The command that runs otaunpack as a board does: the bundle (of this tree, or of git
    revision rev), by a bare Python."""
    root = Path(__file__).resolve().parent.parent
    bare = CACHE / "bare-python"
    if not (bare / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True)
    out = w / ("bundle-%s" % (rev or "this"))
    with tempfile.TemporaryDirectory() as src:
        if rev:
            tree = subprocess.run(["git", "-C", str(root), "archive", rev], capture_output=True, check=True).stdout
            subprocess.run(["tar", "-x", "-C", src], input=tree, check=True)
        subprocess.run([sys.executable, "-m", "sstarota.bundle", str(out)], cwd=src if rev else str(root), check=True,
                       env=dict(os.environ, PYTHONPATH=src if rev else str(root)), stdout=DEVNULL)
    return [bare / "bin" / "python", out / "otaunpack"]


def summary(xs):
    return "min %6.3f med %6.3f" % (min(xs), statistics.median(xs))


def ram_tmp(prefix):
    """A temporary directory in RAM (/dev/shm) where the machine has one, as a board's /tmp is
    a tmpfs: the tools' work directories (our -t, SWUpdate's TMPDIR) go there."""
    return tempfile.TemporaryDirectory(prefix=prefix, dir="/dev/shm" if os.path.isdir("/dev/shm") else None)


def bench_size(tool, w, size, rounds, bus, log, against=None):
    img = w / "payload.img"
    make_payload(img, size)
    digest = file_digest(img, size)
    slot = size + MiB
    with open(w / "slot-a.img", "wb") as f:
        f.truncate(slot)
    roots = {}
    targets = {}
    loops = []
    ram = ram_tmp("sstarota-peers-")
    try:
        rf = w / "root-file"
        (rf / "dev").mkdir(parents=True)
        with open(rf / "dev" / "mtdblock4", "wb") as f:
            f.truncate(slot)
        roots["file"], targets["file"] = rf, rf / "dev" / "mtdblock4"
        backing = w / "loop-backing.img"
        with open(backing, "wb") as f:
            f.truncate(slot)
        dev = Loop.attach(backing)
        if dev is None:
            log("  no loop device: the image file only, and RAUC left out")
        else:
            loops.append(dev)
            rl = w / "root-loop"
            (rl / "dev").mkdir(parents=True)
            os.mknod(rl / "dev" / "mtdblock4", 0o600 | 0o060000, os.stat(dev).st_rdev)
            roots["loop"], targets["loop"] = rl, Path(dev)
        # the work directories in RAM, as on a board (ours spools the inflated package there)
        for name in ("swtmp", "t"):
            os.mkdir(os.path.join(ram.name, name))
            os.symlink(os.path.join(ram.name, name), w / name)
        packer = Packer(tool, w, img)
        pack_names = ["ours 0.4", "ours 0.4 signed", "ours 1.6", "swupdate", "rauc bundle"]
        pack_fns = {"ours 0.4": lambda: packer.ours("0.4"), "ours 0.4 signed": lambda: packer.ours("0.4s"),
                    "ours 1.6": lambda: packer.ours("1.6"), "swupdate": lambda: packer.swupdate("spooled"),
                    "rauc bundle": packer.rauc}
        packs = {n: [] for n in pack_names}
        for r in range(rounds):
            order = pack_names[r % len(pack_names):] + pack_names[:r % len(pack_names)]
            for n in order:
                packs[n].append(pack_fns[n]())
        packer.swupdate("streamed")
        sizes = {"ours 0.4": w / "ours-0.4.bin.gz", "ours 1.6": w / "ours-1.6.bin.gz",
                 "swupdate": w / "sw-spooled.swu", "rauc bundle": w / "bundle.raucb"}
        otaunpack = board_otaunpack(w)
        before = board_otaunpack(w, against) if against else None
        pub = str(packer.key) + ".pub"
        swu = ["swupdate", "-k", w / "peer.pem", "-H", "bench:1.0", "-M", "-m", "-l", "3", "-i"]
        sw_env = dict(os.environ, TMPDIR=str(w / "swtmp"))

        def ours(kind, where, cmd=otaunpack):
            extra = ["--allow-devices"] if where == "loop" else []
            extra += ["--key", pub] if kind == "0.4s" else []
            return lambda: run(cmd + ["-x", w / ("ours-%s.bin.gz" % kind), "--root", roots[where], "-t",
                                w / "t", "-q"] + extra)

        def swupdate(mode, where):
            def go():
                link = w / "sw-target"
                if link.is_symlink():
                    link.unlink()
                link.symlink_to(targets[where])
                return run(swu + [w / ("sw-%s.swu" % mode)], env=sw_env, done_marker=b"SWUPDATE successful")
            return go

        def rauc(where):
            def go():
                svc = RaucService(rauc_conf(w, where, targets[where]), bus.env)
                try:
                    r = run(["rauc", "install", w / "bundle.raucb"], env=bus.env)
                finally:
                    rss, cpu = svc.stop()
                r.rss = rss
                r.cpu += cpu  # the client's and the service's
                return r
            return go

        installs = {}
        for where in targets:
            installs["ours 0.4 (%s)" % where] = ours("0.4", where)
            installs["ours 0.4 signed (%s)" % where] = ours("0.4s", where)
            installs["ours 1.6 MD5 (%s)" % where] = ours("1.6", where)
            if before:
                installs["ours 0.4 before (%s)" % where] = ours("0.4", where, before)
            installs["swupdate default (%s)" % where] = swupdate("spooled", where)
            installs["swupdate streamed (%s)" % where] = swupdate("streamed", where)
            if bus is not None and loops:  # RAUC mounts its bundle on a loop device of its own
                installs["rauc slot B (%s)" % where] = rauc(where)
        names = list(installs)
        res = {n: [] for n in names}
        floor = []
        for r in range(rounds):
            order = names[r % len(names):] + names[:r % len(names)]
            floor.append(run(["sh", "-c", 'gzip -dc "$0" > /dev/null', w / "ours-0.4.bin.gz"]).wall)
            for n in order:
                where = n[n.rindex("(") + 1:-1]
                target = targets[where]
                reset_target(target)
                got = installs[n]()
                got.sync = sync_time(target)
                if r == 0 and not same_prefix(target, digest, size):
                    raise SystemExit("peers: %s did not write the image" % n)
                res[n].append(got)
    finally:
        for dev in loops:
            Loop.detach(dev)
        ram.cleanup()
    return packs, sizes, res, floor, list(targets)


def report(size, rounds, packs, sizes, res, floor, wheres):
    print("  %d MiB payload, %d round(s); gzip -dc of our 0.4 package: %s s" % (size, rounds, summary(floor)))
    print("    pack (CLI calls a build makes)      seconds              package MiB")
    for n, xs in packs.items():
        p = sizes.get(n)
        print("      %-32s %s %s" % (n, summary(xs), ("%8.2f" % (p.stat().st_size / MiB)) if p else ""))
    ours = packs["ours 0.4"]
    for n in ("swupdate", "rauc bundle"):
        print("      pack ratio ours 0.4 / %-12s median %.2f" % (n, statistics.median(
            [a / b for a, b in zip(ours, packs[n])])))
    print("    install                              seconds                 + fsync after   peak RSS MiB   / gzip -dc"
          "   CPU s")
    for n, runs in res.items():
        walls = [x.wall for x in runs]
        print("      %-32s %s   %6.3f         %6.1f        %5.2f   %6.3f"
              % (n, summary(walls), statistics.median([x.wall + x.sync for x in runs]),
                 max(x.rss for x in runs) / 1024, statistics.median([a / b for a, b in zip(walls, floor)]),
                 statistics.median([x.cpu for x in runs])))
    for where in wheres:
        for ours_name in ("ours 0.4", "ours 1.6 MD5", "ours 0.4 signed"):
            mine = res["%s (%s)" % (ours_name, where)]
            parts = []
            for peer in ("swupdate default", "swupdate streamed", "rauc slot B"):
                key = "%s (%s)" % (peer, where)
                if key not in res:
                    continue
                theirs = res[key]
                ratio = statistics.median([a.wall / b.wall for a, b in zip(mine, theirs)])
                durable = statistics.median([(a.wall + a.sync) / (b.wall + b.sync) for a, b in zip(mine, theirs)])
                cpu = statistics.median([a.cpu / b.cpu for a, b in zip(mine, theirs) if b.cpu > 0] or [float("nan")])
                parts.append("%s %.2f (durable %.2f, CPU %.2f)" % (peer, ratio, durable, cpu))
            print("    ratio %-15s (%s) / %s" % (ours_name, where, "; ".join(parts)))


def tracked(results):
    """The issue's "Done when" figures, from this run."""
    print("peers: the tracked ratios (ours / theirs, median of per-round ratios; <= 1.0 is reached; CPU time,"
          " user + sys, is the steadier figure on a shared machine)")
    for size, (packs, sizes, res, floor, wheres) in results.items():
        def ratio(a, b):
            if a not in res or b not in res:
                return "n/a"
            wall = statistics.median([x.wall / y.wall for x, y in zip(res[a], res[b])])
            cpu = statistics.median([x.cpu / y.cpu for x, y in zip(res[a], res[b]) if y.cpu > 0] or [float("nan")])
            return "%.2f (CPU time %.2f)" % (wall, cpu)

        if size == 64:
            print("  64 MiB single-copy install (image file), ours 0.4 / SWUpdate default: %s (target <= 1.0)"
                  % ratio("ours 0.4 (file)", "swupdate default (file)"))
            if "loop" in wheres:
                print("  64 MiB into a whole partition (a loop device, standing for an inactive slot; the A/B install "
                      "through u-boot is bench ab), ours 0.4 / SWUpdate"
                      " streamed: %s, / RAUC slot B: %s (target <= 1.0)"
                      % (ratio("ours 0.4 (loop)", "swupdate streamed (loop)"), ratio("ours 0.4 (loop)",
                                                                                  "rauc slot B (loop)")))
        if size == 1:
            print("  1 MiB install, ours 0.4 / SWUpdate default: %s (target <= 2.0)"
                  % ratio("ours 0.4 (file)", "swupdate default (file)"))
        if "ours 0.4 before (file)" in res:
            print("  %3d MiB, ours 0.4 / the same from --against's bundle: image file %s, loop device %s"
                  % (size, ratio("ours 0.4 (file)", "ours 0.4 before (file)"),
                     ratio("ours 0.4 (loop)", "ours 0.4 before (loop)")))
        peak = max(x.rss for k, v in res.items() if k.startswith("ours") and "before" not in k for x in v)
        sw = max(x.rss for k, v in res.items() if k.startswith("swupdate") for x in v)
        print("  %3d MiB peak RSS: ours %.1f MiB, SWUpdate %.1f MiB: ratio %.2f (target <= 1.0)"
              % (size, peak / 1024, sw / 1024, peak / sw))


def bench(args, tool):
    import tempfile

    ensure_tools()
    # every Python module compiled once, as on a board (the bundle carries .pyc); a
    # PYTHONDONTWRITEBYTECODE environment would otherwise compile sstarota on every run
    import sysconfig

    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    subprocess.run([sys.executable, "-m", "compileall", "-q", sysconfig.get_paths()["purelib"],
                    str(Path(__file__).resolve().parent.parent / "sstarota")], stdout=DEVNULL, stderr=DEVNULL)
    print("peers: Debian's %s and %s; otaunpack: the board bundle of this tree, run by %s"
          % (version_of("swupdate"), version_of("rauc"), CACHE / "bare-python" / "bin" / "python"))
    sizes = [int(s) for s in args.sizes.split(",")]
    bus = None
    try:
        bus = Bus()
    except (OSError, subprocess.CalledProcessError, IndexError, ValueError) as exc:
        print("peers: no private D-Bus (%s): RAUC left out" % exc)
    results = {}
    try:
        for size in sizes:
            rounds = args.rounds if size <= 64 else args.big_rounds
            with tempfile.TemporaryDirectory(prefix="sstarota-peers-") as tmp:
                results[size] = bench_size(tool, Path(tmp), size * MiB, rounds, bus, print, args.against)
                report(size, rounds, *results[size])
                sys.stdout.flush()
    finally:
        if bus is not None:
            bus.close()
    tracked(results)

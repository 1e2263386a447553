"""Runs in the guest: otaunpack with --progress-fd on a pipe, stopped at a chosen progress event.

    python3 progress_cut.py [--stage S[,S..]] [--record R] [--nth K] [--events FILE]
                            [--cut FILE --sync DEV ...] -- otaunpack ARGS...

`--progress-fd N` (the pipe) is added to the command. Of the events whose stage is one of
--stage and whose record is --record (each only when given), the K-th (default: the first)
is the hit:

- by default the installer gets SIGKILL at once;
- with --cut, the guest side of a power cut: the installer gets SIGSTOP (frozen where it
  is), the block devices under the flash (--sync, the virtio disks block2mtd sits on) are
  fsynced so that every MTD write the kernel has completed is on the disk, as it would be
  on real flash, and FILE is created; then this waits for the host to kill the VM. No
  filesystem is synced and nothing is unmounted.

Prints one JSON line: {"hit": the event or null, "rc": the installer's exit status,
"events": how many were seen}; --events FILE gets every event as a JSON line.
"""

import argparse
import json
import os
import signal
import subprocess
import sys


def matches(event, a):
    if a.stage and event["stage"] not in a.stage.split(","):
        return False
    if a.record is not None and event["record"] != a.record:
        return False
    return True


def cut(pid, a):
    os.kill(pid, signal.SIGSTOP)
    for dev in a.sync:
        fd = os.open(dev, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    with open(a.cut, "w") as f:
        f.write("%d\n" % pid)
    while True:  # the host kills the VM now
        signal.pause()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--stage")
    ap.add_argument("--record", type=int)
    ap.add_argument("--nth", type=int, default=1)
    ap.add_argument("--events")
    ap.add_argument("--cut")
    ap.add_argument("--sync", nargs="*", default=[])
    ap.add_argument("cmd", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    cmd = a.cmd[1:] if a.cmd[:1] == ["--"] else a.cmd
    r, w = os.pipe()
    p = subprocess.Popen(cmd + ["--progress-fd", str(w)], pass_fds=(w,), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    os.close(w)
    seen, hit, matched = [], None, 0
    with os.fdopen(r, "r") as events:
        for line in events:
            seen.append(line)
            event = json.loads(line)
            if hit is None and matches(event, a):
                matched += 1
            if hit is None and matched == a.nth:
                hit = event
                if a.cut:
                    cut(p.pid, a)
                p.kill()
    out, err = p.communicate()
    if a.events:
        with open(a.events, "w") as f:
            f.writelines(seen)
    print(json.dumps({"hit": hit, "rc": p.returncode, "events": len(seen), "err": err.decode(errors="replace")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

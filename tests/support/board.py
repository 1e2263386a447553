"""What the board rigs' tests share on the host side."""

import hashlib
import re

#: the armhf board: the board bundle's otaunpack, where the fixture puts it; the installer's
#: work directory, on the data disk (not in RAM)
ARM_OTAUNPACK = "/mnt/work/bundle/otaunpack"
ARM_TMP = "/data/tmp"


def sha(data):
    return hashlib.sha256(data).hexdigest()


def mtd_summary(err, mtd):
    """(written, equal, bad skipped, marked bad) from the MTD writer's summary line."""
    m = re.search(r"mtd%d \([^)]*\): (\d+) blocks written, (\d+) equal \(left alone\), (\d+) bad skipped, "
                  r"(\d+) marked bad" % mtd, err)
    assert m, err
    return tuple(int(x) for x in m.groups())


def nand_sha(board, mtd, length, tmp="/tmp"):
    """sha256 of the first length bytes of a NAND partition, bad blocks skipped (the dump in tmp)."""
    board.sh("nanddump --bb=skipbad -q -l %d -f %s/nand.dump /dev/mtd%d" % (length, tmp, mtd))
    return board.sh("head -c %d %s/nand.dump | sha256sum" % (length, tmp)).split()[0]


def block_package(d, image, target, name="p.bin", begin=None):
    """A 0.4 package of one block-update record (and a begin script if given)."""
    from sstarota import packer

    pkg = d / name
    packer.create(str(pkg), "0.4", begin=str(begin) if begin else None)
    packer.append(str(pkg), packer.operation_specs("block-update", src=str(image), dst=target))
    return pkg


def up(boot, slot, release, env_kept=False):
    """The A/B board came up from slot with release; with env_kept, from the env on NOR (not
    u-boot's built-in one, which both env copies bad would mean: no bootab)."""
    assert (boot.slot, boot.release) == (slot, release), boot
    if env_kept:
        assert not boot.env_lost, boot


#: group -> how to stop the board a session fixture booted for that xdist group's tests
_PARKED = {}


def park_after_group(group, stop):
    """Have `stop` (idempotent) called once the last test of `group` on this worker has run
    (tests/conftest.py): an idle board under qemu's emulation still takes half a core, which
    the other worker's tests need."""
    _PARKED[group] = stop


def park(group):
    stop = _PARKED.pop(group, None)
    if stop is not None:
        stop()

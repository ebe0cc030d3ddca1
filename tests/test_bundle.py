"""bundle.py: the offline install archive is checked member by member against its
manifest, lists every file setup needs, and stops with one line when it cannot be used.
(The real bundle, built and installed with no network, is the slow check of
install/offline-check.sh; docs/setup.md.)"""
import io
import json
import os
import re
import subprocess
import sys
import tarfile

import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "install"))
import bundle  # noqa: E402  (install/bundle.py: the standard library only)

ARCH = "x86_64-linux-gnu"
SDIST = "brocolli-caffe-9.0.2.tar.gz"


def staging_tree(top):
    """A bundle's folder with every file setup reads by name (tiny stand-ins) and the
    links Debian's packages have."""
    sources = [f"boost/libs/{lib}/src/{g.replace('*', 'a')}"
               for lib, globs in bundle.BOOST_LIBS.items() for g in globs]
    for rel in bundle.required_files(ARCH) + sources + [
            f"sdist/{SDIST}", "wheels/six-1.17.0-py2.py3-none-any.whl"]:
        p = top / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(f"stand-in for {rel}\n")
    (top / bundle.PROTOC).chmod(0o755)
    lib = top / f"root/usr/lib/{ARCH}"
    (lib / "libglog.so").unlink()
    (lib / "libglog.so.1").write_text("the library\n")
    os.symlink("libglog.so.1", lib / "libglog.so")
    return top


META = {"arch": ARCH, "sdist": {"file": SDIST}, "debian_packages": [],
        "boost_source": {"package": "boost1.74", "version": "1.74.0+ds1-21"}}


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    top = staging_tree(tmp_path_factory.mktemp("staging"))
    out = tmp_path_factory.mktemp("out") / "b.tar.xz"
    bundle.write_archive(top, META, out)
    return out


def test_unpack_checks_every_file_and_writes_the_paths_the_build_reads(archive, tmp_path):
    dest = bundle.unpack(archive, tmp_path / "cache")
    assert dest.parent == tmp_path / "cache" and (dest / ".complete").is_file()
    for rel in bundle.required_files(ARCH):
        assert (dest / rel).exists(), rel
    assert os.readlink(dest / f"root/usr/lib/{ARCH}/libglog.so") == "libglog.so.1"
    assert os.access(dest / bundle.PROTOC, os.X_OK)
    # every path prefix.cmake uses comes from paths.cmake, and each one is in the bundle
    cmake = (dest / "paths.cmake").read_text()
    used = set(re.findall(r"\$\{(FCN_[A-Z_]+)\}", (REPO / "third_party/caffe/prefix.cmake")
                          .read_text()))
    defined_here = set(re.findall(r"set\((FCN_[A-Z_]+)", (REPO / "third_party/caffe/prefix.cmake")
                                  .read_text()))
    written = set(re.findall(r"set\((FCN_[A-Z_]+)", cmake))
    lib_vars = {f"FCN_BOOST_{n.upper()}_SOURCES" for n in bundle.BOOST_LIBS}
    assert used - defined_here - {"FCN_PREFIX"} <= written
    assert lib_vars <= written
    for path in re.findall(r'"([^"]+)"', cmake):
        assert os.path.exists(path), path
    # a second unpack is a no-op
    mtime = (dest / ".complete").stat().st_mtime_ns
    assert bundle.unpack(archive, tmp_path / "cache") == dest
    assert (dest / ".complete").stat().st_mtime_ns == mtime


def test_manifest_must_list_every_file_setup_needs(tmp_path):
    top = staging_tree(tmp_path / "staging")
    (top / "root/usr/include/hdf5/serial/hdf5.h").unlink()
    with pytest.raises(bundle.BundleError) as e:
        bundle.write_archive(top, META, tmp_path / "b.tar.xz")
    assert "lacks root/usr/include/hdf5/serial/hdf5.h, which setup needs" in str(e.value)
    (top / "root/usr/include/hdf5/serial/hdf5.h").write_text("")
    (top / "boost/libs/regex/src/a.cpp").unlink()
    with pytest.raises(bundle.BundleError) as e:
        bundle.write_archive(top, META, tmp_path / "b.tar.xz")
    assert "lacks boost/libs/regex/src/*.cpp" in str(e.value)
    assert not (tmp_path / "b.tar.xz").exists()
    with pytest.raises(bundle.BundleError, match="format-1 bundle manifest"):
        bundle.check_manifest({"format": 0})


def rewrite(archive, out, drop=(), add=(), manifest_edit=None):
    """A copy of ``archive`` with members dropped or added (name, data or link)."""
    with tarfile.open(archive) as src, tarfile.open(out, "w:xz") as dst:
        for m in src:
            if m.name in drop:
                continue
            data = src.extractfile(m).read() if m.isfile() else None
            if m.name == bundle.MANIFEST and manifest_edit:
                man = json.loads(data)
                manifest_edit(man)
                data = json.dumps(man).encode()
                m.size = len(data)
            dst.addfile(m, io.BytesIO(data) if data is not None else None)
        for name, data, link in add:
            info = tarfile.TarInfo(name)
            if link:
                info.type, info.linkname = tarfile.SYMTYPE, link
                dst.addfile(info)
            else:
                info.size = len(data)
                dst.addfile(info, io.BytesIO(data))
    return out


def one_line(e):
    assert "\n" not in str(e.value)
    return str(e.value)


def test_paths_outside_the_prefix_are_refused(archive, tmp_path):
    for name, link in (("../escape.txt", None), ("/abs.txt", None),
                       ("root/usr/lib/evil.so", "../../../../etc/passwd"),
                       ("root/usr/lib/abs.so", "/etc/passwd")):
        def listed(man, name=name, link=link):
            man["files"][name] = {"link": link} if link else \
                {"size": 1, "sha256": bundle.hashlib.sha256(b"x").hexdigest()}
        bad = rewrite(archive, tmp_path / "bad.tar.xz", add=[(name, b"x", link)],
                      manifest_edit=listed)
        with pytest.raises(bundle.BundleError) as e:
            bundle.unpack(bad, tmp_path / "cache")
        assert "outside the bundle" in one_line(e), name
        assert not (tmp_path / "escape.txt").exists()
        assert not any((tmp_path / "cache").glob("*/.complete"))


def test_a_member_the_manifest_does_not_list_is_refused(archive, tmp_path):
    bad = rewrite(archive, tmp_path / "bad.tar.xz", add=[("root/usr/lib/extra.so", b"x", None)])
    with pytest.raises(bundle.BundleError) as e:
        bundle.unpack(bad, tmp_path / "cache")
    assert "does not list: 'root/usr/lib/extra.so'" in one_line(e)


def test_a_missing_member_is_named(archive, tmp_path):
    gone = f"root/usr/include/{ARCH}/openblas-openmp/cblas.h"
    bad = rewrite(archive, tmp_path / "bad.tar.xz", drop=[gone])
    with pytest.raises(bundle.BundleError) as e:
        bundle.unpack(bad, tmp_path / "cache")
    assert f"lacks {gone}" in one_line(e)
    assert not any((tmp_path / "cache").iterdir())


def test_a_changed_member_is_caught_by_its_sha256(archive, tmp_path):
    def edit(man):
        man["files"][bundle.PROTOC]["sha256"] = "0" * 64
    bad = rewrite(archive, tmp_path / "bad.tar.xz", manifest_edit=edit)
    with pytest.raises(bundle.BundleError) as e:
        bundle.unpack(bad, tmp_path / "cache")
    assert f"{bundle.PROTOC} differs from its manifest" in one_line(e)


def test_corrupted_or_truncated_archives_stop_with_one_line(archive, tmp_path):
    data = archive.read_bytes()
    flipped = tmp_path / "flipped.tar.xz"
    flipped.write_bytes(data[:len(data) // 2] + bytes([data[len(data) // 2] ^ 0xFF])
                        + data[len(data) // 2 + 1:])
    short = tmp_path / "short.tar.xz"
    short.write_bytes(data[:len(data) * 2 // 3])
    for bad in (flipped, short):
        with pytest.raises(bundle.BundleError) as e:
            bundle.unpack(bad, tmp_path / "cache")
        assert "damaged" in one_line(e) or "lacks" in one_line(e), bad.name
    with pytest.raises(bundle.BundleError, match="no such file"):
        bundle.unpack(tmp_path / "none.tar.xz", tmp_path / "cache")


def test_setup_with_a_damaged_bundle_is_one_line(archive, tmp_path):
    bad = tmp_path / "bad.tar.xz"
    bad.write_bytes(archive.read_bytes()[:archive.stat().st_size // 2])
    r = subprocess.run(["bash", str(REPO / "install/setup.sh")], capture_output=True, text=True,
                       env={**os.environ, "FCN_BUNDLE": str(bad),
                            "FCN_CACHE_DIR": str(tmp_path / "cache"), "PYTHON": sys.executable})
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert r.returncode == 1 and len(lines) == 1, r.stderr
    assert lines[0].startswith("setup: bundle failed: ") and "damaged" in lines[0]


def test_versions_fit_by_major_version():
    assert bundle.fits("2.5.5", "2.4.6") and bundle.fits("1.18.1", "1.17.1")
    assert not bundle.fits("7.36.2", "4.21.12") and not bundle.fits("1.26.4", "2.4.6")
    assert bundle.fits("0.26.1", "0.26.0") and not bundle.fits("0.25.2", "0.26.0")
    assert bundle.fits("7.36.2", "4.21.12", "protobuf")
    assert not bundle.fits("4.21.11", "4.21.12", "protobuf")


def test_venv_plan_uses_the_targets_packages_and_names_what_is_missing(tmp_path):
    # The project's own .venv has every pin: nothing to install from the bundle.
    py = str(REPO / ".venv/bin/python")
    (tmp_path / "wheels").mkdir()
    dirs, wheels = bundle.plan_venv(py, tmp_path, REPO / "requirements.txt")
    assert wheels == [] and any(d.startswith(str(REPO / ".venv")) for d in dirs)
    # A pin the target lacks comes from the bundle's wheel, or is named in one line.
    req = tmp_path / "req.txt"
    req.write_text("six==1.17.0\nnot-a-real-package==1.0\n")
    (tmp_path / "wheels/not_a_real_package-1.0-py3-none-any.whl").write_text("")
    assert [w.name for w in bundle.plan_venv(py, tmp_path, req)[1]] == \
        ["not_a_real_package-1.0-py3-none-any.whl"]
    req.write_text("numpy==1.0.0\n")
    with pytest.raises(bundle.BundleError) as e:
        bundle.plan_venv(py, tmp_path, req)
    assert "has numpy 2." in one_line(e) and "numpy==1.0.0 is pinned" in one_line(e)
    assert "--python 3." in one_line(e)


def test_a_version_that_does_not_fit_names_the_versions_that_would(tmp_path):
    """A target with ml_dtypes 0.7.0 against the pin 0.6.0 was told "install ml_dtypes
    0.x", which 0.7.0 is: the line names the versions fits() would take."""
    py = str(REPO / ".venv/bin/python")
    (tmp_path / "wheels").mkdir()
    req = tmp_path / "req.txt"
    for pin, says in [("ml_dtypes==0.5.1", "has ml_dtypes 0.6.0, ml_dtypes==0.5.1 is pinned"),
                      ("ml_dtypes==0.5.1", "install ml_dtypes 0.5.x for that Python"),
                      ("numpy==1.26.4", "install numpy 1.x for that Python"),
                      ("protobuf==99.1.0", "install protobuf 99.1.0 or newer for that Python")]:
        req.write_text(pin + "\n")
        with pytest.raises(bundle.BundleError) as e:
            bundle.plan_venv(py, tmp_path, req)
        assert says in one_line(e), one_line(e)
    assert bundle.fitting("0.6.0") == "0.6.x" and bundle.fitting("2.4.6") == "2.x"
    assert not bundle.fits("0.7.0", "0.6.0") and bundle.fits("0.6.9", "0.6.0")


def test_a_chain_of_links_cannot_lead_out(archive, tmp_path):
    """Each link alone stays inside; through one another they lead two folders up, and a
    file written through them would land outside the unpack folder."""
    chain = [("root/sub", None, ".."), ("root/sub/y", None, "../.."),
             ("root/sub/y/ESCAPED.txt", b"out", None)]

    def listed(man):
        for name, data, link in chain:
            man["files"][name] = {"link": link} if link else \
                {"size": len(data), "sha256": bundle.hashlib.sha256(data).hexdigest()}
    bad = rewrite(archive, tmp_path / "bad.tar.xz", add=chain, manifest_edit=listed)
    with pytest.raises(bundle.BundleError) as e:
        bundle.unpack(bad, tmp_path / "work/cache")
    assert "outside the bundle" in one_line(e)
    assert list(tmp_path.rglob("ESCAPED.txt")) == []
    assert not any((tmp_path / "work/cache").glob("*/.complete"))
    # links alone, none written through: the chain is refused once all exist
    only_links = rewrite(archive, tmp_path / "links.tar.xz", add=chain[:1] + [
        ("root/up", None, "sub/..")], manifest_edit=lambda man: man["files"].update(
            {"root/sub": {"link": ".."}, "root/up": {"link": "sub/.."}}))
    with pytest.raises(bundle.BundleError) as e:
        bundle.unpack(only_links, tmp_path / "work/cache")
    assert "leads outside the bundle" in one_line(e)


@pytest.mark.parametrize("edit,says", [
    (lambda m: m.update(files=list(m["files"])), "'files' is not an object"),
    (lambda m: m.update(sdist="brocolli-caffe-9.0.2.tar.gz"), "'sdist' is not an object"),
    (lambda m: m["files"].update({"root/x": "a string"}), "neither a file"),
    (lambda m: m.update(debian_packages={"a": 1}), "'debian_packages' is not a list"),
    (lambda m: m.pop("arch"), "'arch' is not text"),
])
def test_a_manifest_of_the_wrong_shape_is_one_line(edit, says, archive, tmp_path):
    bad = rewrite(archive, tmp_path / "bad.tar.xz", manifest_edit=edit)
    with pytest.raises(bundle.BundleError) as e:
        bundle.unpack(bad, tmp_path / "cache")
    assert says in one_line(e)


def test_a_cache_that_is_a_file_is_one_line(archive, tmp_path):
    (tmp_path / "cache").write_text("not a folder")
    with pytest.raises(bundle.FcnError) as e:
        bundle.unpack(archive, tmp_path / "cache")
    assert "is a file" in one_line(e)
    r = subprocess.run(["bash", str(REPO / "install/setup.sh")], capture_output=True, text=True,
                       env={**os.environ, "FCN_BUNDLE": str(archive),
                            "FCN_CACHE_DIR": str(tmp_path / "cache"), "PYTHON": sys.executable})
    assert r.returncode == 1 and r.stderr.count("\n") == 1, r.stderr
    assert "is a file" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("var,value,says", [
    ("FCN_CUDA_ARCH", "9.0", "FCN_CUDA_ARCH=9.0"),
    ("FCN_GPU", "yes", "FCN_GPU=yes"),
    ("FCN_BUNDLE", "/nonexistent.tar.xz", "no such file"),
])
def test_setup_checks_its_variables_first(var, value, says, tmp_path):
    r = subprocess.run(["bash", str(REPO / "install/setup.sh"), "check"], capture_output=True,
                       text=True, env={**os.environ, var: value,
                                       "FCN_CACHE_DIR": str(tmp_path / "cache")})
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and says in r.stderr, r.stderr


def test_the_archive_goes_into_the_default_folder_even_before_it_exists(tmp_path):
    """make bundle in a fresh clone (no out/ yet) wrote the archive as a file named
    `out`: a default that names a folder is a folder, created if missing; --out names
    a folder when it is one or ends in '/', else the archive's file."""
    folder = tmp_path / "out"
    path = bundle.archive_path(None, folder)
    assert folder.is_dir() and path.parent == folder
    assert re.fullmatch(r"fcn-offline-\d{8}\.tar\.xz", path.name)
    assert bundle.archive_path(str(tmp_path / "new") + "/", folder).parent == tmp_path / "new"
    assert (tmp_path / "new").is_dir()
    assert bundle.archive_path(str(folder), tmp_path / "other").parent == folder
    assert bundle.archive_path(str(tmp_path / "b.tar.xz"), folder) == tmp_path / "b.tar.xz"
    r = subprocess.run([sys.executable, str(REPO / "install/bundle.py"), "create", "--help"],
                       capture_output=True, text=True)
    assert "default: out/" in " ".join(r.stdout.split())

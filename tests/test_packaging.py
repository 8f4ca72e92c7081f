"""The wheel carries the patches and the docs: a non-editable install fetches every upstream patched.

Builds the wheel offline (``pip wheel --no-deps --no-build-isolation``), installs it into a folder of
its own, and from another directory fetches each patched upstream out of local mirrors
(``$SIMAM2_SOURCE``) into a fresh cache; each checkout must hold exactly its patches, applied.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import vendor_fetch

REPO = Path(__file__).resolve().parents[1]
PATCHED = [name for name, up in vendor_fetch.UPSTREAMS.items() if up.patched]


def _local_source() -> str:
    source = os.environ.get("SIMAM2_SOURCE", "")
    if not source or not vendor_fetch.is_template(source) or vendor_fetch._is_url(source):
        pytest.skip("no local mirrors: set SIMAM2_SOURCE to a folder template such as /mirrors/{owner}+{name}/repo")
    for name in PATCHED:
        try:
            vendor_fetch.resolve_source(name, source)
        except vendor_fetch.FetchError as e:
            pytest.skip(f"no local mirror of {name}: {e}")
    return source


def _can_build_wheels() -> bool:
    """setuptools builds wheels itself from 70.1 on; before, it needs the wheel package."""
    if importlib.util.find_spec("setuptools") is None:
        return False
    from importlib.metadata import version

    major, minor = (int(p) for p in version("setuptools").split(".")[:2])
    return (major, minor) >= (70, 1) or importlib.util.find_spec("wheel") is not None


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    if not _can_build_wheels():
        pytest.skip("building the wheel offline needs setuptools >= 70.1, or setuptools and wheel, in this environment")
    out = tmp_path_factory.mktemp("wheel")
    build = tmp_path_factory.mktemp("src") / "simam2"
    # a copy of the tracked files, so that the build leaves nothing in the worktree
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.split("\0")
    for rel in filter(None, files):
        if (REPO / rel).is_file():
            (build / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, build / rel)
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                           "--disable-pip-version-check", "-w", str(out), str(build)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (found,) = out.glob("simam2-*.whl")
    return found


def _install(wheel: Path, target: Path) -> None:
    """The wheel installed into a folder of its own (``PYTHONPATH`` then imports it from there)."""
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                           "--disable-pip-version-check", "--target", str(target), str(wheel)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_the_wheel_holds_every_patch_and_the_docs(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    shipped = sorted(n for n in names if n.endswith(".patch"))
    ours = sorted(f"simam2/patches/{p.relative_to(REPO / 'patches')}" for p in (REPO / "patches").glob("*/*.patch"))
    assert shipped == ours and len(ours) == 27
    for page in ("results.md", "records.md", "adapters-ogm-ge.md", "instruments.md", "distributed.md",
                 "reproduce-table1.md"):
        assert f"simam2/docs/{page}" in names


def test_the_wheel_holds_every_module_of_the_tree(wheel):
    """Every tracked module of core/ and adapters/ (subpackages included) is in the wheel, at its
    import path: a package missing from pyproject's list installs without error and fails at import."""
    names = set(zipfile.ZipFile(wheel).namelist())
    files = subprocess.run(["git", "ls-files", "core", "adapters"], cwd=REPO, capture_output=True, text=True,
                           check=True).stdout.split()
    ours = {f"simam2/{rel}" for rel in files if rel.endswith(".py")}
    assert len(ours) > 50 and ours - names == set()


def test_an_installed_wheel_runs_the_study_and_the_tables_from_another_folder(wheel, tmp_path):
    """Installed from the wheel (not editable), the commands that import the tables' engine start:
    each one's help, from a folder that is not the checkout."""
    target, elsewhere = tmp_path / "site", tmp_path / "elsewhere"
    elsewhere.mkdir()
    _install(wheel, target)
    env = {**os.environ, "PYTHONPATH": str(target)}
    for command in (["study", "--help"], ["demo", "--help"], ["table", "--help"]):
        proc = subprocess.run([sys.executable, "-c", "import sys; from simam2.adapters.cli import main; "
                               "sys.exit(main(sys.argv[1:]))", *command], cwd=elsewhere, env=env,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, (command, proc.stderr[-2000:])
        assert "usage:" in proc.stdout


def test_an_installed_wheel_fetches_every_upstream_with_all_its_patches(wheel, tmp_path):
    source = _local_source()
    target, home, elsewhere = tmp_path / "site", tmp_path / "home", tmp_path / "elsewhere"
    elsewhere.mkdir()
    _install(wheel, target)
    script = ("import json, sys, vendor_fetch\n"
              "from simam2.docs import page\n"
              "assert vendor_fetch.__file__.startswith(sys.argv[1]), vendor_fetch.__file__\n"
              "print(json.dumps({'root': str(vendor_fetch.PATCHES_ROOT), 'docs': str(page('reproduce-table1.md')), "
              "'fetched': {n: str(vendor_fetch.fetch(n, progress=None)) for n in sys.argv[2:]}}))\n")
    env = {**os.environ, "PYTHONPATH": str(target), "SIMAM2_HOME": str(home), "SIMAM2_SOURCE": source,
           "SIMAM2_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", script, str(target), *PATCHED], cwd=elsewhere, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    answer = json.loads(proc.stdout.splitlines()[-1])
    root = Path(answer["root"])
    assert root == target / "simam2" / "patches"
    assert answer["docs"] == str(target / "simam2" / "docs" / "reproduce-table1.md")
    for name in PATCHED:
        checkout = Path(answer["fetched"][name])
        patches = sorted((root / name).glob("*.patch"))
        assert checkout == home / f"{name}@{vendor_fetch.UPSTREAMS[name].sha}+patches-{vendor_fetch.patch_set_hash(patches)}"
        manifest = vendor_fetch.read_manifest(checkout)
        assert [r["file"] for r in manifest["patches"]] == [p.name for p in patches] != []
        # undoing exactly these patches, last first, gives back the pinned tree: each one is applied
        undo = tmp_path / f"undo-{name}"
        shutil.copytree(checkout, undo, symlinks=True)
        subprocess.run(["git", "update-index", "-q", "--refresh"], cwd=undo, capture_output=True)  # new stat data
        for patch in reversed(patches):
            undone = subprocess.run(["git", "apply", "-R", "--index", str(patch)], cwd=undo, capture_output=True, text=True)
            assert undone.returncode == 0, f"{patch.name}: {undone.stderr}"
        tree = subprocess.run(["git", "write-tree", "--missing-ok"], cwd=undo, capture_output=True, text=True,
                              check=True).stdout.strip()
        pinned = subprocess.run(["git", "rev-parse", f"{vendor_fetch.UPSTREAMS[name].sha}^{{tree}}"], cwd=undo,
                                capture_output=True, text=True, check=True).stdout.strip()
        assert tree == pinned and manifest["tree"] != pinned

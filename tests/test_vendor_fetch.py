"""vendor_fetch on a toy upstream built in tmp_path: pins, sparse checkouts, patches, atomic cache."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from pathlib import Path

import git
import pytest

import vendor_fetch
from vendor_fetch import FetchError, Upstream

MAIN_V1 = 'import sys\n\nGREETING = "hello"\n\nprint(GREETING)\nsys.exit(0)\n'
MAIN_V2 = 'import sys\n\nGREETING = "hello again"\n\nprint(GREETING)\nsys.exit(0)\n'
BIG = "d/big [1].bin"  # glob characters and a space: the sparse pattern must escape them


def _greeting_patch(purpose: str, old: str, new: str) -> str:
    """A git diff of main.py's GREETING line, one line of context (a blank line) on each side."""
    return "\n".join([purpose, "diff --git a/main.py b/main.py", "--- a/main.py", "+++ b/main.py",
                      "@@ -2,3 +2,3 @@", " ", f'-GREETING = "{old}"', f'+GREETING = "{new}"', " ", ""])


GOOD_PATCH = _greeting_patch("Make the greeting say where it comes from (test patch).",
                             "hello", "hello from the patch")

# Touches the folder of the file that the partial snapshot lacks.
BESIDE_PATCH = """Change a file beside the left-out one (test patch).
diff --git a/d/tool.py b/d/tool.py
--- a/d/tool.py
+++ b/d/tool.py
@@ -1,2 +1,2 @@
-X = 1
+X = 10
 Y = 2
"""

SECOND_PATCH = """Add a helper file (test patch).
diff --git a/helper.py b/helper.py
new file mode 100644
--- /dev/null
+++ b/helper.py
@@ -0,0 +1 @@
+ANSWER = 42
"""

# Written against another version of main.py: its removed line is not there.
STALE_PATCH = _greeting_patch("A patch for another version (test patch).", "good morning", "good evening")


def _commit(repo: git.Repo, files: dict[str, str], message: str) -> str:
    who = git.Actor("Toy Author", "toy@example.org")
    for rel, text in files.items():
        path = Path(repo.working_tree_dir) / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    repo.index.add(list(files))
    return repo.index.commit(message, author=who, committer=who).hexsha


@pytest.fixture(scope="module")
def toy_source(tmp_path_factory):
    """A bare repo at mirrors/toy-owner+toy/repo: commit 1 (the pin), then commit 2 on top."""
    root = tmp_path_factory.mktemp("toy")
    work = git.Repo.init(root / "work")
    pin = _commit(work, {"main.py": MAIN_V1, "README.md": "toy\n", BIG: "large content\n",
                         "d/tool.py": "X = 1\nY = 2\n"}, "one")
    head = _commit(work, {"main.py": MAIN_V2}, "two")
    bare = root / "mirrors" / "toy-owner+toy" / "repo"
    git.Repo.clone_from(str(root / "work"), bare, bare=True)
    return {"bare": bare, "template": str(root / "mirrors" / "{owner}+{name}" / "repo"),
            "pin": pin, "head": head}


@pytest.fixture
def toy(toy_source, tmp_path, monkeypatch):
    """A temporary UPSTREAMS entry "toy" pinned to commit 1, an empty patch folder, an empty home."""
    monkeypatch.delenv("SIMAM2_SOURCE", raising=False)
    monkeypatch.delenv("SIMAM2_HOME", raising=False)
    monkeypatch.setitem(vendor_fetch.UPSTREAMS, "toy",
                        Upstream("toy-owner", "toy", toy_source["pin"], license="test"))
    patches = tmp_path / "patches"
    (patches / "toy").mkdir(parents=True)
    monkeypatch.setattr(vendor_fetch, "PATCHES_ROOT", patches)
    home = tmp_path / "home"
    lines: list[str] = []

    def fetch(**kw):
        kw.setdefault("source", toy_source["template"])
        kw.setdefault("home", home)
        kw.setdefault("progress", lines.append)
        return vendor_fetch.fetch("toy", **kw)

    return type("Toy", (), dict(fetch=staticmethod(fetch), home=home, patches=patches / "toy",
                                lines=lines, **toy_source))


def _entries(home: Path) -> list[str]:
    return sorted(p.name for p in home.iterdir()) if home.exists() else []


def _head(checkout: Path) -> str:
    return git.Repo(checkout).head.commit.hexsha


def test_fetch_checks_out_the_pin_and_a_second_run_is_a_noop(toy):
    t0 = time.perf_counter()
    path = toy.fetch()
    assert path == vendor_fetch.checkout_dir("toy", toy.home) == toy.home / f"toy@{toy.pin}"
    # The pin is commit 1, not the branch head: main.py has commit 1's content.
    assert _head(path) == toy.pin != toy.head
    assert (path / "main.py").read_text() == MAIN_V1
    assert (path / BIG).read_text() == "large content\n"
    manifest = vendor_fetch.read_manifest(path)
    assert manifest["sha"] == toy.pin and manifest["patches"] == [] and manifest["left_out"] == []
    assert manifest["source"] == str(toy.bare)
    assert any("cloning" in line for line in toy.lines)
    assert toy.lines[-1] == f"toy: done -> {path}"
    assert _entries(toy.home) == [path.name]  # no build folder left beside it

    inode = path.stat().st_ino
    toy.lines.clear()
    t1 = time.perf_counter()
    assert toy.fetch() == path
    second = time.perf_counter() - t1
    assert toy.lines == [f"toy: up to date -> {path}"]
    assert path.stat().st_ino == inode  # not rebuilt
    assert second < max(1.0, (t1 - t0) / 2)


def test_plain_source_path_without_placeholders(toy):
    path = toy.fetch(source=str(toy.bare))
    assert (path / "main.py").read_text() == MAIN_V1


def test_source_comes_from_the_environment(toy, monkeypatch):
    monkeypatch.setenv("SIMAM2_SOURCE", toy.template)
    monkeypatch.setenv("SIMAM2_HOME", str(toy.home))
    path = vendor_fetch.fetch("toy", progress=None)
    assert path == toy.home / f"toy@{toy.pin}" and _head(path) == toy.pin


def test_source_lacking_the_pinned_commit_is_a_clear_error(toy, monkeypatch):
    absent = "0123456789abcdef0123456789abcdef01234567"
    monkeypatch.setitem(vendor_fetch.UPSTREAMS, "toy", Upstream("toy-owner", "toy", absent, license="test"))
    with pytest.raises(FetchError, match=f"has no commit {absent}"):
        toy.fetch()
    assert _entries(toy.home) == []


def test_missing_source_and_bad_pin_are_clear_errors(toy, tmp_path):
    with pytest.raises(FetchError, match="source of toy not found"):
        toy.fetch(source=str(tmp_path / "nowhere" / "{name}"))
    with pytest.raises(ValueError, match="full 40-hex"):
        Upstream("o", "r", "343dc1d", license="x")
    with pytest.raises(FetchError, match="unknown upstream 'nope'; known: ogm-ge, avga, psp, fop"):
        vendor_fetch.fetch("nope")


def test_patches_apply_in_order_and_are_recorded(toy):
    (toy.patches / "001-greeting.patch").write_text(GOOD_PATCH)
    (toy.patches / "002-helper.patch").write_text(SECOND_PATCH)
    (toy.patches / "notes.txt").write_text("not a patch")
    path = toy.fetch()
    assert (path / "main.py").read_text() == MAIN_V1.replace('"hello"', '"hello from the patch"')
    assert (path / "helper.py").read_text() == "ANSWER = 42\n"
    assert _head(path) == toy.pin
    assert [l for l in toy.lines if "applying" in l] == ["toy: applying patch 001-greeting.patch",
                                                         "toy: applying patch 002-helper.patch"]
    recorded = vendor_fetch.read_manifest(path)["patches"]
    assert recorded == [{"file": p.name, "sha256": hashlib.sha256(p.read_bytes()).hexdigest()}
                        for p in sorted(toy.patches.glob("*.patch"))]
    # The patched files are the expected state, not a modification.
    toy.lines.clear()
    toy.fetch()
    assert toy.lines == [f"toy: up to date -> {path}"]


def test_a_patch_that_does_not_apply_names_itself_and_leaves_nothing(toy):
    (toy.patches / "001-greeting.patch").write_text(GOOD_PATCH)
    (toy.patches / "002-stale.patch").write_text(STALE_PATCH)
    with pytest.raises(FetchError) as err:
        toy.fetch()
    message = str(err.value)
    assert str(toy.patches / "002-stale.patch") in message
    assert "main.py: patch does not apply" in message  # git's own words
    assert "stderr:" not in message
    assert "\n" not in message
    assert _entries(toy.home) == []


@pytest.mark.parametrize("edit", ["change", "delete", "stage", "move HEAD"])
def test_an_edited_checkout_is_reported_not_reused_and_force_rebuilds(toy, edit):
    (toy.patches / "001-greeting.patch").write_text(GOOD_PATCH)
    path = toy.fetch()
    patched = (path / "main.py").read_text()
    repo = git.Repo(path)
    if edit == "change":
        (path / "main.py").write_text("print('edited')\n")
    elif edit == "delete":
        (path / "main.py").unlink()
    elif edit == "stage":
        (path / "README.md").write_text("edited\n")
        repo.git.add("README.md")
    else:
        repo.git.checkout(toy.head, "--", ".")  # index and files of commit 2
        repo.git.execute(["git", "update-ref", "--no-deref", "HEAD", toy.head])
    (path / "__pycache__").mkdir()  # untracked leftovers of a run are not modifications
    with pytest.raises(FetchError, match=rf"checkout {re.escape(str(path))} was modified: .*; remove it or run `simam2 fetch toy --force`"
                       ) as err:
        toy.fetch()
    expected = {"change": "main.py", "delete": "main.py", "stage": "README.md", "move HEAD": "HEAD at"}[edit]
    assert expected in str(err.value)
    assert path.exists()  # reported, left for the user to look at

    toy.lines.clear()
    assert toy.fetch(force=True) == path
    assert (path / "main.py").read_text() == patched and (path / "README.md").read_text() == "toy\n"
    assert _head(path) == toy.pin and any("--force: rebuilding" in l for l in toy.lines)
    toy.lines.clear()
    toy.fetch()
    assert toy.lines == [f"toy: up to date -> {path}"]


def test_an_interrupted_fetch_leaves_nothing_and_the_next_one_succeeds(toy, monkeypatch):
    (toy.patches / "001-greeting.patch").write_text(GOOD_PATCH)
    real_apply = vendor_fetch._apply_patch

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(vendor_fetch, "_apply_patch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        toy.fetch()
    assert _entries(toy.home) == []

    monkeypatch.setattr(vendor_fetch, "_apply_patch", real_apply)
    path = toy.fetch()
    assert "from the patch" in (path / "main.py").read_text()

    # An interrupted rebuild keeps the old checkout as it was.
    monkeypatch.setattr(vendor_fetch, "_apply_patch", interrupted)
    inode = path.stat().st_ino
    with pytest.raises(KeyboardInterrupt):
        toy.fetch(force=True)
    assert _entries(toy.home) == [path.name] and path.stat().st_ino == inode
    assert "from the patch" in (path / "main.py").read_text()


def test_leftovers_of_a_killed_fetch_are_cleared_and_incomplete_checkouts_refused(toy):
    key = f"toy@{toy.pin}"
    (toy.home / f".{key}.tmp-killed" / "half").mkdir(parents=True)
    path = toy.fetch()
    assert _entries(toy.home) == [key]

    vendor_fetch.manifest_path(path).unlink()
    with pytest.raises(FetchError, match="is incomplete or was not made by vendor_fetch"):
        toy.fetch()


def test_a_snapshot_missing_a_blob_gives_a_sparse_checkout_without_it(toy, tmp_path):
    partial = tmp_path / "partial.git"
    shutil.copytree(toy.bare, partial)
    blob = git.Repo(partial).git.rev_parse(f"{toy.pin}:{BIG}")
    (partial / "objects" / blob[:2] / blob[2:]).unlink()
    with pytest.raises(git.GitCommandError):  # what a plain checkout does with this source
        git.Repo.clone_from(str(partial), tmp_path / "plain")

    (toy.patches / "001-greeting.patch").write_text(GOOD_PATCH)
    (toy.patches / "002-beside.patch").write_text(BESIDE_PATCH)
    path = toy.fetch(source=str(partial))
    assert not (path / BIG).exists()
    assert (path / "README.md").read_text() == "toy\n"
    assert "from the patch" in (path / "main.py").read_text()
    assert (path / "d" / "tool.py").read_text() == "X = 10\nY = 2\n"
    assert f"toy: 1 path left out, the source lacks their content: {BIG}" in toy.lines
    manifest = json.loads((path / ".git" / "simam2-manifest.json").read_text())
    assert manifest["left_out"] == [BIG]
    assert git.Repo(path).git.ls_files("-t", BIG) == f"S {BIG}"  # kept in the index, skipped on disk

    toy.lines.clear()
    toy.fetch(source=str(partial))
    assert toy.lines == [f"toy: up to date -> {path} (1 path left out: {BIG})"]


def test_each_patch_set_has_its_own_checkout_and_none_rebuilds_another(toy):
    """Two installs with different patches share one cache: each keeps its own folder."""
    plain = toy.fetch()
    assert plain.name == f"toy@{toy.pin}" and (plain / "main.py").read_text() == MAIN_V1

    (toy.patches / "001-greeting.patch").write_text(GOOD_PATCH)
    digest = vendor_fetch.patch_set_hash([toy.patches / "001-greeting.patch"])
    toy.lines.clear()
    patched = toy.fetch()
    assert patched == toy.home / f"toy@{toy.pin}+patches-{digest}" == vendor_fetch.checkout_dir("toy", toy.home)
    assert "from the patch" in (patched / "main.py").read_text()
    assert [r["file"] for r in vendor_fetch.read_manifest(patched)["patches"]] == ["001-greeting.patch"]
    # built from the cached checkout of the same pin: no source needed, the other folder untouched
    assert f"toy: cloning {plain}" in toy.lines and not any("rebuilding" in l for l in toy.lines)
    assert (plain / "main.py").read_text() == MAIN_V1

    (toy.patches / "001-greeting.patch").unlink()
    toy.lines.clear()
    assert toy.fetch() == plain and toy.lines == [f"toy: up to date -> {plain}"]
    # an edit in one patch set's checkout does not concern the other's
    (plain / "README.md").write_text("my notes\n")
    (toy.patches / "001-greeting.patch").write_text(GOOD_PATCH)
    toy.lines.clear()
    assert toy.fetch() == patched and toy.lines == [f"toy: up to date -> {patched}"]
    assert sorted(p.name for p in toy.home.iterdir()) == sorted([plain.name, patched.name])


def test_a_patched_upstream_without_its_patches_is_an_error_not_done(toy, monkeypatch):
    monkeypatch.setitem(vendor_fetch.UPSTREAMS, "toy",
                        Upstream("toy-owner", "toy", toy.pin, license="test", patched=True))
    with pytest.raises(FetchError, match=r"toy runs only patched, and .*/toy holds no \.patch file"):
        toy.fetch()
    shutil.rmtree(toy.patches)  # a missing folder, as in a wheel built without package data
    with pytest.raises(FetchError, match="holds no .patch file"):
        toy.fetch()
    assert not toy.home.exists() or _entries(toy.home) == []


def test_offline_fetches_refuse_a_remote_source(toy, monkeypatch):
    monkeypatch.setenv("SIMAM2_OFFLINE", "1")
    with pytest.raises(FetchError, match=r"toy is not cached in .* and its source https://example.invalid/x is remote"):
        toy.fetch(source="https://example.invalid/x")
    assert _entries(toy.home) == []
    assert toy.fetch().name == f"toy@{toy.pin}"  # a local mirror is fine


def test_a_rebuild_needs_no_source_once_a_checkout_exists(toy, tmp_path):
    toy.fetch()
    (toy.patches / "001-greeting.patch").write_text(GOOD_PATCH)
    unreachable = str(tmp_path / "nowhere" / "{owner}+{name}")  # as offline CI sees GitHub
    path = toy.fetch(source=unreachable)
    assert "from the patch" in (path / "main.py").read_text()
    assert _head(path) == toy.pin
    toy.fetch(source=unreachable, force=True)
    assert "from the patch" in (path / "main.py").read_text()


def test_main_fetches_and_reports_failures_in_one_line(toy, capsys):
    home = str(toy.home)
    assert vendor_fetch.main(["toy", "--source", toy.template, "--home", home]) == 0
    out = capsys.readouterr().out
    assert f"toy: done -> {toy.home / f'toy@{toy.pin}'}" in out

    assert vendor_fetch.main(["toy", "--source", toy.template, "--home", home]) == 0
    assert "up to date" in capsys.readouterr().out

    (toy.home / f"toy@{toy.pin}" / "main.py").write_text("edited\n")
    assert vendor_fetch.main(["toy", "--source", toy.template, "--home", home]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: checkout ") and "Traceback" not in err
    assert "main.py; remove it or run `simam2 fetch toy --force`" in err
    assert vendor_fetch.main(["toy", "--source", toy.template, "--home", home, "--force"]) == 0


def test_main_rejects_unknown_names_and_a_plain_source_for_many(toy, capsys):
    assert vendor_fetch.main(["nope", "toy", "also-not"]) == 2
    err = capsys.readouterr().err
    assert err == "error: unknown upstreams nope, also-not; known: ogm-ge, avga, psp, fop, balancemm, fsdd, toy\n"
    assert vendor_fetch.main(["ogm-ge", "avga", "--source", str(toy.bare), "--home", str(toy.home)]) == 2
    assert "can serve only one upstream" in capsys.readouterr().err
    assert _entries(toy.home) == []


def test_main_list_and_help(capsys):
    assert vendor_fetch.main(["--list"]) == 0
    out = capsys.readouterr().out
    for name, up in vendor_fetch.UPSTREAMS.items():
        assert f"{name}: {up.owner}/{up.repo} @ {up.sha}" in out
    with pytest.raises(SystemExit) as exit_:
        vendor_fetch.main(["--help"])
    assert exit_.value.code == 0 and "--source" in capsys.readouterr().out


def test_pins_and_default_locations(monkeypatch, tmp_path):
    pins = {name: (up.slug, up.sha) for name, up in vendor_fetch.UPSTREAMS.items()}
    assert pins == {
        "ogm-ge": ("GeWu-Lab/OGM-GE_CVPR2022", "343dc1d95c9bda88f105c0da8d24f185e0e98b54"),
        "avga": ("YapengTian/AVE-ECCV18", "93f843fed72fb17394df76330df958b0c2dbde76"),
        "psp": ("jasongief/PSP_CVPR_2021", "ddd20f3b0a17aec55333bff472eef3ca3ef19958"),
        "fop": ("msaadsaeed/FOP", "e30c0574c84e7ac4c47c6e892d727d6db6de9d35"),
        "balancemm": ("GeWu-Lab/BalanceBenchmark", "4c1482fca5aaa8d4278af8e26020daa039e3ccf3"),
        "fsdd": ("Jakobovski/free-spoken-digit-dataset", "26eb9aaf76e81b692f806f9140c2d2777410d7a1"),
    }
    assert vendor_fetch.UPSTREAMS["ogm-ge"].license.startswith("MIT")
    monkeypatch.setenv("SIMAM2_HOME", str(tmp_path))
    digest = vendor_fetch.patch_set_hash(vendor_fetch.patch_files("psp"))
    assert vendor_fetch.checkout_dir("psp") == tmp_path / f"psp@ddd20f3b0a17aec55333bff472eef3ca3ef19958+patches-{digest}"
    assert vendor_fetch.checkout_dir("fsdd").name == "fsdd@26eb9aaf76e81b692f806f9140c2d2777410d7a1"  # no patches
    monkeypatch.delenv("SIMAM2_HOME")
    monkeypatch.delenv("SIMAM2_SOURCE", raising=False)
    assert vendor_fetch.checkout_dir("fop").parent == Path(os.path.expanduser("~/.cache/simam2"))
    assert vendor_fetch.resolve_source("fop") == "https://github.com/msaadsaeed/FOP.git"
    from importlib.resources import files

    assert vendor_fetch.PATCHES_ROOT == Path(str(files("simam2.patches")))
    assert len(vendor_fetch.patch_files("ogm-ge")) == 6
    # every upstream we patch is declared so: a lost patch folder stops its fetch
    assert {n for n, up in vendor_fetch.UPSTREAMS.items() if up.patched} == \
        {n for n in vendor_fetch.UPSTREAMS if vendor_fetch.patch_files(n)} == {"ogm-ge", "avga", "psp", "fop", "balancemm"}


def test_upstream_checkout_fixture_fetches_once_then_skips_with_one_line(toy, upstream_checkout, monkeypatch):
    monkeypatch.setenv("SIMAM2_SOURCE", toy.template)
    monkeypatch.setenv("SIMAM2_HOME", str(toy.home))
    path = upstream_checkout("toy")
    assert path == toy.home / f"toy@{toy.pin}" and (path / "main.py").read_text() == MAIN_V1

    def no_second_fetch(*args, **kwargs):
        raise AssertionError("fetched again")

    monkeypatch.setattr(vendor_fetch, "fetch", no_second_fetch)
    assert upstream_checkout("toy") == path  # resolved once per session
    monkeypatch.undo()

    monkeypatch.setitem(vendor_fetch.UPSTREAMS, "toy-absent",
                        Upstream("toy-owner", "absent", toy.pin, license="test"))
    monkeypatch.setenv("SIMAM2_SOURCE", toy.template)
    monkeypatch.setenv("SIMAM2_HOME", str(toy.home))
    with pytest.raises(pytest.skip.Exception) as skipped:
        upstream_checkout("toy-absent")
    reason = str(skipped.value)
    assert reason.startswith("no toy-absent checkout: source of toy-absent not found: ")
    assert reason.endswith("; run `python vendor_fetch.py toy-absent` with SIMAM2_SOURCE set")
    assert "\n" not in reason
    with pytest.raises(KeyError, match="unknown upstream 'nope'"):
        upstream_checkout("nope")


@pytest.mark.upstream
@pytest.mark.parametrize("name", list(vendor_fetch.UPSTREAMS))
def test_real_checkout_is_the_pinned_tree_minus_what_the_source_lacks(name, upstream_checkout):
    path = upstream_checkout(name)
    up = vendor_fetch.UPSTREAMS[name]
    repo = git.Repo(path)
    assert repo.head.commit.hexsha == up.sha
    manifest = vendor_fetch.read_manifest(path)
    left_out = set(manifest["left_out"])
    tracked = [line[2:] for line in repo.git.ls_files("-t", "-z").split("\0") if line]
    assert left_out <= set(tracked)
    for rel in tracked:
        assert (path / rel).exists() != (rel in left_out), rel
    assert [p["file"] for p in manifest["patches"]] == [p.name for p in vendor_fetch.patch_files(name)]


# -- faults: credentials, files outside the tree, unsafe transports, an unwritable cache ------------

SECRET = "s3cr3t-T0KEN"


def test_credentials_in_a_source_url_are_never_printed_nor_stored(toy, monkeypatch, capsys):
    url = f"https://user:{SECRET}@git.example.invalid/{{owner}}/{{name}}.git"
    # git rewrites the URL to the local mirror, so the clone succeeds offline
    monkeypatch.setenv("SIMAM2_OFFLINE", "0")  # the URL is remote to vendor_fetch's eyes
    monkeypatch.setenv("GIT_CONFIG_COUNT", "1")
    monkeypatch.setenv("GIT_CONFIG_KEY_0", f"url.{toy.bare}.insteadOf")
    monkeypatch.setenv("GIT_CONFIG_VALUE_0", f"https://user:{SECRET}@git.example.invalid/toy-owner/toy.git")
    assert vendor_fetch.main(["toy", "--source", url, "--home", str(toy.home)]) == 0
    out = capsys.readouterr().out
    path = toy.home / f"toy@{toy.pin}"
    assert "toy: cloning https://***@git.example.invalid/toy-owner/toy.git" in out
    manifest = vendor_fetch.read_manifest(path)
    assert manifest["source"] == "https://***@git.example.invalid/toy-owner/toy.git"
    for f in path.joinpath(".git").rglob("*"):  # manifest, config (origin), logs: nowhere
        if f.is_file():
            assert SECRET.encode() not in f.read_bytes(), f
    assert SECRET not in out


def test_credentials_are_redacted_from_a_failed_clone(toy, monkeypatch, capsys):
    monkeypatch.setenv("GIT_CONFIG_COUNT", "1")  # no network: the host is mapped to a missing folder
    monkeypatch.setenv("GIT_CONFIG_KEY_0", f"url.{toy.home.parent / 'nowhere'}/.insteadOf")
    monkeypatch.setenv("GIT_CONFIG_VALUE_0", f"https://{SECRET}@git.example.invalid/")
    url = f"https://{SECRET}@git.example.invalid/{{owner}}/{{name}}.git"  # a token as the user
    assert vendor_fetch.main(["toy", "--source", url, "--home", str(toy.home)]) == 1
    captured = capsys.readouterr()
    assert "https://***@git.example.invalid/toy-owner/toy.git" in captured.err
    assert SECRET not in captured.out + captured.err
    with pytest.raises(FetchError) as err:
        vendor_fetch.fetch("toy", source=url, home=toy.home, progress=None)
    assert SECRET not in str(err.value)
    assert vendor_fetch.redact("ssh://git@h/x and http://a:b@c/d") == "ssh://***@h/x and http://***@c/d"


@pytest.mark.parametrize("plant", ["module at the root", "module ignored by git", "package", "left-out path"])
def test_a_file_outside_the_pinned_tree_is_a_modification(toy, tmp_path, plant):
    source = toy.template
    if plant == "left-out path":  # a snapshot without BIG: git skips that path, so git diff would too
        partial = tmp_path / "mirrors" / "toy-owner+toy" / "repo"
        shutil.copytree(toy.bare, partial)
        blob = git.Repo(partial).git.rev_parse(f"{toy.pin}:{BIG}")
        (partial / "objects" / blob[:2] / blob[2:]).unlink()
        source = str(tmp_path / "mirrors" / "{owner}+{name}" / "repo")
    path = toy.fetch(source=source)
    (path / "d" / "__pycache__").mkdir()
    (path / "d" / "__pycache__" / "tool.cpython-311.pyc").write_bytes(b"bytecode")  # a run's leftover
    toy.lines.clear()
    toy.fetch(source=source)
    assert toy.lines == [toy.lines[0]] and "up to date" in toy.lines[0]
    planted = {"module at the root": "librosa.py", "module ignored by git": "librosa.py",
               "package": "librosa/__init__.py", "left-out path": BIG}[plant]
    (path / planted).parent.mkdir(parents=True, exist_ok=True)
    (path / planted).write_text("import os  # planted\n")
    if plant == "module ignored by git":  # as a .gitignore or the user's global excludes file would
        (path / ".git" / "info" / "exclude").write_text("librosa.py\n")
    with pytest.raises(FetchError, match=r"was modified: .*; remove it or run `simam2 fetch toy --force`") as err:
        toy.fetch(source=source)  # was: "toy: up to date", and the next run imported it
    assert planted in str(err.value) and "tool.cpython" not in str(err.value)
    assert toy.fetch(source=source, force=True) == path and not (path / planted).exists()


@pytest.mark.parametrize("source", ["ext::sh -c touch% {marker}", "fd::17", "ext://{marker}", "gopher://h/{name}",
                                    "::{marker}"])
def test_unsafe_transports_are_refused_in_one_line(toy, tmp_path, capsys, source):
    marker = tmp_path / "pwned"
    source = source.replace("{marker}", str(marker))
    assert vendor_fetch.main(["toy", "--source", source, "--home", str(toy.home)]) == 2
    err = capsys.readouterr().err  # was: an UnsafeProtocolError traceback
    assert err.count("\n") == 1 and err.startswith("error: source ") and "which vendor_fetch refuses" in err
    assert "--source" in err and "Traceback" not in err
    assert not toy.home.exists() and not marker.exists()
    with pytest.raises(vendor_fetch.UsageError):
        vendor_fetch.fetch("toy", source=source, home=toy.home, progress=None)


def test_an_unwritable_cache_folder_is_one_line_and_exit_2(toy, monkeypatch, capsys):
    toy.home.mkdir()

    def refuse(*args, **kwargs):  # what a read-only folder gives, also to a test run as root
        raise PermissionError(13, "Permission denied", str(toy.home))

    with monkeypatch.context() as patched:
        patched.setattr(vendor_fetch.tempfile, "mkdtemp", refuse)
        assert vendor_fetch.main(["toy", "--source", toy.template, "--home", str(toy.home)]) == 2
    err = capsys.readouterr().err  # was: a PermissionError traceback
    assert err == (f"error: cannot write to the cache folder {toy.home} (Permission denied): point --home "
                   f"(or $SIMAM2_HOME) at a writable folder, or make {toy.home} writable\n")
    assert _entries(toy.home) == []
    blocker = toy.home / "file"
    blocker.write_text("")
    monkeypatch.setenv("SIMAM2_HOME", str(blocker / "cache"))  # a home that cannot be created
    assert vendor_fetch.main(["toy", "--source", toy.template]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot write to the cache folder {blocker / 'cache'} (Not a directory)")
    assert err.count("\n") == 1


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_cache_folder_is_one_line_and_exit_2(toy, capsys):
    toy.home.mkdir()
    toy.home.chmod(0o555)
    try:
        assert vendor_fetch.main(["toy", "--source", toy.template, "--home", str(toy.home)]) == 2
        assert "point --home (or $SIMAM2_HOME) at a writable folder" in capsys.readouterr().err
        assert _entries(toy.home) == []
    finally:
        toy.home.chmod(0o755)

"""Fetch the upstream research codebases at pinned commits, patched, into a cache outside the repository.

    python vendor_fetch.py [NAME ...] [--source S] [--home H] [--force] [--list]

Each upstream in ``UPSTREAMS`` is cloned from ``--source`` / ``$SIMAM2_SOURCE`` (a template with
``{owner}`` and ``{name}``, default ``https://github.com/{owner}/{name}.git``; a folder of bare mirrors
works as ``/mirrors/{owner}+{name}/repo``), checked out at its pinned commit, verified, and patched
with ``patches/<name>/*.patch`` in sorted order (each checked with ``git apply --check`` first).
The patches ship inside the package (``simam2.patches``, found through ``importlib.resources``), so
a wheel install patches exactly as a source checkout does; an upstream declared as patched whose
patch folder is missing or empty is an error, never a silent unpatched checkout.
The result lands in ``$SIMAM2_HOME`` (default ``~/.cache/simam2``), one folder per
``name@sha+patches-<hash>`` (``name@sha`` for an upstream without patches): two installs with
different patch sets share the cache without rebuilding each other's checkout.

Guarantees:

* Atomic: the checkout is built in a hidden sibling folder and renamed into place only when complete;
  a failure or an interrupt leaves the cache as it was.
* Idempotent: a second run verifies the checkout and does nothing else.
* Honest about snapshots: a source that lacks some blobs of the pinned tree (mirrors without their
  largest files) gives a sparse checkout that leaves exactly those paths out; they are printed and
  recorded in the manifest, never faked.
* Tamper-evident: the manifest (``.git/simam2-manifest.json`` inside the checkout) records the pin,
  the sha256 of every applied patch, the left-out paths and the git tree of the patched index. A
  checkout whose files differ from that tree, or that holds any file outside it (a planted
  ``librosa.py`` would be imported by the next run), is reported, not reused (``--force`` rebuilds
  it); another patch set gets a checkout of its own, built from a cached one of the same pin.
* Safe with its input: credentials in a source URL (``https://user:TOKEN@host/...``) are never
  printed nor stored (progress, errors, manifest and the checkout's git config show ``***``); git's
  ``ext::``/``fd::`` remote helpers, which run commands, are refused, as is any transport other
  than https, http, ssh, git and file.

No upstream code is kept in this repository: the patches carry only the lines they change.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional

DEFAULT_SOURCE = "https://github.com/{owner}/{name}.git"
DEFAULT_HOME = "~/.cache/simam2"


def _shipped_patches_root() -> Path:
    """The patch folders shipped as package data (``simam2.patches``), else ``patches/`` beside this
    file: a source tree run as ``python vendor_fetch.py`` without an install."""
    from importlib.resources import files

    try:
        return Path(str(files("simam2.patches")))
    except ModuleNotFoundError:
        return Path(__file__).resolve().parent / "patches"


# Module attribute so tests (and callers with their own patch sets) can point elsewhere.
PATCHES_ROOT = _shipped_patches_root()
MANIFEST_NAME = "simam2-manifest.json"  # lives in the checkout's .git, so it never shows in git status
MANIFEST_FORMAT = 1

# Never let git ask for credentials (a wrong URL would hang on a prompt), and give up on a transfer
# that stalls instead of waiting forever; a user's own settings win.
_GIT_ENV_DEFAULTS = {
    "GIT_TERMINAL_PROMPT": "0",
    # the transports a source may use (submodules and redirects included); ext:: and fd:: run commands
    "GIT_ALLOW_PROTOCOL": "file:git:http:https:ssh",
    "GIT_HTTP_LOW_SPEED_LIMIT": "1000",
    "GIT_HTTP_LOW_SPEED_TIME": "60",
}

Progress = Optional[Callable[[str], object]]


class FetchError(RuntimeError):
    """An expected failure of a fetch, with a one-line message that says what to do.

    The message is redacted here, once for every path that raises one: no credential of a source
    URL reaches the user's terminal or a log through it.
    """

    def __init__(self, message: str):
        super().__init__(redact(str(message)))


class UsageError(FetchError):
    """A fetch refused because of its input (source, cache folder): the command line exits 2."""


# scheme://userinfo@host...: the userinfo (a user and password, or a token alone) is the secret
_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)[^/?#\s]*@")
#: URL schemes a source may use; git's remote helpers (``<transport>::<address>``) are refused.
SAFE_SCHEMES = ("https", "http", "ssh", "git", "file", "git+ssh", "ssh+git")


def redact(text: str) -> str:
    """``text`` with the userinfo of every URL in it replaced by ``***``."""
    return _USERINFO.sub(r"\1***@", text)


@dataclass(frozen=True)
class Upstream:
    """One pinned upstream: where it lives, which commit, under which licence, what to run."""

    owner: str
    repo: str
    sha: str
    license: str
    entry_scripts: tuple[tuple[str, str], ...] = ()
    #: whether our patches/<name>/ must hold patches: the scripts do not run unpatched
    patched: bool = False

    def __post_init__(self):
        if not re.fullmatch(r"[0-9a-f]{40}", self.sha):
            raise ValueError(f"pin of {self.owner}/{self.repo} must be a full 40-hex commit sha, got {self.sha!r}")

    @property
    def slug(self) -> str:
        return f"{self.owner}/{self.repo}"


UPSTREAMS: dict[str, Upstream] = {
    "ogm-ge": Upstream(
        "GeWu-Lab", "OGM-GE_CVPR2022", "343dc1d95c9bda88f105c0da8d24f185e0e98b54",
        license="MIT (LICENSE at the pin, Copyright (c) 2022 GeWu-Lab); the README's License section "
                "instead names GPL-3.0, linking another project's LICENSE. Fetched at run time, not "
                "redistributed.",
        entry_scripts=(("main.py", "train/test on CREMA-D, KineticSound or VGGSound: --dataset, "
                                   "--fusion_method, --modulation, --alpha, --ckpt_path, --train"),),
        patched=True,
    ),
    "avga": Upstream(
        "YapengTian", "AVE-ECCV18", "93f843fed72fb17394df76330df958b0c2dbde76",
        license="none: no LICENSE file and no licence in the README. Fetched and patched at run time, "
                "never redistributed.",
        entry_scripts=(
            ("supervised_main.py", "fully supervised AVE localisation: --model_name AV_att|DMRN, --train"),
            ("weak_supervised_main.py", "weakly supervised AVE localisation"),
            ("cmm_train.py", "cross-modality localisation (cmm_test.py evaluates)"),
        ),
        patched=True,
    ),
    "psp": Upstream(
        "jasongief", "PSP_CVPR_2021", "ddd20f3b0a17aec55333bff472eef3ca3ef19958",
        license="none: no LICENSE file (only SECURITY.md) and no licence in the README. Fetched and "
                "patched at run time, never redistributed.",
        entry_scripts=(
            ("fully_supervised_main.py", "fully supervised AVE localisation: --model_name PSP, --threshold, --train"),
            ("weakly_supervised_main.py", "weakly supervised AVE localisation"),
        ),
        patched=True,
    ),
    "fop": Upstream(
        "msaadsaeed", "FOP", "e30c0574c84e7ac4c47c6e892d727d6db6de9d35",
        license="none: no LICENSE file and no licence in the README. Fetched and patched at run time, "
                "never redistributed.",
        entry_scripts=(
            ("main.py", "face-voice association training: --fusion linear|gated, --save_dir, --max_num_epoch"),
            ("test.py", "evaluation of a checkpoint: --ckpt, --fusion, --alpha"),
        ),
        patched=True,
    ),
    "balancemm": Upstream(
        "GeWu-Lab", "BalanceBenchmark", "4c1482fca5aaa8d4278af8e26020daa039e3ccf3",
        license="none in a file: no LICENSE at the pin; setup.py's classifier says MIT. Fetched and "
                "patched at run time, never redistributed.",
        entry_scripts=(
            ("-m balancemm", "train, validate (Shapley) and test from the checkout root: --trainer, "
                             "--dataset, --model, --device, --alpha; configs/*.yaml for the rest"),
        ),
        patched=True,
    ),
    # data, not code: the study's spoken digits (`simam2 study avdigits`); no patches, no entry scripts
    "fsdd": Upstream(
        "Jakobovski", "free-spoken-digit-dataset", "26eb9aaf76e81b692f806f9140c2d2777410d7a1",
        license="CC BY-SA 4.0 (the dataset's Zenodo record); Free Spoken Digit Dataset by "
                "Jakobovski and contributors. Fetched at run time, never redistributed.",
    ),
}


# -- names, folders, sources, patches -------------------------------------------------------------

def _upstream(name: str) -> Upstream:
    try:
        return UPSTREAMS[name]
    except KeyError:
        raise FetchError(f"unknown upstream {name!r}; known: {', '.join(UPSTREAMS)}") from None


def home_dir(home: str | os.PathLike | None = None) -> Path:
    """The cache folder: ``home``, else ``$SIMAM2_HOME``, else ``~/.cache/simam2``."""
    return Path(home or os.environ.get("SIMAM2_HOME") or DEFAULT_HOME).expanduser().absolute()


def patch_set_hash(patches: list[Path]) -> str:
    """12 hex digits of the sha256 over the patch set (each file's name and content, in order)."""
    records = _patch_records(patches)
    return hashlib.sha256(json.dumps(records, sort_keys=True).encode()).hexdigest()[:12]


def _key(name: str, patches: list[Path]) -> str:
    """``name@sha``, and ``+patches-<hash>`` when patched: a patch set owns its own checkout."""
    base = f"{name}@{_upstream(name).sha}"
    return f"{base}+patches-{patch_set_hash(patches)}" if patches else base


def checkout_dir(name: str, home: str | os.PathLike | None = None,
                 patches_root: str | os.PathLike | None = None) -> Path:
    """Where the checkout of ``name`` at its pin, with the patches of ``patches_root`` (default
    ``PATCHES_ROOT``), lives (whether or not it was fetched yet)."""
    return home_dir(home) / _key(name, patch_files(name, patches_root))


def is_template(source: str) -> bool:
    return "{owner}" in source or "{name}" in source


def resolve_source(name: str, source: str | None = None) -> str:
    """The clone source of ``name``: ``source``, else ``$SIMAM2_SOURCE``, else GitHub.

    ``{owner}`` and ``{name}`` (the upstream's GitHub owner and repository name) are filled in; a
    string without them is used as it is. A local path must exist.
    """
    template, resolved = _filled(name, source)
    if _is_url(resolved):
        return resolved
    path = Path(resolved).expanduser().absolute()
    if not path.exists():
        raise FetchError(f"source of {name} not found: {path} (from source {template!r})")
    return str(path)


def _filled(name: str, source: str | None) -> tuple[str, str]:
    """(template, template with ``{owner}`` and ``{name}`` filled in); a refused transport raises."""
    up = _upstream(name)
    template = source or os.environ.get("SIMAM2_SOURCE") or DEFAULT_SOURCE
    # Plain replacement, not str.format: a URL may hold other braces.
    resolved = template.replace("{owner}", up.owner).replace("{name}", up.repo)
    _refuse_unsafe_transport(resolved)
    return template, resolved


def _refuse_unsafe_transport(source: str) -> None:
    """A UsageError for git's remote-helper syntax (``ext::cmd`` runs ``cmd``; ``fd::`` and any
    ``<helper>::``) and for a URL scheme outside :data:`SAFE_SCHEMES` (``ext://`` included)."""
    helper = re.match(r"^([A-Za-z0-9][A-Za-z0-9+.-]*)?::", source)
    scheme = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*)://", source)
    if helper:
        what = f"git's {helper.group(1) or ''}:: transport (a remote helper; ext:: runs a command)"
    elif scheme and scheme.group(1).lower() not in SAFE_SCHEMES:
        what = f"the {scheme.group(1)}:// transport"
    else:
        return
    raise UsageError(f"source {source!r} uses {what}, which vendor_fetch refuses; give --source (or "
                     f"$SIMAM2_SOURCE) a URL of {'/'.join(SAFE_SCHEMES)}, a host:path or a local folder")


def _is_url(source: str) -> bool:
    # scheme://... or scp-like user@host:path; a Windows drive letter is a path.
    return bool(re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", source)
                or re.match(r"^[^/\\:]{2,}:", source))


def patch_files(name: str, patches_root: str | os.PathLike | None = None) -> list[Path]:
    """``<patches_root>/<name>/*.patch`` in the order they are applied (sorted by file name)."""
    folder = Path(patches_root if patches_root is not None else PATCHES_ROOT) / name
    return sorted(p for p in folder.glob("*.patch") if p.is_file())


def _patch_records(patches: list[Path]) -> list[dict]:
    return [{"file": p.name, "sha256": hashlib.sha256(p.read_bytes()).hexdigest()} for p in patches]


def _one_line(text: str) -> str:
    return "; ".join(line.strip() for line in str(text).splitlines() if line.strip())


def _git_message(error) -> str:
    """git's own words from a GitCommandError (gitpython wraps stderr as "stderr: '...'")."""
    text = error.stderr.decode(errors="replace") if isinstance(error.stderr, bytes) else str(error.stderr or "")
    m = re.fullmatch(r"\s*stderr: '(.*)'\s*", text, flags=re.S)
    lines = (m.group(1) if m else text).splitlines()
    return _one_line("\n".join(l for l in lines if not l.startswith("Cloning into"))) or f"exit status {error.status}"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _listing(paths: list[str], limit: int = 10) -> str:
    shown = ", ".join(paths[:limit])
    return shown + (f" and {len(paths) - limit} more" if len(paths) > limit else "")


# -- git ------------------------------------------------------------------------------------------

def _gitmodule():
    try:
        import git
    except ImportError as e:  # gitpython missing, or no git executable on PATH
        raise FetchError(f"vendor_fetch needs gitpython and a git executable: {_one_line(e)}") from e
    return git


def _git_env() -> dict[str, str]:
    return {k: os.environ.get(k, v) for k, v in _GIT_ENV_DEFAULTS.items()}


def _git(repo, *args: str) -> str:
    """Run ``git args`` in ``repo`` (a git.Repo); a failure is a FetchError carrying git's message."""
    git = _gitmodule()
    try:
        return repo.git.execute(["git", *args], env=_git_env())
    except git.GitCommandError as e:
        raise FetchError(f"git {' '.join(args)} failed in {repo.working_tree_dir}: "
                         f"{_git_message(e)}") from e


def _has_commit(repo, sha: str) -> bool:
    git = _gitmodule()
    try:
        repo.git.execute(["git", "cat-file", "-e", f"{sha}^{{commit}}"])
        return True
    except git.GitCommandError:
        return False


def _missing_blobs(repo, sha: str) -> list[str]:
    """Paths of the pinned tree whose blob the clone does not hold (``git cat-file -e`` fails)."""
    listing = repo.git.execute(["git", "ls-tree", "-r", "-z", "--full-tree", sha])
    missing = []
    for entry in filter(None, listing.split("\0")):
        meta, path = entry.split("\t", 1)
        _mode, kind, oid = meta.split()
        if kind != "blob":  # submodule commits are not checked out anyway
            continue
        try:
            repo.git.get_object_header(oid)  # one long-running cat-file --batch-check
        except ValueError:  # gitpython's answer to "<oid> missing"
            missing.append(path)
    return missing


def _sparse_pattern(path: str) -> str:
    """A non-cone sparse-checkout pattern that excludes exactly ``path`` (glob characters escaped)."""
    if "\n" in path:
        raise FetchError(f"cannot leave out a path with a newline in its name: {path!r}")
    return "!/" + re.sub(r"([\\*?\[\]!# ])", r"\\\1", path)


def _leave_out(repo, paths: list[str]) -> None:
    """Configure a sparse checkout of everything but ``paths``."""
    _git(repo, "config", "core.sparseCheckout", "true")
    _git(repo, "config", "core.sparseCheckoutCone", "false")
    info = Path(repo.git_dir) / "info"
    info.mkdir(exist_ok=True)
    (info / "sparse-checkout").write_text("/*\n" + "".join(_sparse_pattern(p) + "\n" for p in paths))


def _skipped_paths(repo) -> list[str]:
    """Index entries that the sparse checkout left out of the work tree (``git ls-files -t``: S)."""
    out = repo.git.execute(["git", "ls-files", "-t", "-z"])
    return sorted(e[2:] for e in filter(None, out.split("\0")) if e.startswith("S "))


# -- manifest and checks ----------------------------------------------------------------------------

def manifest_path(checkout: Path) -> Path:
    return Path(checkout) / ".git" / MANIFEST_NAME


def read_manifest(checkout: Path) -> dict | None:
    """The manifest of a checkout, or None when it has none (or an unreadable one)."""
    try:
        manifest = json.loads(manifest_path(checkout).read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) and manifest.get("format") == MANIFEST_FORMAT else None


def _modifications(checkout: Path, up: Upstream, manifest: dict) -> list[str]:
    """What differs from the pinned tree + recorded patches: moved HEAD, staged or unstaged edits,
    any file outside the tree, and any left-out path that is present after all.

    Files outside the tree count whatever git would ignore (``git ls-files --others`` without the
    exclude files): an upstream's .gitignore (``result*``, ``experiments/``) or the user's global one
    (``*.so``) must not hide a planted module from this check. The one exception is compiled
    bytecode, ``*.pyc`` in a ``__pycache__`` folder, that running an upstream script in place
    writes; Python loads such a file only for a source beside it, which this check covers. A
    left-out path that is present is named first: git cannot compare it (its blob is missing) and
    stops with a bare "unable to read <oid>".
    """
    present = [f"{p} (left out, yet present)" for p in manifest.get("left_out") or []
               if os.path.lexists(Path(checkout) / p)]
    if present:
        return present
    git = _gitmodule()
    try:
        with git.Repo(checkout) as repo:
            head = repo.git.execute(["git", "rev-parse", "HEAD"])
            staged = repo.git.execute(["git", "diff", "--cached", "--name-only", "-z", manifest["tree"]])
            unstaged = repo.git.execute(["git", "diff", "--name-only", "-z"])
            others = repo.git.execute(["git", "ls-files", "--others", "-z"])
    except (git.GitCommandError, git.InvalidGitRepositoryError, git.NoSuchPathError, KeyError) as e:
        return [f"not a readable git checkout ({_one_line(e)})"]
    changed = []
    if head != up.sha:
        changed.append(f"HEAD at {head[:12]} instead of the pin {up.sha[:12]}")
    changed += sorted(set(filter(None, staged.split("\0"))) | set(filter(None, unstaged.split("\0"))))
    changed += [f"{p} (not in the pinned tree)" for p in sorted(filter(None, others.split("\0")))
                if not _is_bytecode(p)]
    return changed


def _is_bytecode(path: str) -> bool:
    parts = Path(path).parts
    return len(parts) >= 2 and parts[-2] == "__pycache__" and parts[-1].endswith(".pyc")


def _patch_change(old: list[dict], new: list[dict]) -> str:
    old_d = {r["file"]: r["sha256"] for r in old}
    new_d = {r["file"]: r["sha256"] for r in new}
    parts = []
    for label, files in (("added", [f for f in new_d if f not in old_d]),
                         ("removed", [f for f in old_d if f not in new_d]),
                         ("changed", [f for f in new_d if f in old_d and new_d[f] != old_d[f]])):
        if files:
            parts.append(f"{label} {', '.join(files)}")
    return "; ".join(parts) or "reordered"


# -- building ---------------------------------------------------------------------------------------

def _rebuild_source(dest: Path, name: str, up: Upstream) -> str | None:
    """The cached checkout itself, or one of the same pin with another patch set, when it holds the
    pinned commit: a rebuild (--force, a new patch set) then needs no network, which CI on a
    machine without one relies on."""
    git = _gitmodule()
    siblings = sorted(p for p in dest.parent.glob(f"{name}@{up.sha}*") if p != dest)
    for candidate in [dest, *siblings]:
        if not (candidate / ".git").is_dir():
            continue
        try:
            with git.Repo(candidate) as repo:
                if _has_commit(repo, up.sha):
                    return str(candidate)
        except (git.InvalidGitRepositoryError, git.NoSuchPathError):
            continue
    return None


def _clone(name: str, up: Upstream, source: str, into: Path, say) -> object:
    git = _gitmodule()
    say(f"{name}: cloning {redact(source)}")
    try:
        # No checkout yet: a snapshot with missing blobs cannot be checked out in full.
        repo = git.Repo.clone_from(source, into, no_checkout=True, env=_git_env())
    except git.GitCommandError as e:
        raise FetchError(f"cannot clone {name} from {source}: {_git_message(e)}") from e
    if not _has_commit(repo, up.sha):
        # The pin may sit on no branch the clone fetched; most servers hand out a commit by its id.
        with contextlib.suppress(git.GitCommandError):
            repo.git.execute(["git", "fetch", "-q", "origin", up.sha], env=_git_env())
    if not _has_commit(repo, up.sha):
        raise FetchError(f"{source} has no commit {up.sha} (the pin of {name}); "
                         f"is it a complete copy of {up.slug}?")
    if redact(source) != source:  # git stored the URL, credentials and all, as origin
        _git(repo, "remote", "set-url", "origin", redact(source))
    return repo


def _check_out(name: str, up: Upstream, repo, say) -> list[str]:
    missing = _missing_blobs(repo, up.sha)
    if missing:
        _leave_out(repo, missing)
    say(f"{name}: checking out {up.sha[:12]}")
    _git(repo, "-c", "advice.detachedHead=false", "checkout", "-q", "--detach", up.sha)
    head = _git(repo, "rev-parse", "HEAD")
    if head != up.sha:
        raise FetchError(f"{name}: HEAD is {head} after checking out the pin {up.sha}")
    if _git(repo, "write-tree", "--missing-ok") != _git(repo, "rev-parse", f"{up.sha}^{{tree}}"):
        raise FetchError(f"{name}: the index after checking out {up.sha[:12]} is not the pinned tree")
    left_out = _skipped_paths(repo)
    if left_out != sorted(missing):
        raise FetchError(f"{name}: the sparse checkout left out {left_out or 'nothing'}, "
                         f"expected exactly the paths with missing blobs {missing}")
    if missing:
        say(f"{name}: {_plural(len(missing), 'path')} left out, the source lacks their content: "
            f"{_listing(missing)}")
    return missing


def _apply_patch(name: str, up: Upstream, repo, patch: Path, say) -> None:
    """``git apply --check`` then ``git apply``, both on the index too, so the patched state is staged."""
    git = _gitmodule()
    say(f"{name}: applying patch {patch.name}")
    try:
        repo.git.execute(["git", "apply", "--check", "--index", str(patch)])
    except git.GitCommandError as e:
        raise FetchError(f"patch {patch} does not apply to {name}@{up.sha[:12]}: "
                         f"{_git_message(e)}") from e
    _git(repo, "apply", "--index", str(patch))


def _build(name: str, up: Upstream, source: str, into: Path, patches: list[Path], say) -> dict:
    repo = _clone(name, up, source, into, say)
    try:
        return _check_out_and_patch(name, up, source, repo, patches, say)
    finally:
        repo.close()  # ends gitpython's long-running cat-file processes before the folder is moved


def _check_out_and_patch(name: str, up: Upstream, source: str, repo, patches: list[Path], say) -> dict:
    left_out = _check_out(name, up, repo, say)
    for patch in patches:
        _apply_patch(name, up, repo, patch, say)
    manifest = {
        "format": MANIFEST_FORMAT,
        "name": name,
        "upstream": up.slug,
        "sha": up.sha,
        "source": redact(source),
        "patches": _patch_records(patches),
        "left_out": left_out,
        # The patched index as a tree: later checks compare the checkout against exactly this.
        "tree": _git(repo, "write-tree", "--missing-ok"),
        "fetched_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    manifest_path(repo.working_tree_dir).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def _rmtree(path: Path) -> None:
    def retry_writable(func, p, _exc):  # read-only pack files block removal on some systems
        with contextlib.suppress(OSError):
            os.chmod(p, 0o700)
            func(p)

    if path.exists():
        shutil.rmtree(path, onerror=retry_writable)


def _remove_leftovers(home: Path, key: str) -> None:
    """Hidden build/old folders of ``key`` that a killed run left behind (we hold the lock)."""
    for stale in home.glob(f".{key}.*"):
        if stale.is_dir():
            _rmtree(stale)


def _make_shareable(folder: Path) -> None:
    # mkdtemp made the folder private (0700); the finished checkout gets the usual umask permissions.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(folder, 0o777 & ~umask)


def _move_into_place(built: Path, dest: Path, key: str) -> None:
    if dest.exists():
        old = dest.with_name(f".{key}.old-{os.getpid()}-{time.time_ns()}")
        os.rename(dest, old)
        os.rename(built, dest)
        _rmtree(old)
    else:
        os.rename(built, dest)


@contextlib.contextmanager
def _locked(home: Path, say) -> Iterator[None]:
    """Serialise fetches into one cache folder (POSIX advisory lock on the folder itself)."""
    try:
        import fcntl
    except ImportError:  # no fcntl (Windows): concurrent fetches are the user's to avoid
        yield
        return
    fd = os.open(home, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say(f"waiting for another fetch into {home}")
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


# -- public entry points ----------------------------------------------------------------------------

def fetch(name: str, source: str | None = None, home: str | os.PathLike | None = None,
          force: bool = False, progress: Progress = print,
          patches_root: str | os.PathLike | None = None, offline: bool | None = None) -> Path:
    """Fetch ``name`` at its pin, patched, into the cache; return the checkout's work tree.

    ``source``: clone source or template (default ``$SIMAM2_SOURCE``, else GitHub); ``home``: cache
    folder (default ``$SIMAM2_HOME``, else ``~/.cache/simam2``); ``force``: rebuild even a cached or
    modified checkout; ``progress``: called with each progress line (None for silence);
    ``patches_root``: folder of per-upstream patch folders (default ``PATCHES_ROOT``);
    ``offline``: never clone from a URL, only from a local folder or a cached checkout of the pin
    (default: ``$SIMAM2_OFFLINE`` is set to anything but "" or "0").
    Raises FetchError for every expected failure.
    """
    say = (lambda line: progress(redact(line))) if progress else (lambda _line: None)
    up = _upstream(name)
    if offline is None:
        offline = os.environ.get("SIMAM2_OFFLINE", "") not in ("", "0")
    patches = patch_files(name, patches_root)
    if up.patched and not patches:
        folder = Path(patches_root if patches_root is not None else PATCHES_ROOT) / name
        raise FetchError(f"{name} runs only patched, and {folder} holds no .patch file: the install lacks "
                         f"its patches (reinstall simam2, or pass the folder that holds {name}/*.patch)")
    key = _key(name, patches)
    home = home_dir(home)
    dest = home / key
    records = _patch_records(patches)
    _filled(name, source)  # a source refused for its transport is refused before anything is made
    try:
        home.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _unwritable(home, e) from e

    with _locked(home, say):
        _remove_leftovers(home, key)
        if dest.exists() and not force:
            manifest = read_manifest(dest)
            if manifest is None or manifest.get("sha") != up.sha:
                raise FetchError(f"checkout {dest} is incomplete or was not made by vendor_fetch "
                                 f"(no valid .git/{MANIFEST_NAME}); remove it or run `simam2 fetch {name} --force`")
            changed = _modifications(dest, up, manifest)
            if changed:
                raise FetchError(f"checkout {dest} was modified: {_listing(changed)}; "
                                 f"remove it or run `simam2 fetch {name} --force`")
            if manifest["patches"] == records:
                left_out = manifest.get("left_out") or []
                note = (f" ({_plural(len(left_out), 'path')} left out: {_listing(left_out)})"
                        if left_out else "")
                say(f"{name}: up to date -> {dest}{note}")
                return dest
            say(f"{name}: patches changed since the checkout was made "
                f"({_patch_change(manifest['patches'], records)}); rebuilding")
        elif dest.exists():
            say(f"{name}: --force: rebuilding {dest}")

        source = _rebuild_source(dest, name, up) or resolve_source(name, source)
        if offline and _is_url(source):
            raise FetchError(f"{name} is not cached in {home} and its source {source} is remote; offline "
                             "(SIMAM2_OFFLINE) a fetch takes only local mirrors: set SIMAM2_SOURCE to them")
        try:
            building = Path(tempfile.mkdtemp(prefix=f".{key}.tmp-", dir=home))
        except OSError as e:
            raise _unwritable(home, e) from e
        try:
            _build(name, up, source, building, patches, say)
            _make_shareable(building)
            _move_into_place(building, dest, key)
        except BaseException:  # KeyboardInterrupt too: never leave a half checkout behind
            _rmtree(building)
            raise
    say(f"{name}: done -> {dest}")
    return dest


def _unwritable(home: Path, error: OSError) -> UsageError:
    return UsageError(f"cannot write to the cache folder {home} ({error.strerror or error}): "
                      f"point --home (or $SIMAM2_HOME) at a writable folder, or make {home} writable")


def _print_list(home: str | None) -> None:
    for name, up in UPSTREAMS.items():
        where = checkout_dir(name, home)
        state = f"cached at {where}" if where.exists() else "not fetched"
        print(f"{name}: {up.slug} @ {up.sha} ({state})")
        print(f"    licence: {up.license}")
        for script, doc in up.entry_scripts:
            print(f"    {script}: {doc}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vendor_fetch.py",
        description="Fetch upstream codebases at their pinned commits, apply patches/<name>/*.patch, "
                    "and cache the checkouts outside the repository.")
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help=f"upstreams to fetch (default: all of {', '.join(UPSTREAMS)})")
    parser.add_argument("--source", help="clone source: a template with {owner} and {name}, or a plain "
                                         "path/URL for a single NAME (default: $SIMAM2_SOURCE, else "
                                         f"{DEFAULT_SOURCE})")
    parser.add_argument("--home", help=f"cache folder (default: $SIMAM2_HOME, else {DEFAULT_HOME})")
    parser.add_argument("--force", action="store_true",
                        help="rebuild the checkouts even when cached or modified")
    parser.add_argument("--list", action="store_true",
                        help="list the pinned upstreams, their licences and entry scripts, and exit")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Command line: fetch the named upstreams (all by default); 0 on success, 1 on a failed fetch,
    2 on bad arguments (a refused source, an unwritable cache folder). Expected failures print one
    ``error:`` line on stderr, no traceback."""
    ns = build_parser().parse_args(argv)
    if ns.list:
        _print_list(ns.home)
        return 0
    unknown = [n for n in ns.names if n not in UPSTREAMS]
    if unknown:
        print(f"error: unknown upstream{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
              f"known: {', '.join(UPSTREAMS)}", file=sys.stderr)
        return 2
    names = list(dict.fromkeys(ns.names)) or list(UPSTREAMS)
    source = ns.source or os.environ.get("SIMAM2_SOURCE")
    if source and len(names) > 1 and not is_template(source):
        print(f"error: source {redact(source)!r} has no {{owner}}/{{name}} placeholders, so it can serve only "
              f"one upstream; name one, or use a template", file=sys.stderr)
        return 2
    failed = 0
    try:
        for name in names:
            try:
                fetch(name, source=ns.source, home=ns.home, force=ns.force)
            except UsageError as e:  # the same input would fail for every other name too
                print(f"error: {e}", file=sys.stderr)
                return 2
            except FetchError as e:
                print(f"error: {e}", file=sys.stderr)
                failed += 1
    except KeyboardInterrupt:
        print("error: interrupted; the cache is as it was before this fetch", file=sys.stderr)
        return 130
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

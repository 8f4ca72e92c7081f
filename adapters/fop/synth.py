"""A tiny synthetic face–voice dataset in FOP's on-disk format (VoxCeleb1 features stand-in).

FOP reads pre-extracted embeddings from CSV files under ``features/`` of its working directory:

============================================  ==============================================
file                                          rows: columns
============================================  ==============================================
``faceTrain.csv``                             one face per row: 4096 features, identity
``voiceTrain.csv``                            the same rows' voices: 512 features, identity
``face_veriflist_test_random_<split>.csv``    pair i's face: 4096 features, identity
``voice_veriflist_test_random_<split>.csv``   pair i's voice: 512 features, identity
============================================  ==============================================

No header; the identity is the last column. main.py takes the face file's column 4096 as the label
and drops the last column of both training files; the evaluation code keeps the first 4096 / 512
columns of the lists, so their identity column is ignored. In a verification list, pair i is a
matching face–voice pair when i is even and a non-matching one when i is odd: FOP's evaluation
labels pairs by that alternation alone (``same_func``), not from any column.

``<split>`` is ``unseenunheard`` (identities not in the training files; the only list the upstream
reads, by that name) or ``seenheard`` (training identities, new samples; the name follows the
upstream's by analogy). The folder written is itself a working directory for ``main.py``:
``features/`` and an empty ``output/``.

Identities share structure across modalities: each identity has a latent vector that both its faces
and its voices are drawn around (through fixed random projections, one per modality, with
per-sample noise), plus a face-only latent that voices cannot predict. A model can thus learn to
match faces and voices of identities it never saw, and EER moves off 50 %.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

FACE_DIM = 4096  # VGGFace fc7, as FOP's read_data hard-codes
VOICE_DIM = 512  # utterance-level aggregator embedding, as FOP's evaluation hard-codes
SPLITS = ("unseenunheard", "seenheard")
TRAIN_FILES = ("faceTrain.csv", "voiceTrain.csv")


def list_files(split: str) -> tuple[str, str]:
    """(face, voice) file names of ``split``'s verification list, under ``features/``."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    return f"face_veriflist_test_random_{split}.csv", f"voice_veriflist_test_random_{split}.csv"


class _Population:
    """Identities drawn around shared latents; faces and voices through fixed random projections."""

    def __init__(self, rng: np.random.Generator, latent: int, face_only: int, noise: float):
        self.rng, self.latent, self.face_only, self.noise = rng, latent, face_only, noise
        self.face_proj = rng.standard_normal((latent + face_only, FACE_DIM)) / np.sqrt(latent + face_only)
        self.voice_proj = rng.standard_normal((latent, VOICE_DIM)) / np.sqrt(latent)

    def identities(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(shared latents (n, latent), face-only latents (n, face_only))."""
        return self.rng.standard_normal((n, self.latent)), self.rng.standard_normal((n, self.face_only))

    def faces(self, shared: np.ndarray, face_only: np.ndarray) -> np.ndarray:
        z = np.concatenate([shared, face_only], 1)
        z = z + self.noise * self.rng.standard_normal(z.shape)
        # VGGFace fc7 features come after a ReLU: non-negative
        return np.maximum(z @ self.face_proj + 0.1 * self.rng.standard_normal((len(z), FACE_DIM)), 0.0)

    def voices(self, shared: np.ndarray) -> np.ndarray:
        z = shared + self.noise * self.rng.standard_normal(shared.shape)
        v = z @ self.voice_proj + 0.1 * self.rng.standard_normal((len(z), VOICE_DIM))
        return v / np.linalg.norm(v, axis=1, keepdims=True)


def _pairs(rng: np.random.Generator, n_ids: int, n_pairs: int) -> tuple[np.ndarray, np.ndarray]:
    """(face identity, voice identity) per pair: equal on even rows, different on odd rows."""
    face_id = rng.integers(0, n_ids, n_pairs)
    voice_id = face_id.copy()
    odd = np.arange(n_pairs) % 2 == 1
    voice_id[odd] = (face_id[odd] + rng.integers(1, n_ids, odd.sum())) % n_ids
    return face_id, voice_id


def _write(path: Path, features: np.ndarray, ids: np.ndarray) -> None:
    """Features then the identity as the last column, no header (``pd.read_csv(header=None)``)."""
    table = np.concatenate([features, ids[:, None].astype(features.dtype)], 1)
    np.savetxt(path, table, fmt=["%.4g"] * features.shape[1] + ["%d"], delimiter=",")


def write_fop(out_dir, seed: int = 0, train_ids: int = 16, samples_per_id: int = 16, test_ids: int = 16,
              pairs: int = 200, latent: int = 8, face_only: int = 4, noise: float = 0.6) -> Path:
    """Write the training files and both splits' verification lists to ``out_dir/features``.

    ``pairs`` must be even and is best a multiple of 20: FOP's evaluation splits the pairs into 10
    folds, and with equal folds of alternating pairs its fold-averaged ROC equals the pooled one.
    Returns ``out_dir``.
    """
    if pairs < 20 or pairs % 2:
        raise ValueError(f"pairs must be an even number >= 20 (FOP's evaluation uses 10 folds), got {pairs}")
    if train_ids < 2 or test_ids < 2 or samples_per_id < 1:
        raise ValueError("need at least 2 training and 2 test identities and 1 sample per identity")
    out = Path(out_dir)
    features = out / "features"
    features.mkdir(parents=True, exist_ok=True)
    (out / "output").mkdir(exist_ok=True)
    rng = np.random.default_rng(seed)
    pop = _Population(rng, latent, face_only, noise)

    seen_shared, seen_face = pop.identities(train_ids)
    ids = np.repeat(np.arange(train_ids), samples_per_id)
    # the same rows of both training files belong to the same identity (main.py zips them)
    _write(features / TRAIN_FILES[0], pop.faces(seen_shared[ids], seen_face[ids]), ids)
    _write(features / TRAIN_FILES[1], pop.voices(seen_shared[ids]), ids)

    unseen_shared, unseen_face = pop.identities(test_ids)
    populations = {"seenheard": (seen_shared, seen_face, 0), "unseenunheard": (unseen_shared, unseen_face, train_ids)}
    for split, (shared, face_only_latent, offset) in populations.items():
        face_id, voice_id = _pairs(rng, len(shared), pairs)
        face_file, voice_file = list_files(split)
        _write(features / face_file, pop.faces(shared[face_id], face_only_latent[face_id]), face_id + offset)
        _write(features / voice_file, pop.voices(shared[voice_id]), voice_id + offset)
    return out

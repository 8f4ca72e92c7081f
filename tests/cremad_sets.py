"""A synthetic CREMA-D for end-to-end runs of OGM-GE's main.py whose evaluation is known in advance."""

import csv

from simam2.adapters.ogm_ge.synth import CREMAD_EMOTIONS, write_cremad


def cremad_every_label(root, n_train: int, n_test: int, frame_size: int):
    """``write_cremad`` with each test clip listed under all six labels: any model scores Top-1 = 1/6
    > 0, so main.py always writes its checkpoint after epoch 0."""
    root = write_cremad(root, n_train=n_train, n_test=n_test, frame_size=frame_size)
    test_csv = root / "data" / "CREMAD" / "test.csv"
    with open(test_csv, newline="") as f:
        clips = [row[0] for row in csv.reader(f)]
    with open(test_csv, "w", newline="") as f:
        csv.writer(f).writerows((clip, emo) for clip in clips for emo in CREMAD_EMOTIONS)
    return root

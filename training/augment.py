"""Augmentation for small real training sets, on model inputs (n, 4096, 12) in mV at 400 Hz.

Each change keeps every label true: amplitude scaling, a shift and a crop within the 4096-sample
window, baseline wander, noise, one lead dropped. Nothing that changes the rate or the intervals
(no time stretching): SB, ST and 1dAVb are defined by them. Wander and noise go only where the
recording has samples, not into the zero padding the preprocessing added.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ecg_edge.spec import SAMPLING_RATE_HZ


@dataclass(frozen=True)
class Augment:
    scale: tuple[float, float] = (0.8, 1.25)  # whole-recording amplitude factor (log-uniform)
    max_shift_s: float = 0.5  # the recording moves by up to this within the window
    min_keep: float = 0.85  # a crop keeps at least this share of the recording's samples
    wander_mv: float = 0.15  # baseline wander: a 0.05-0.5 Hz sinusoid of up to this amplitude
    noise_mv: float = 0.03  # white noise of up to this standard deviation
    drop_lead: float = 0.1  # chance that one lead reads zero (a lead off)

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        n, length, leads = x.shape
        out = np.zeros_like(x)
        t = np.arange(length) / SAMPLING_RATE_HZ
        for i in range(n):
            present = np.flatnonzero(np.any(x[i] != 0, axis=1))
            if present.size == 0:
                out[i] = x[i]
                continue
            start, stop = int(present[0]), int(present[-1]) + 1
            keep = int((stop - start) * rng.uniform(self.min_keep, 1.0))
            begin = start + int(rng.integers(0, stop - start - keep + 1))
            piece = x[i, begin:begin + keep] * np.exp(rng.uniform(*np.log(self.scale)))
            max_shift = int(self.max_shift_s * SAMPLING_RATE_HZ)
            where = int(np.clip(begin + rng.integers(-max_shift, max_shift + 1), 0, length - keep))
            phase = 2 * np.pi * rng.uniform(0.05, 0.5) * t[:keep] + rng.uniform(0, 2 * np.pi)
            wander = rng.uniform(0, self.wander_mv) * np.sin(phase)
            piece = piece + wander[:, None] * rng.uniform(0.5, 1.0, leads)
            piece = piece + rng.normal(0, rng.uniform(0, self.noise_mv), piece.shape)
            if rng.random() < self.drop_lead:
                piece[:, rng.integers(leads)] = 0.0
            out[i, where:where + keep] = piece
        return out.astype(np.float32, copy=False)


def sample_weights(labels: np.ndarray, cap: float = 10.0) -> np.ndarray:
    """Per exam, a weight that lifts the rare classes of a small set: each class's positives weigh
    sqrt(negatives / positives) (at most `cap`), an exam the largest of its positive classes' weights
    (1 for an exam with none); scaled to a mean of 1 so the learning rate keeps its meaning."""
    labels = np.asarray(labels, dtype=np.float64)
    positives = labels.sum(axis=0)
    per_class = np.where(positives > 0, np.sqrt((len(labels) - positives) / np.maximum(positives, 1)), 1.0)
    per_class = np.clip(per_class, 1.0, cap)
    weights = np.max(np.where(labels > 0.5, per_class, 1.0), axis=1)
    return (weights / weights.mean()).astype(np.float32)

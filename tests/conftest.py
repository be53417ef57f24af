"""Shared fixtures: the real corpus (../shared/corpus) and a small, fixed subset of it.

Tests that need the corpus use the `corpus` fixture and skip with a clear reason when it is absent.
Area-specific fixtures live in the test modules themselves (or tests/_<area>.py), not here.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest

from screamdetect.audio import SAMPLE_RATE

REPO = Path(__file__).resolve().parents[1]
CORPUS = Path(os.environ.get("SCREAMDETECT_CORPUS", REPO.parent / "shared" / "corpus"))


@pytest.fixture(scope="session")
def corpus() -> Path:
    """Path of ../shared/corpus (or $SCREAMDETECT_CORPUS); skips the test when it is absent."""
    if not (CORPUS / "manifest.csv").is_file():
        pytest.skip(f"real corpus not found at {CORPUS} (set SCREAMDETECT_CORPUS or put shared/ beside the repo)")
    return CORPUS


@pytest.fixture(scope="session")
def corpus_subset(corpus, tmp_path_factory) -> Path:
    """A manifest of 40 corpus clips (12 screams, 28 non-screams from several sources), fixed by seed.

    Returns the path of the subset's manifest.csv; its paths are absolute, pointing into the real corpus.
    """
    import csv

    with open(corpus / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    rng = random.Random(1234)
    pos = [r for r in rows if r["label"] == "1"]
    neg = [r for r in rows if r["label"] == "0"]
    pick = rng.sample(pos, 12) + rng.sample(neg, 28)
    out = tmp_path_factory.mktemp("subset") / "manifest.csv"
    with open(out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        for r in pick:
            w.writerow({**r, "path": str((corpus / r["path"]).resolve())})
    return out


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def sine(freq_hz: float, dur_s: float, amp: float = 0.5, sr: int = SAMPLE_RATE) -> np.ndarray:
    """A float32 sine of known frequency and amplitude (a signal with known answers)."""
    t = np.arange(round(dur_s * sr)) / sr
    return (amp * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32)

"""Benchmark: screamdetect.features.log_mel against librosa on a 10 s clip (median of repeated runs).

Run: .venv/bin/python bench/bench_features.py [--repeat N] [--seconds S]
Calls are interleaved (both see the same machine load). Prints the median time of each and the speed ratio (the target is >= 5x faster than librosa), for the study's
settings (128 mels, 25 ms window, 10 ms hop) and a second setting (64 mels, 32/16 ms, 50-7600 Hz).

librosa's mel projection is a BLAS product, multi-threaded by default; log_mel uses no BLAS (a sparse product).
On a busy machine BLAS threads slow librosa down a lot, so also run with OPENBLAS_NUM_THREADS=1 for the
compute-only comparison.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np


def _interleaved_times(fns, repeat: int) -> list[list[float]]:
    """Seconds per call of each function, the calls interleaved so that both see the same machine load."""
    for fn in fns:
        fn()  # warm-up: caches (filterbank, window), FFT plans, imports
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeat):
        for fn, ts in zip(fns, times):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
    return times


def main() -> None:
    import librosa

    from screamdetect.audio import SAMPLE_RATE
    from screamdetect.features import FrontEnd, log_mel

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=30, help="timed runs per implementation (median reported)")
    ap.add_argument("--seconds", type=float, default=10.0, help="clip length in seconds")
    args = ap.parse_args()

    rng = np.random.default_rng(0)
    y = (0.1 * rng.standard_normal(int(args.seconds * SAMPLE_RATE))).astype(np.float32)
    settings = [FrontEnd(), FrontEnd(n_mels=64, win_s=0.032, hop_s=0.016, fmin=50.0, fmax=7600.0)]
    blas = os.environ.get("OPENBLAS_NUM_THREADS") or os.environ.get("OMP_NUM_THREADS") or "default"
    print(f"clip: {args.seconds:g} s of noise at {SAMPLE_RATE} Hz, {args.repeat} runs each, interleaved; "
          f"BLAS threads: {blas}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    for fe in settings:
        def ours(fe=fe):
            return log_mel(y, frontend=fe)

        def ref(fe=fe):
            m = librosa.feature.melspectrogram(y=y, sr=SAMPLE_RATE, n_fft=fe.fft_size, hop_length=fe.hop_length,
                                               win_length=fe.win_length, n_mels=fe.n_mels, fmin=fe.fmin,
                                               fmax=fe.fmax, center=True, pad_mode="constant", power=2.0)
            return librosa.power_to_db(m, ref=1.0, amin=1e-10, top_db=None)

        err = float(np.max(np.abs(ours() - ref())))
        ts_ours, ts_ref = _interleaved_times([ours, ref], args.repeat)
        t_ours, t_ref = statistics.median(ts_ours), statistics.median(ts_ref)
        print(f"n_mels={fe.n_mels} win={fe.win_s * 1e3:g} ms hop={fe.hop_s * 1e3:g} ms: "
              f"screamdetect {t_ours * 1e3:.2f} ms, librosa {t_ref * 1e3:.2f} ms (medians), "
              f"ratio {t_ref / t_ours:.1f}x; best-of ratio {min(ts_ref) / min(ts_ours):.1f}x "
              f"(max |diff| {err:.2e} dB)")


if __name__ == "__main__":
    main()

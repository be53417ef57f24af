"""screamdetect: detect human screams in audio files and live streams.

    from screamdetect import Detector, load_audio
    det = Detector.load()                      # the shipped model (or Detector.load("my.onnx"))
    events = det.detect(load_audio("a.wav"))   # [Event(start_s, end_s, peak_score), ...]

Names are imported lazily, so `import screamdetect` stays cheap and never imports torch.
"""

from __future__ import annotations

from importlib import import_module

__all__ = ["SAMPLE_RATE", "AudioError", "Detector", "Event", "StreamDetector", "__version__", "load_audio"]

_LAZY = {
    "Detector": "detector", "StreamDetector": "detector", "Event": "detector", "Smoothing": "detector",
    "load_audio": "audio", "AudioError": "audio", "SAMPLE_RATE": "audio",
}


def __getattr__(name: str):
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("screamdetect")
        except PackageNotFoundError:  # running from a source tree that was not installed
            return "0.0.0+unknown"
    if name in _LAZY:
        value = getattr(import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'screamdetect' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)

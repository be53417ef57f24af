"""A camera-like RTSP server for the tests: serves a WAV file at real-time pace as G.711 µ-law (PCMU, 8 kHz), the
audio most IP cameras send, over RTSP (TCP-interleaved RTP included), with GStreamer's RTSP server.

Run with a Python that has PyGObject and GstRtspServer (Debian: python3-gi, gir1.2-gst-rtsp-server-1.0,
gstreamer1.0-plugins-good; `make system-deps` installs them), not the project's venv:

    /usr/bin/python3 tests/_rtsp_server.py FILE.wav PORT      # rtsp://127.0.0.1:PORT/live; prints "serving"
"""

import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer

Gst.init(None)
wav, port = sys.argv[1], sys.argv[2]
server = GstRtspServer.RTSPServer()
server.set_address("127.0.0.1")
server.set_service(port)
factory = GstRtspServer.RTSPMediaFactory()
factory.set_launch(f"( filesrc location={wav} ! wavparse ! audioconvert ! audioresample ! "
                   "audio/x-raw,rate=8000,channels=1 ! mulawenc ! rtppcmupay name=pay0 pt=0 )")
factory.set_shared(True)
server.get_mount_points().add_factory("/live", factory)
if server.attach(None) == 0:
    sys.exit(f"cannot listen on port {port}")
print("serving", flush=True)
GLib.MainLoop().run()

"""Figures (matplotlib) and self-contained HTML reports with embedded PNGs.

Computes nothing: callers pass in metrics and arrays. matplotlib is imported lazily (the [train] extra) and
always with the non-interactive Agg backend.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path


def plt():
    """matplotlib.pyplot with the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as pyplot

    return pyplot


def fig_to_png_bytes(fig, dpi: int = 110) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt().close(fig)
    return buf.getvalue()


def save_fig(fig, path: str | Path, dpi: int = 110) -> bytes:
    """Write the figure as PNG to `path` and return the PNG bytes (to embed in a report as well)."""
    data = fig_to_png_bytes(fig, dpi)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_bytes(data)
    return data


def img_tag(png: bytes, alt: str = "") -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def table_html(rows: list[dict], columns: list[str] | None = None, floatfmt: str = "{:.3f}") -> str:
    if not rows:
        return "<p><em>(empty)</em></p>"
    columns = columns or list(rows[0])

    def cell(v):
        if isinstance(v, float):
            return floatfmt.format(v)
        return html.escape(str(v))

    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{cell(r.get(c, ''))}</td>" for c in columns) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def table_markdown(rows: list[dict], columns: list[str] | None = None, floatfmt: str = "{:.3f}") -> str:
    if not rows:
        return ""
    columns = columns or list(rows[0])
    fmt = lambda v: floatfmt.format(v) if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


CSS = """
body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
h1,h2,h3{font-weight:600} img{max-width:100%;height:auto}
table{border-collapse:collapse;margin:1em 0;font-size:.9em} th,td{border:1px solid #ccc;padding:.3em .6em;text-align:right}
th{background:#f3f3f3} td:first-child,th:first-child{text-align:left}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(360px,1fr));gap:1em}
.note{color:#555;font-size:.9em}
"""


def html_page(title: str, sections: list[tuple[str, str]], intro: str = "") -> str:
    """One self-contained HTML page: `sections` are (heading, html body) pairs."""
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>"]
    if intro:
        parts.append(f"<p class='note'>{intro}</p>")
    for heading, body in sections:
        parts.append(f"<h2>{html.escape(heading)}</h2>\n{body}")
    parts.append("</body></html>")
    return "\n".join(parts)

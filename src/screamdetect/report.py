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
    from matplotlib import pyplot

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
    fmt = lambda v: floatfmt.format(v) if isinstance(v, float) else str(v)
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


# ---- study figures (grid and cross-dataset phases) -----------------------------------------------------------

def plot_confusion(cm, title: str = "", labels: tuple[str, str] = ("not scream", "scream")):
    """Confusion matrix figure. cm: 2×2 counts [[tn, fp], [fn, tp]] (rows = truth, columns = prediction)."""
    import numpy as np

    cm = np.asarray(cm)
    fig, ax = plt().subplots(figsize=(3.6, 3.2))
    ax.imshow(cm, cmap="Blues")
    for i in range(2):
        for j in range(2):
            ax.text(j, i, str(int(cm[i, j])), ha="center", va="center",
                    color="white" if cm[i, j] > cm.max() / 2 else "black", fontsize=12)
    ax.set_xticks([0, 1], labels)
    ax.set_yticks([0, 1], labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    return fig


def plot_history(history: dict, title: str = "", best_epoch: int | None = None):
    """Loss and accuracy curves per epoch (train and validation; validation F1 of the scream class dashed).

    history: {"loss", "val_loss", "acc", "val_acc", "val_f1"} lists of floats (NaN where absent).
    """
    fig, (a1, a2) = plt().subplots(1, 2, figsize=(8, 3))
    ep = list(range(1, len(history.get("loss", [])) + 1))
    mk = {"marker": "o", "markersize": 3}  # a one-epoch run still shows its point
    a1.plot(ep, history.get("loss", []), label="train", **mk)
    a1.plot(ep, history.get("val_loss", []), label="val", **mk)
    a1.set_title("loss", fontsize=9)
    a2.plot(ep, history.get("acc", []), label="train acc", **mk)
    a2.plot(ep, history.get("val_acc", []), label="val acc", **mk)
    if history.get("val_f1"):
        a2.plot(ep, history["val_f1"], "--", label="val F1 (scream)", **mk)
    a2.set_title("accuracy", fontsize=9)
    a2.set_ylim(0, 1.02)
    for a in (a1, a2):
        a.set_xlabel("epoch")
        if best_epoch is not None and best_epoch >= 0:
            a.axvline(best_epoch + 1, color="grey", lw=0.8, ls=":")
        a.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    return fig


def plot_pr(pr: dict, ap: float, title: str = "", prevalence: float | None = None):
    """Precision-recall curve of the scream class. pr: {"precision": [...], "recall": [...]}; ap: average precision."""
    fig, ax = plt().subplots(figsize=(3.8, 3.2))
    if pr.get("recall"):
        ax.step(pr["recall"], pr["precision"], where="post", label=f"AP {ap:.3f}")
    if prevalence is not None:
        ax.axhline(prevalence, color="grey", lw=0.8, ls=":", label=f"chance {prevalence:.3f}")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    return fig


def plot_roc(roc: dict, auc: float, title: str = ""):
    """ROC curve. roc: {"fpr": [...], "tpr": [...]}; auc: area under it."""
    fig, ax = plt().subplots(figsize=(3.8, 3.2))
    if roc.get("fpr"):
        ax.plot(roc["fpr"], roc["tpr"], label=f"AUC {auc:.3f}")
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    return fig


def plot_operating_curve(curve: list[dict], threshold: float, target_per_hour: float | None = None, title: str = ""):
    """Event recall at each SNR against false alarms per hour, one point per threshold (the curve of
    evaluate.operating_curve), the detector's own threshold marked; beside it, recall against SNR at that threshold.
    x: false alarms per hour on a symmetric-log axis (0 is a real value here)."""
    fig, (ax, bx) = plt().subplots(1, 2, figsize=(9.5, 3.6), gridspec_kw={"width_ratios": [1.6, 1]})
    snrs = list(curve[0]["recall_by_snr"]) if curve else []
    own = min(curve, key=lambda r: abs(r["threshold"] - threshold)) if curve else None
    cmap = plt().get_cmap("viridis")
    for i, snr in enumerate(snrs):
        color = cmap(i / max(1, len(snrs) - 1))
        # the best recall any threshold gives within each false-alarm rate (the envelope; smoothing can make
        # recall dip as the threshold falls)
        fas = sorted({r["false_alarms_per_hour"] for r in curve})
        best = [max(r["recall_by_snr"][snr] for r in curve if r["false_alarms_per_hour"] <= x) for x in fas]
        ax.step(fas, best, where="post", color=color, label=f"{snr} dB")
        if own is not None:
            ax.plot(own["false_alarms_per_hour"], own["recall_by_snr"][snr], "o", color=color, ms=5)
    if target_per_hour is not None:
        ax.axvline(target_per_hour, color="grey", ls=":", lw=0.9, label=f"target {target_per_hour:g}/h")
    ax.set_xscale("symlog", linthresh=1.0, linscale=0.8)
    ticks = [x for x in (0, 0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)
             if x <= max([1.0] + [r["false_alarms_per_hour"] for r in curve])]
    ax.set_xticks(ticks, [f"{x:g}" for x in ticks])
    ax.set_xlim(left=0)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("false alarms per hour (scream-free scenes)")
    ax.set_ylabel("event recall")
    ax.set_title(f"{title}: best recall within each rate; dots: threshold {threshold:g}".strip(": "), fontsize=9)
    ax.legend(fontsize=7, title="SNR", title_fontsize=7)
    if own is not None:
        bx.plot([float(x) for x in snrs], [own["recall_by_snr"][x] for x in snrs], "o-", color="C3")
        for x in snrs:
            bx.annotate(f"{own['recall_by_snr'][x]:.2f}", (float(x), own["recall_by_snr"][x]),
                        textcoords="offset points", xytext=(0, 6), ha="center", fontsize=7)
        bx.set_title(f"at threshold {threshold:g}: {own['false_alarms_per_hour']:.2g} false alarms/h", fontsize=9)
    bx.set_ylim(-0.02, 1.1)
    bx.set_xlabel("SNR (dB)")
    bx.set_ylabel("event recall")
    fig.tight_layout()
    return fig


def plot_summary_bars(rows: list[dict], label_key: str = "run", metrics: tuple[str, ...] = ("f1", "ap", "recall")):
    """Grouped horizontal bars comparing runs. rows: dicts with `label_key` and the metric keys (floats)."""
    import numpy as np

    n = len(rows)
    fig, ax = plt().subplots(figsize=(8, 0.32 * n * len(metrics) / 2 + 1.5))
    y = np.arange(n)
    h = 0.8 / len(metrics)
    for k, m in enumerate(metrics):
        vals = [float(r.get(m, float("nan"))) for r in rows]
        ax.barh(y + k * h, np.nan_to_num(vals), height=h, label=m)
    ax.set_yticks(y + h * (len(metrics) - 1) / 2, [str(r[label_key]) for r in rows], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title("test split, threshold chosen on validation", fontsize=9)
    return fig


def study_report_html(title: str, intro: str, summary_rows: list[dict], columns: list[str], summary_png: bytes | None,
                      runs: list[tuple[str, str, list[bytes]]], extra_sections: list[tuple[str, str]] = ()) -> str:
    """One self-contained page comparing all runs: the summary table and chart, then each run's figures.

    runs: (heading, html note, [PNG bytes]) per run.
    """
    body = table_html(summary_rows, columns)
    if summary_png:
        body += img_tag(summary_png, "summary")
    sections = [("Summary", body), *extra_sections]
    for heading, note, pngs in runs:
        sections.append((heading, f"<p class='note'>{note}</p><div class='grid'>"
                         + "".join(img_tag(p, heading) for p in pngs) + "</div>"))
    return html_page(title, sections, intro)

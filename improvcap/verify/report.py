"""The shoot-day report of `improvcap verify --report FILE.html`: one self-contained HTML file.

It needs no server, network, script, font or stylesheet from elsewhere: CSS is inline and the plots are
inline SVG drawn here (no plotting library), so the file opens in any browser years later and can be
mailed with the drives. A Content-Security-Policy forbids scripts and remote loads as a second line of
defence: every string from the results (take names, reasons, stream and performer ids come from disk and
may be hostile) is escaped with html.escape.

The results are verify's per-take dicts. Any key may be missing or None (shown as "–"), lists may be
empty, and numbers may be junk: the report renders whatever it is given and never raises on content.
"""

from __future__ import annotations

import datetime as _dt
import html
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import TakeError, UsageError
from ..take.atomic import Folder, pid_tag, rewriting
from .findings import takes

DASH = "–"
VERDICTS = ("OK", "WARN", "FAIL")
MAX_POINTS = 800  # per polyline (about two per pixel column); longer series keep each bin's min and max
# Okabe-Ito: told apart by colour-blind readers too
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442")
STREAM_KEYS = (
    "kind",
    "count",
    "drops",
    "drift_ppm",
    "residual_p99_ms",
    "slate_offsets_ms",
    "frame_intervals_ms",
    "clock_residuals_ms",
    "frame_intervals_t_s",
    "clock_residuals_t_s",
    "nominal_rate",
)


# --- values from the results, whatever they are ------------------------------------------------------


def esc(value: Any) -> str:
    """Any value as escaped text (quotes too: the same text goes into attributes)."""
    return html.escape(str(value), quote=True)


def _num(value: Any) -> float | None:
    """A finite real number, or None (bools, strings, NaN and infinities are not numbers here)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        return None
    try:
        v = float(value)
    except OverflowError:  # an int beyond float range
        return None
    return v if math.isfinite(v) else None


def _fmt(value: Any, spec: str, unit: str = "") -> str:
    v = _num(value)
    if v is None:
        return DASH
    return f"{v:{spec}}" + (f"\u00a0{unit}" if unit else "")  # no break between number and unit


def _text(value: Any) -> str:
    return DASH if value is None or (isinstance(value, str) and not value) else esc(value)


def _dict(value: Any) -> Mapping:
    return value if isinstance(value, Mapping) else {}


def _list(value: Any) -> list:
    return list(value) if isinstance(value, (list, tuple, np.ndarray)) else []


def _duration(seconds: Any) -> str:
    s = _num(seconds)
    if s is None:
        return DASH
    if s < 60:
        return f"{s:.1f}\u00a0s"
    m, sec = divmod(int(round(s)), 60)
    if m < 60:
        return f"{m}\u00a0min {sec:02d}\u00a0s"
    h, m = divmod(m, 60)
    return f"{h}\u00a0h {m:02d}\u00a0min {sec:02d}\u00a0s"


def _bytes(n: Any) -> str:
    v = _num(n)
    if v is None:
        return DASH
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(v) < 1000 or unit == "TB":
            return f"{v:.0f}\u00a0{unit}" if unit == "B" else f"{v:.1f}\u00a0{unit}"
        v /= 1000
    return DASH


def _verdict(value: Any) -> str:
    """The CSS class of a verdict: only the three known ones get colours."""
    return value.lower() if isinstance(value, str) and value in VERDICTS else "unknown"


def _streams(result: Mapping) -> dict[str, Mapping]:
    return {str(k): _dict(v) for k, v in _dict(result.get("streams")).items()}


def _worst(values: Iterable[Any]) -> float | None:
    """The value of largest magnitude, sign kept."""
    nums = [v for v in (_num(x) for x in values) if v is not None]
    return max(nums, key=abs) if nums else None


def _take_drift(result: Mapping) -> float | None:
    v = _num(result.get("worst_drift_ppm"))
    return v if v is not None else _worst(s.get("drift_ppm") for s in _streams(result).values())


def _take_offset(result: Mapping) -> float | None:
    v = _num(result.get("worst_slate_offset_ms"))
    if v is not None:
        return v
    return _worst(x for s in _streams(result).values() for x in _list(s.get("slate_offsets_ms")))


def _take_drops(result: Mapping) -> int | None:
    counts = [_num(s.get("drops")) for s in _streams(result).values()]
    known = [c for c in counts if c is not None]
    return int(sum(known)) if known else None


def _performer_ids(result: Mapping) -> list[str]:
    ids = []
    for p in _list(result.get("performers")):
        pid = p.get("id") if isinstance(p, Mapping) else p
        if pid is not None:
            ids.append(str(pid))
    return ids


def _consent(result: Mapping) -> dict[str, dict[str, list[str]]]:
    out = {}
    for scope, row in _dict(result.get("consent")).items():
        row = _dict(row)
        out[str(scope)] = {k: [str(i) for i in _list(row.get(k))] for k in ("allowed", "denied", "unspecified")}
    return out


# --- inline SVG plots ------------------------------------------------------------------------------


@dataclass
class Series:
    label: str
    x: np.ndarray
    y: np.ndarray
    markers: bool = False


@dataclass
class HLine:
    y: float
    label: str
    dashed: bool = True


@dataclass
class Plot:
    title: str
    xlabel: str
    ylabel: str
    series: list[Series]
    hlines: list[HLine] = field(default_factory=list)
    attrs: dict[str, str] = field(default_factory=dict)
    integer_x: bool = False  # counts (slate numbers): no ticks between them
    width: int = 560
    height: int = 240


def _floats(values: Any) -> np.ndarray:
    """A list as float64, NaN where an item is not a finite number."""
    items = _list(values)
    try:
        arr = np.asarray(items) if items else np.zeros(0)
        if arr.ndim == 1 and arr.dtype.kind in "iuf":  # the common case, fast
            return arr.astype(np.float64)
    except (ValueError, TypeError):  # ragged nested lists and the like
        pass
    return np.array([np.nan if _num(v) is None else _num(v) for v in items], dtype=np.float64)


def series_values(values: Any, duration_s: Any = None, times: Any = None) -> tuple[np.ndarray, np.ndarray, str]:
    """x, y (finite points only) and the x label of a plotted list. Points are placed at `times` when
    given, else spread evenly over the take's duration (verify downsamples evenly), else by position."""
    y, t = _floats(values), _floats(times)
    dur = _num(duration_s)
    if len(t) == len(y) and len(y):
        x, label = t, "take time (s)"
    elif dur is not None and dur > 0 and len(y) > 1:
        x, label = np.linspace(0.0, dur, len(y)), "take time (s)"
    else:
        x, label = np.arange(len(y), dtype=np.float64), "point"
    keep = np.isfinite(x) & np.isfinite(y)
    # absurd values stay visible as spikes without overflowing the axis arithmetic
    return np.clip(x[keep], -1e12, 1e12), np.clip(y[keep], -1e12, 1e12), label


def reduce_points(x: np.ndarray, y: np.ndarray, limit: int = MAX_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """At most `limit` points: each bin keeps its minimum and maximum in x order, so a lone spike stays."""
    if len(y) <= limit:
        return x, y
    size = -(-len(y) // (limit // 2))  # points per bin
    bins = -(-len(y) // size)
    pad = bins * size - len(y)
    low = np.concatenate([y, np.full(pad, np.inf)]).reshape(bins, size).argmin(axis=1)
    high = np.concatenate([y, np.full(pad, -np.inf)]).reshape(bins, size).argmax(axis=1)
    start = np.arange(bins) * size
    idx = np.unique(np.concatenate([start + low, start + high]))  # sorted: x order kept
    return x[idx], y[idx]


def nice_ticks(lo: float, hi: float, count: int = 5, min_step: float = 0.0) -> tuple[list[float], float]:
    """Round tick values (1, 2, 2.5, 5 × 10^k apart, at least `min_step`) covering [lo, hi], and their step."""
    span = hi - lo
    raw = max(span / max(count, 1), min_step)
    mag = 10.0 ** math.floor(math.log10(raw))
    steps = (1, 2, 5, 10) if min_step >= 1 else (1, 2, 2.5, 5, 10)
    step = next(m * mag for m in steps if raw <= m * mag * (1 + 1e-9))
    first = math.ceil(lo / step - 1e-9)
    ticks = []
    i = first
    while i * step <= hi + step * 1e-9:
        ticks.append(i * step)
        i += 1
    return ticks, step


def _tick_label(v: float, step: float) -> str:
    digits = max(0, -math.floor(math.log10(step) + 1e-9))
    if abs(step / 10**-digits - round(step / 10**-digits)) > 1e-6:
        digits += 1  # 2.5 × 10^k
    if abs(v) >= 1e6 or (v != 0 and abs(v) < 1e-4 and digits > 6):
        return f"{v:.3g}"
    text = f"{v:.{digits}f}"
    return "0" if float(text) == 0 else text


def _range(values: list[float]) -> tuple[float, float]:
    lo, hi = min(values), max(values)
    if hi - lo < 1e-12 * max(1.0, abs(hi)):
        pad = max(abs(hi) * 0.1, 1.0)
        return lo - pad, hi + pad
    pad = (hi - lo) * 0.05
    return lo - pad, hi + pad


def svg_plot(plot: Plot) -> str:
    """A line chart as inline SVG: axes, ticks, grid, tick labels, axis labels, reference lines, legend."""
    series = [(s, *reduce_points(s.x, s.y)) for s in plot.series if len(s.y)]
    hlines = [r for r in plot.hlines if math.isfinite(r.y) and abs(r.y) <= 1e12]
    w = plot.width
    legend, lx, ly = [], 64.0, 34.0  # legend rows under the title when several series share the plot
    if len(series) > 1:
        for i, (s, _, _) in enumerate(series):
            label = s.label if len(s.label) <= 24 else s.label[:23] + "…"
            width = 20 + 6.5 * len(label)
            if lx + width > w - 14 and lx > 64:
                lx, ly = 64.0, ly + 15
            legend.append(
                f'<rect x="{lx:.1f}" y="{ly - 9:.1f}" width="10" height="10" '
                f'fill="{PALETTE[i % len(PALETTE)]}"/><text x="{lx + 13:.1f}" y="{ly:.1f}">{esc(label)}</text>'
            )
            lx += width
    left, right, top, bottom = 64, 14, (int(ly) + 10 if legend else 30), 44
    h = plot.height + top - 30
    pw, ph = w - left - right, h - top - bottom
    xs = [float(v) for _, x, _ in series for v in (x.min(), x.max())] or [0.0, 1.0]
    ys = [float(v) for _, _, y in series for v in (y.min(), y.max())] + [r.y for r in hlines] or [0.0, 1.0]
    x0, x1 = _range(xs) if max(xs) > min(xs) else (min(xs) - 0.5, max(xs) + 0.5)
    y0, y1 = _range(ys)
    xticks, xstep = nice_ticks(x0, x1, 6, 1.0 if plot.integer_x else 0.0)
    yticks, ystep = nice_ticks(y0, y1, 5)

    def px(v: float) -> float:
        return left + (v - x0) / (x1 - x0) * pw

    def py(v: float) -> float:
        return top + (y1 - v) / (y1 - y0) * ph

    attrs = "".join(f' {esc(k)}="{esc(v)}"' for k, v in plot.attrs.items())
    out = [
        f'<svg class="plot" xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
        f'viewBox="0 0 {w} {h}" role="img" aria-label="{esc(plot.title)}"{attrs}>',
        f"<title>{esc(plot.title)}</title>",
        f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="#fff" stroke="#888"/>',
        f'<text x="{left}" y="18" class="pt">{esc(plot.title)}</text>',
    ]
    for t in yticks:
        y = py(t)
        out.append(
            f'<line x1="{left}" x2="{left + pw}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>'
            f'<line x1="{left - 4}" x2="{left}" y1="{y:.1f}" y2="{y:.1f}" class="tick"/>'
            f'<text x="{left - 7}" y="{y + 4:.1f}" text-anchor="end">{esc(_tick_label(t, ystep))}</text>'
        )
    for t in xticks:
        x = px(t)
        out.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top + ph}" y2="{top + ph + 4}" class="tick"/>'
            f'<text x="{x:.1f}" y="{top + ph + 17}" text-anchor="middle">{esc(_tick_label(t, xstep))}</text>'
        )
    out.append(
        f'<text x="{left + pw / 2:.1f}" y="{h - 6}" text-anchor="middle" class="al">{esc(plot.xlabel)}</text>'
        f'<text transform="translate(14 {top + ph / 2:.1f}) rotate(-90)" text-anchor="middle" '
        f'class="al">{esc(plot.ylabel)}</text>'
    )
    for r in hlines:
        y = py(r.y)
        dash = ' stroke-dasharray="6 4"' if r.dashed else ""
        out.append(
            f'<line x1="{left}" x2="{left + pw}" y1="{y:.1f}" y2="{y:.1f}" class="ref"{dash}/>'
            f'<text x="{left + pw - 4}" y="{y - 4:.1f}" text-anchor="end" class="rl">{esc(r.label)}</text>'
        )
    for i, (s, sx, sy) in enumerate(series):
        colour = PALETTE[i % len(PALETTE)]
        pts = " ".join(f"{px(a):.1f},{py(b):.1f}" for a, b in zip(sx, sy))
        if len(sx) > 1:
            out.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.3" points="{pts}"/>')
        if s.markers or len(sx) == 1:
            out += [f'<circle cx="{px(a):.1f}" cy="{py(b):.1f}" r="3" fill="{colour}"/>' for a, b in zip(sx, sy)]
    out += legend
    out.append("</svg>")
    return "".join(out)


def _period_ms(stream: Mapping, y: np.ndarray) -> float | None:
    """The nominal interval: from the stream's nominal rate, else the median interval."""
    rate = _num(stream.get("nominal_rate"))
    if rate is not None and rate > 0 and stream.get("kind") != "audio":
        return 1000.0 / rate
    return float(np.median(y)) if len(y) else None


def interval_plot(take_i: int, name: str, stream: Mapping, duration_s: Any) -> str:
    x, y, xlabel = series_values(stream.get("frame_intervals_ms"), duration_s, stream.get("frame_intervals_t_s"))
    if not len(y):
        return '<p class="nodata">no frame intervals</p>'
    period = _period_ms(stream, y)
    lines = [HLine(1.5 * period, f"1.5 × period ({1.5 * period:.3g} ms)")] if period else []
    return svg_plot(
        Plot(
            f"{name}: intervals between rows",
            xlabel,
            "interval (ms)",
            [Series(name, x, y)],
            lines,
            {"data-take": str(take_i), "data-stream": name, "data-plot": "intervals"},
        )
    )


def residual_plot(take_i: int, name: str, stream: Mapping, duration_s: Any) -> str:
    x, y, xlabel = series_values(stream.get("clock_residuals_ms"), duration_s, stream.get("clock_residuals_t_s"))
    if not len(y):
        return '<p class="nodata">no clock residuals</p>'
    return svg_plot(
        Plot(
            f"{name}: clock-fit residuals",
            xlabel,
            "host − fit (ms)",
            [Series(name, x, y)],
            [HLine(0.0, "0", dashed=False)],
            {"data-take": str(take_i), "data-stream": name, "data-plot": "residuals"},
        )
    )


def offset_plot(take_i: int, streams: Mapping[str, Mapping]) -> str:
    series = []
    for name, s in streams.items():
        y = _floats(s.get("slate_offsets_ms"))
        x = np.arange(1, len(y) + 1, dtype=np.float64)
        keep = np.isfinite(y)
        if keep.any():
            series.append(Series(name, x[keep], y[keep].clip(-1e12, 1e12), markers=True))
    if not series:
        return '<p class="nodata">no slate offsets</p>'
    return svg_plot(
        Plot(
            "slate offsets from the reference stream",
            "slate",
            "offset (ms)",
            series,
            [HLine(0.0, "0", dashed=False)],
            {"data-take": str(take_i), "data-plot": "offsets"},
            integer_x=True,
            width=720,
            height=260,
        )
    )


# --- the page --------------------------------------------------------------------------------------

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;color:#222;margin:24px;
max-width:1240px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:0 0 6px}h3{font-size:15px;margin:14px 0 6px}
table{border-collapse:collapse;margin:6px 0 10px}th,td{border:1px solid #ccc;padding:3px 8px;text-align:left;
vertical-align:top}td.w{overflow-wrap:anywhere}th{background:#f2f2f2;white-space:nowrap}
td.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}td .badge{white-space:nowrap}
.badge{display:inline-block;padding:1px 8px;border-radius:4px;font-weight:600;color:#fff;background:#666}
.ok .badge,.badge.ok{background:#1a7f37}.warn .badge,.badge.warn{background:#b35900}
.fail .badge,.badge.fail{background:#c62828}
tr.fail td{background:#fdecea}tr.warn td{background:#fff4e0}
section.take{border:1px solid #ccc;border-left:8px solid #666;padding:10px 14px;margin:18px 0;break-inside:avoid-page}
section.take.ok{border-left-color:#1a7f37}section.take.warn{border-left-color:#b35900}
section.take.fail{border-left-color:#c62828}
.meta{color:#555}.reasons li{margin:1px 0;overflow-wrap:anywhere}h2{overflow-wrap:anywhere}
.small{font-size:12px;color:#555}.nodata{color:#888;font-style:italic}
.plots{display:flex;flex-wrap:wrap;gap:8px}
svg.plot{font:11px system-ui,"DejaVu Sans",sans-serif;background:#fafafa;border:1px solid #e4e4e4}
svg.plot .pt{font-weight:600;font-size:12px}svg.plot .al{fill:#444}svg.plot .grid{stroke:#eee}
svg.plot .tick{stroke:#888}svg.plot .ref{stroke:#c62828;stroke-width:1}svg.plot .rl{fill:#c62828}
.counts span{margin-right:14px}
@media print{body{margin:0}section.take{page-break-inside:avoid}}
"""

# no script, no remote anything: even a string that got through unescaped could not run or phone home
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


def _table(
    header: Sequence[str] | None,
    rows: Iterable[Sequence[str]],
    numeric: Sequence[int] = (),
    row_classes: Sequence[str] | None = None,
    wrap: Sequence[int] = (),
) -> str:
    """A table of already-escaped cells; `wrap` columns (names, paths, reasons from disk) may break
    anywhere, so one long name cannot push the table off the page."""
    out = ["<table>"]
    if header:
        out += ["<thead><tr>", *(f"<th>{h}</th>" for h in header), "</tr></thead>"]
    out.append("<tbody>")
    for i, row in enumerate(rows):
        cls = f' class="{row_classes[i]}"' if row_classes else ""
        out.append(
            f"<tr{cls}>"
            + "".join(
                f'<td class="n">{c}</td>'
                if j in numeric
                else f'<td class="w">{c}</td>'
                if j in wrap
                else f"<td>{c}</td>"
                for j, c in enumerate(row)
            )
            + "</tr>"
        )
    out.append("</tbody></table>")
    return "".join(out)


def _ids(ids: Sequence[str]) -> str:
    return ", ".join(esc(i) for i in ids) if ids else DASH


def _day_consent(results: Sequence[Mapping]) -> str:
    """Across takes, per scope: who allowed, denied or did not say, and in how many takes everyone allowed."""
    scopes: dict[str, dict[str, list[str]]] = {}
    usable: dict[str, int] = {}
    with_performers = 0
    for r in results:
        if _performer_ids(r):
            with_performers += 1
        for scope, row in _consent(r).items():
            acc = scopes.setdefault(scope, {"allowed": [], "denied": [], "unspecified": []})
            for k, ids in row.items():
                acc[k] += [i for i in ids if i not in acc[k]]
            if row["allowed"] and not row["denied"] and not row["unspecified"]:
                usable[scope] = usable.get(scope, 0) + 1
    without = len(results) - with_performers
    note = (
        f"<p>{with_performers} of {takes(len(results))} {'has' if len(results) == 1 else 'have'} performers recorded"
        + (f"; <b>{without} without</b>" if without else "")
        + ".</p>"
    )
    if not scopes:
        return note + '<p class="nodata">no consent scopes recorded</p>'
    rows = [
        (
            esc(s),
            _ids(v["allowed"]),
            _ids(v["denied"]),
            _ids(v["unspecified"]),
            f"{usable.get(s, 0)} of {with_performers}",
        )
        for s, v in sorted(scopes.items())
    ]
    return note + _table(
        ("scope", "allowed by", "denied by", "not stated by", "takes where everyone allowed"),
        rows,
        numeric=(4,),
        wrap=(0, 1, 2, 3),
    )


def _summary(results: Sequence[Mapping], limits: Mapping | None) -> str:
    counts = {v: 0 for v in VERDICTS}
    other = 0
    for r in results:
        v = r.get("verdict")
        if isinstance(v, str) and v in counts:
            counts[v] += 1
        else:
            other += 1
    durations = [d for d in (_num(r.get("duration_s")) for r in results) if d is not None]
    sizes = [b for b in (_num(r.get("bytes")) for r in results) if b is not None]
    drops = [d for d in (_take_drops(r) for r in results) if d is not None]
    drift = [(v, i) for i, v in ((i, _take_drift(r)) for i, r in enumerate(results)) if v is not None]
    offset = [(v, i) for i, v in ((i, _take_offset(r)) for i, r in enumerate(results)) if v is not None]

    def worst(pairs: list[tuple[float, int]], spec: str, unit: str) -> str:
        if not pairs:
            return DASH
        v, i = max(pairs, key=lambda p: abs(p[0]))
        return f'{_fmt(v, spec, unit)} (<a href="#take-{i}">{_text(results[i].get("take"))}</a>)'

    out = [
        '<h2>Summary</h2><p class="counts">',
        *(f'<span><span class="badge {v.lower()}">{v}</span> {counts[v]}</span>' for v in VERDICTS),
        f'<span><span class="badge">other</span> {other}</span>' if other else "",
        f"<span>{takes(len(results))}</span></p>",
    ]
    facts = [
        ("total duration", _duration(sum(durations)) if durations else DASH),
        ("total size", _bytes(sum(sizes)) if sizes else DASH),
        ("drops", str(sum(drops)) if drops else DASH),
        ("worst drift", worst(drift, "+.1f", "ppm")),
        ("worst slate offset", worst(offset, "+.2f", "ms")),
    ]
    out.append(_table(None, [(f"<b>{k}</b>", v) for k, v in facts], wrap=(1,)))
    rows, classes = [], []
    for i, r in enumerate(results):
        reasons = [str(x) for x in _list(r.get("reasons"))]
        first = (
            esc(reasons[0]) + (f' <span class="small">(+{len(reasons) - 1} more)</span>' if len(reasons) > 1 else "")
            if reasons
            else DASH
        )
        rows.append(
            (
                f'<a href="#take-{i}">{_text(r.get("take"))}</a>',
                f'<span class="badge {_verdict(r.get("verdict"))}">{_text(r.get("verdict"))}</span>',
                _duration(r.get("duration_s")),
                str(len(_streams(r))),
                DASH if _take_drops(r) is None else str(_take_drops(r)),
                _fmt(_take_drift(r), "+.1f", "ppm"),
                _fmt(_take_offset(r), "+.2f", "ms"),
                _ids(_performer_ids(r)),
                first,
            )
        )
        classes.append(_verdict(r.get("verdict")))
    out.append(
        "<h3>Takes</h3>"
        + _table(
            (
                "take",
                "verdict",
                "duration",
                "streams",
                "drops",
                "worst drift",
                "worst slate offset",
                "performers",
                "reasons",
            ),
            rows,
            numeric=(2, 3, 4, 5, 6),
            row_classes=classes,
            wrap=(0, 7, 8),
        )
    )
    out.append("<h3>Consent across the day</h3>" + _day_consent(results))
    if limits:
        out.append(
            "<h3>Limits</h3>"
            + _table(("limit", "value"), [(esc(k), esc(v)) for k, v in limits.items()], numeric=(1,), wrap=(0,))
        )
    return "".join(out)


def _other_keys(stream: Mapping) -> str:
    """Scalar values verify added beyond the known columns, small print."""
    extra = [
        f"{esc(k)}={esc(v)}"
        for k, v in stream.items()
        if k not in STREAM_KEYS and (v is None or isinstance(v, (str, int, float, bool)))
    ]
    return f'<span class="small">{", ".join(extra)}</span>' if extra else ""


def _take(i: int, r: Mapping) -> str:
    verdict = _verdict(r.get("verdict"))
    streams = _streams(r)
    meta = [
        ("session", _text(r.get("session"))),
        ("scene", _text(r.get("scene"))),
        ("take", _text(r.get("take_number"))),
        ("status", _text(r.get("status"))),
        ("duration", _duration(r.get("duration_s"))),
        ("size", _bytes(r.get("bytes"))),
    ]
    reasons = [str(x) for x in _list(r.get("reasons"))]
    out = [
        f'<section class="take {verdict}" id="take-{i}">',
        f'<h2><span class="badge">{_text(r.get("verdict"))}</span> {_text(r.get("take"))}</h2>',
        '<p class="meta">' + " · ".join(f"{k} <b>{v}</b>" for k, v in meta) + "</p>",
        "<h3>Reasons</h3>",
        ('<ul class="reasons">' + "".join(f"<li>{esc(x)}</li>" for x in reasons) + "</ul>")
        if reasons
        else '<p class="nodata">no reasons given</p>',
    ]
    if streams:
        header = ["stream", "kind", "rows", "drops", "drift (ppm)", "residual p99 (ms)", "slate offsets (ms)"]
        rows = [
            [
                esc(n),
                _text(s.get("kind")),
                _fmt(s.get("count"), ".0f"),
                _fmt(s.get("drops"), ".0f"),
                _fmt(s.get("drift_ppm"), "+.2f"),
                _fmt(s.get("residual_p99_ms"), ".3f"),
                ", ".join(_fmt(v, "+.3f") for v in _list(s.get("slate_offsets_ms"))) or DASH,
                _other_keys(s),
            ]
            for n, s in streams.items()
        ]
        if any(row[-1] for row in rows):
            header.append("other")
        else:
            rows = [row[:-1] for row in rows]
        out.append("<h3>Streams</h3>" + _table(header, rows, numeric=(2, 3, 4, 5), wrap=(0, 7)))
        for name, s in streams.items():
            out.append(
                f'<h3>{esc(name)} <span class="small">{_text(s.get("kind"))}</span></h3>'
                f'<div class="plots">{interval_plot(i, name, s, r.get("duration_s"))}'
                f"{residual_plot(i, name, s, r.get('duration_s'))}</div>"
            )
        out.append("<h3>Slate offsets</h3>" + offset_plot(i, streams))
    else:
        out.append('<p class="nodata">no streams</p>')
    out.append("<h3>Consent</h3><p>performers: " + _ids(_performer_ids(r)) + "</p>")
    consent = _consent(r)
    if consent:
        out.append(
            _table(
                ("scope", "allowed by", "denied by", "not stated by"),
                [
                    (esc(k), _ids(v["allowed"]), _ids(v["denied"]), _ids(v["unspecified"]))
                    for k, v in sorted(consent.items())
                ],
                wrap=(0, 1, 2, 3),
            )
        )
    else:
        out.append('<p class="nodata">no consent scopes recorded</p>')
    out.append("</section>")
    return "".join(out)


def render_report(
    results: Sequence[Mapping[str, Any]], *, title: str = "", limits: Mapping[str, Any] | None = None
) -> str:
    """The report page as text (see write_report)."""
    results = [r if isinstance(r, Mapping) else {} for r in (results or [])]
    limits = _dict(limits)
    title = title or "improvcap verify report"
    now = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return "".join(
        [
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">',
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{esc(title)}</title><style>{CSS}</style></head><body>",
            f'<h1>{esc(title)}</h1><p class="small">{takes(len(results))} · written {now}</p>',
            _summary(results, limits),
            *(_take(i, r) for i, r in enumerate(results)),
            "</body></html>\n",
        ]
    )


def write_report(
    results: list[dict], path: Path, *, title: str = "", limits: dict | None = None, overwrite: bool = False
) -> None:
    """Write the HTML report of verify results to `path`; an existing file is refused unless `overwrite`, a
    link at `path` or in place of its folder always (UsageError, one line)."""
    path = Path(path)
    # names read from disk may hold undecodable bytes (surrogate escapes): shown as \udcXX, never an error
    text = render_report(results, title=title, limits=limits).encode("utf-8", "backslashreplace")
    if path.is_symlink():
        raise UsageError(f"{path}: is a symbolic link; a report is never written through one")
    if path.exists() and not overwrite:
        raise UsageError(f"{path}: already exists; choose another report file or allow overwriting it")
    try:
        with Folder(path.parent, follow=False) as folder:
            # atomically: a reader never sees half a report, and without `overwrite` none is replaced
            with rewriting(path, pid_tag(), exclusive=not overwrite, folder=folder) as f:
                f.write(text)
    except TakeError:  # Folder refuses a folder that is a link
        raise UsageError(f"{path.parent}: is a symbolic link; a report is written only into a real folder") from None
    except FileExistsError:
        raise UsageError(f"{path}: already exists; choose another report file or allow overwriting it") from None
    except OSError as e:
        raise UsageError(f"{path}: cannot write the report: {e.strerror or e}") from None

"""The HTML report of `verify --report`: self-contained, escaped, one plot per stream, refuses to overwrite,
and renders in a real headless browser when one is installed."""
from __future__ import annotations

import copy
import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from improvcap.clockfit import fit_clock
from improvcap.errors import UsageError
from improvcap.performers import consent_summary
from improvcap.verify.report import nice_ticks, reduce_points, render_report, write_report
from improvcap.slates import detect_take, match_slates
from improvcap.take.tables import stream_table

HOSTILE = "<script>alert(1)</script>"
HOSTILE_ATTR = '"><img src=x onerror=alert(2)>'


# --- a verify-like result from a real take (stand-in until verify.verify_take exists) ---------------

def _downsample(values: np.ndarray, n: int = 400) -> list[float]:
    """Even bins, each its value of largest magnitude (a dropped frame stays visible)."""
    if len(values) <= n:
        return [float(v) for v in values]
    return [float(b[np.argmax(np.abs(b))]) for b in np.array_split(values, n)]


def result_from_take(take_dir: Path) -> dict:
    """The planned verify result shape, computed from a recorded take's own files."""
    manifest = json.loads((take_dir / "take.json").read_text())
    onsets = detect_take(take_dir)
    reference = next(n for n, s in manifest["streams"].items() if s["kind"] == "camera")
    matches = match_slates(onsets, reference)
    streams = {}
    for name, s in manifest["streams"].items():
        table = stream_table(take_dir, name, s["kind"], time_only=True)
        fit = fit_clock(table["device_ns"], table["host_ns"])
        residual = (table["host_ns"] - fit.apply(table["device_ns"])) / 1e6
        streams[name] = {
            "kind": s["kind"], "count": s["count"], "drops": s["dropped"], "nominal_rate": s["nominal_rate"],
            "drift_ppm": s["clock"]["drift_ppm"], "residual_p99_ms": s["clock"]["residual_p99_ns"] / 1e6,
            "slate_offsets_ms": [m.offsets_ns[name] / 1e6 for m in matches if m.offsets_ns.get(name) is not None],
            "frame_intervals_ms": _downsample(np.diff(table["t_ns"]) / 1e6),
            "clock_residuals_ms": _downsample(residual),
        }
    offsets = [v for st in streams.values() for v in st["slate_offsets_ms"]]
    return {
        "take": str(take_dir), "verdict": "OK", "reasons": [], "status": manifest["status"],
        "session": manifest["session"], "scene": manifest["scene"], "take_number": manifest["take"],
        "duration_s": manifest["duration_s"], "streams": streams,
        "worst_drift_ppm": max((st["drift_ppm"] for st in streams.values()), key=abs),
        "worst_slate_offset_ms": max(offsets, key=abs) if offsets else None,
        "performers": [p["id"] for p in manifest["performers"]],
        "consent": consent_summary(manifest["performers"]),
        "bytes": sum(f["bytes"] for f in manifest["files"].values()),
    }


@pytest.fixture(scope="module")
def real_take(studio_day) -> Path:
    """The studio day's slated take with two performers (studio_day.py)."""
    return studio_day["good2"]


@pytest.fixture(scope="module")
def day(real_take) -> list[dict]:
    """A shoot day: the real take as OK, a WARN without performers, a FAIL with hostile strings from
    disk, and a result with nearly nothing in it."""
    ok = result_from_take(real_take)
    warn = copy.deepcopy(ok)
    warn.update(take="day1/scene_t002", verdict="WARN", reasons=["no performers recorded"], performers=[],
                consent={})
    warn["streams"]["cam1"]["frame_intervals_ms"][50] = 100.0  # a dropped pair of frames
    fail = copy.deepcopy(ok)
    fail.update(take=f"day1/{HOSTILE}", verdict="FAIL",
                reasons=[f"cam0.mkv: sha256 mismatch {HOSTILE}", f"frames.csv {HOSTILE_ATTR}", "room: 3 drops"],
                performers=[HOSTILE_ATTR], consent={HOSTILE: {"allowed": [HOSTILE_ATTR], "denied": [],
                                                               "unspecified": []}})
    fail["streams"][HOSTILE_ATTR] = fail["streams"].pop("suit")
    fail["streams"][HOSTILE_ATTR]["kind"] = HOSTILE
    empty = {"take": None, "verdict": None, "reasons": None, "streams": {"x": None, "y": {"drift_ppm": "NaN",
             "frame_intervals_ms": [float("nan"), None, "a"], "slate_offsets_ms": None}}, "duration_s": None,
             "consent": None, "performers": None, "bytes": None}
    return [ok, warn, fail, empty]


# --- reading the page back -------------------------------------------------------------------------

class Page(HTMLParser):
    """Every element with its attributes, the text of each take section, and the plots."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.sections: dict[str, str] = {}
        self.svgs: list[dict[str, str | None]] = []
        self.badges: dict[str, str] = {}
        self._section: str | None = None
        self._badge = False
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.tags.append((tag, a))
        if tag == "section":
            self._section = a.get("id")
            self.sections[self._section] = ""
        if tag == "svg":
            self.svgs.append(a)
        if tag == "span" and self._section and "badge" in (a.get("class") or "") \
                and self._section not in self.badges:
            self._badge = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "section":
            self._section = None
        if tag == "span":
            self._badge = False

    def handle_data(self, data: str) -> None:
        if self._section:
            self.sections[self._section] += data
            if self._badge:
                self.badges[self._section] = data


def _external(value: str) -> bool:
    return not (value.startswith("#") or value.startswith("data:"))


# --- tests -----------------------------------------------------------------------------------------

@pytest.mark.slow
def test_report_of_a_day(tmp_path, day, real_take):
    out = tmp_path / "day.html"
    write_report(day, out, title=f"Day 1 {HOSTILE}", limits={"max_drift_ppm": 100, "audio_offset_ms": 2.0})
    text = out.read_text(encoding="utf-8")
    page = Page(text)

    # nothing runs, nothing loads from anywhere else
    assert "<script" not in text.lower()
    assert not [t for t, _ in page.tags if t in ("script", "img", "iframe", "object", "embed", "link", "base")]
    for tag, attrs in page.tags:
        assert not [k for k in attrs if k.startswith("on")], (tag, attrs)
        for k in ("src", "href", "xlink:href", "srcset", "action", "poster", "data"):
            if attrs.get(k) is not None:
                assert not _external(attrs[k]), (tag, k, attrs[k])
    assert "@import" not in text and "url(" not in text
    assert "default-src 'none'" in text

    # every take with its verdict; reasons and hostile names shown as text
    assert set(page.sections) == {f"take-{i}" for i in range(4)}
    assert [page.badges[f"take-{i}"] for i in range(4)] == ["OK", "WARN", "FAIL", "–"]
    assert str(real_take) in page.sections["take-0"]
    assert "day1/scene_t002" in page.sections["take-1"] and "no performers recorded" in page.sections["take-1"]
    fail = page.sections["take-2"]
    for reason in day[2]["reasons"]:
        assert reason in fail
    assert f"day1/{HOSTILE}" in fail and HOSTILE_ATTR in fail
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text

    # one interval plot and one residual plot per stream with data; one offset plot per take with slates
    for i, r in enumerate(day[:3]):
        for name in r["streams"]:
            for plot in ("intervals", "residuals"):
                found = [s for s in page.svgs if s.get("data-take") == str(i) and s.get("data-stream") == name
                         and s.get("data-plot") == plot]
                assert len(found) == 1, (i, name, plot)
        assert len([s for s in page.svgs if s.get("data-take") == str(i) and s.get("data-plot") == "offsets"]) == 1
    assert not [s for s in page.svgs if s.get("data-take") == "3"]  # nothing plottable in the empty result
    assert len(page.svgs) == 3 * (2 * 4 + 1)
    # the dashed drop threshold at 1.5 frame periods of a 30 fps camera
    assert "1.5 × period (50 ms)" in text and 'stroke-dasharray="6 4"' in text

    # the day's summary: counts, worst values, consent across takes
    assert "4 takes" in text
    ok = day[0]
    assert f'{ok["worst_drift_ppm"]:+.1f}\u00a0ppm' in text
    assert "emotion-recognition" in text and "voice-synthesis" in text
    assert "3 of 4 takes have performers recorded" not in text  # the WARN and empty take have none
    assert "2 of 4 takes have performers recorded" in text
    assert "max_drift_ppm" in text


def test_a_take_of_hostile_strings_only(tmp_path):
    """No real take needed: every string field hostile, every number junk."""
    r = {"take": HOSTILE, "verdict": HOSTILE, "reasons": [HOSTILE, HOSTILE_ATTR], "status": HOSTILE,
         "session": HOSTILE_ATTR, "scene": HOSTILE, "take_number": HOSTILE, "duration_s": HOSTILE,
         "streams": {HOSTILE: {"kind": HOSTILE_ATTR, "count": HOSTILE, "drops": [1], "drift_ppm": {},
                               "slate_offsets_ms": [HOSTILE, 1.0], "frame_intervals_ms": [1.0, 2.0, HOSTILE],
                               "clock_residuals_ms": [], HOSTILE_ATTR: HOSTILE}},
         "performers": [HOSTILE, {"id": HOSTILE_ATTR}], "consent": {HOSTILE_ATTR: {"allowed": HOSTILE}},
         "worst_drift_ppm": HOSTILE, "bytes": HOSTILE}
    out = tmp_path / "r.html"
    write_report([r], out, title=HOSTILE, limits={HOSTILE: HOSTILE_ATTR})
    text = out.read_text()
    page = Page(text)
    assert "<script" not in text.lower()
    assert [t for t, _ in page.tags if t in ("script", "img")] == []
    assert not [a for _, a in page.tags for k in a if k.startswith("on")]
    assert page.badges["take-0"] == HOSTILE
    assert HOSTILE in page.sections["take-0"] and HOSTILE_ATTR in page.sections["take-0"]
    assert [s.get("data-plot") for s in page.svgs] == ["intervals", "offsets"]
    assert page.svgs[0]["data-stream"] == HOSTILE


def test_undecodable_names_and_junk_values(tmp_path):
    """A take folder named with bytes that are not UTF-8 (os.fsdecode gives surrogates), junk numbers."""
    name = "day1/scene_t\udcff01"
    r = {"take": name, "verdict": "FAIL", "reasons": [f"{name}: not a take"], "duration_s": 10 ** 400,
         "streams": {"cam0": {"frame_intervals_ms": [[1, 2], [3]], "clock_residuals_ms": [1e308, -1e308, 0.0],
                              "slate_offsets_ms": [float("inf")], "nominal_rate": 1e-300, "drift_ppm": True}}}
    out = tmp_path / "r.html"
    write_report([r], out)
    page = Page(out.read_text(encoding="utf-8"))
    assert "day1/scene_t\\udcff01" in page.sections["take-0"]
    assert [s.get("data-plot") for s in page.svgs] == ["residuals"]


_junk = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20) | st.just(HOSTILE),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=30)
_key = st.sampled_from(["take", "verdict", "reasons", "status", "duration_s", "streams", "worst_drift_ppm",
                        "worst_slate_offset_ms", "performers", "consent", "bytes"])
_stream = st.dictionaries(st.sampled_from(["kind", "count", "drops", "drift_ppm", "slate_offsets_ms",
                                           "frame_intervals_ms", "clock_residuals_ms", "nominal_rate"]), _junk)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.dictionaries(_key, _junk) | st.fixed_dictionaries(
    {"take": _junk, "streams": st.dictionaries(st.text(max_size=8), _stream, max_size=3)}), max_size=4))
def test_any_shape_of_results_renders(results):
    text = render_report(results, title="fuzz")
    page = Page(text)
    assert "<script" not in text.lower()
    assert len(page.sections) == len(results)


def test_refuses_an_existing_file_unless_asked(tmp_path):
    out = tmp_path / "r.html"
    out.write_text("keep me")
    with pytest.raises(UsageError, match=r"r\.html: already exists") as e:
        write_report([], out)
    assert "\n" not in str(e.value)
    assert out.read_text() == "keep me"
    write_report([{"take": "a", "verdict": "OK"}], out, overwrite=True)
    assert "<!DOCTYPE html>" in out.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.html"]  # no temporary file left
    with pytest.raises(UsageError, match=r"cannot write the report: No such file or directory$"):
        write_report([], tmp_path / "missing" / "r.html")


def test_empty_day():
    page = Page(render_report([]))
    assert page.sections == {} and page.svgs == []


def test_ticks_and_point_reduction():
    ticks, step = nice_ticks(0.0, 33.4, 5)
    assert step == 10 and ticks == [0, 10, 20, 30]
    ticks, step = nice_ticks(-0.013, 0.011, 5)
    assert step == 0.005 and ticks[0] == pytest.approx(-0.01) and ticks[-1] == pytest.approx(0.01)
    assert nice_ticks(0.95, 2.05, 6, min_step=1.0) == ([1.0, 2.0], 1.0)  # slate numbers
    assert nice_ticks(0.5, 30.5, 6, min_step=1.0)[1] == 5.0
    y = np.full(100_000, 33.3)
    y[77_777] = 500.0  # one long gap among many frames
    x, yr = reduce_points(np.arange(len(y), dtype=float), y, limit=1000)
    assert len(yr) <= 1000 and yr.max() == 500.0 and x[np.argmax(yr)] == 77_777


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed")
def test_renders_in_headless_chromium(tmp_path, day):
    out = tmp_path / "day.html"
    write_report(day, out, title="Day 1")
    png = tmp_path / "out.png"
    profile = tmp_path / "profile"
    profile.mkdir()
    r = subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                        "--disable-background-networking", "--disable-component-update", "--disable-sync",
                        f"--user-data-dir={profile}", f"--screenshot={png}", "--window-size=1280,2000",
                        out.resolve().as_uri()], capture_output=True, text=True, timeout=90, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    image = cv2.imread(str(png))
    assert image is not None and image.shape[:2] == (2000, 1280)
    assert float(image.std()) > 10.0  # text, tables and plots, not a blank page
    # the summary's coloured verdict badges (green, amber, red) and the first take's plotted lines (blue)
    # are drawn (BGR)
    for bgr, pixels in (((0x37, 0x7f, 0x1a), 50), ((0x00, 0x59, 0xb3), 50), ((0x28, 0x28, 0xc6), 50),
                        ((0xb2, 0x72, 0x00), 500)):
        assert (np.abs(image.astype(int) - bgr).sum(axis=2) < 60).sum() > pixels, bgr


@pytest.mark.slow
def test_report_of_verify_results(tmp_path, real_take):
    """The real verify results of a real take, as `verify --report` will pass them."""
    from improvcap.verify import verify_take

    result = verify_take(real_take)
    out = tmp_path / "verify.html"
    write_report([result], out, title="verify")
    page = Page(out.read_text(encoding="utf-8"))
    assert page.badges["take-0"] == result["verdict"]
    for reason in result["reasons"]:
        assert reason in page.sections["take-0"]
    plotted = {(s.get("data-stream"), s.get("data-plot")) for s in page.svgs}
    for name, s in result["streams"].items():
        assert s["frame_intervals_ms"] and s["clock_residuals_ms"], name
        assert {(name, "intervals"), (name, "residuals")} <= plotted
    assert (None, "offsets") in plotted  # the take was slated
    assert "llm-training" in page.sections["take-0"]

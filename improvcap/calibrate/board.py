"""The ChArUco calibration board: its spec (TOML beside the print), the OpenCV board and the printable PNG.

The default board (7 x 5 squares of 35 mm, 26 mm markers from DICT_5X5_100) is 245 x 175 mm; with 10 mm
margins the page is 265 x 195 mm, which fits both A4 (297 x 210) and US letter (279.4 x 215.9) in landscape
when printed at 100 %. The PNG carries its dpi (a pHYs chunk) so print dialogs size it right, and a 100 mm
bar under the board lets the print be checked with a ruler.
"""

from __future__ import annotations

import dataclasses
import functools
import struct
import tomllib
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..errors import did_you_mean
from .store import CalibrationError, dump_toml

PAPERS_MM = {"A4": (297.0, 210.0), "letter": (279.4, 215.9)}  # landscape
RULER_MM = 100.0


def _dictionaries() -> dict[str, int]:
    return {n: getattr(cv2.aruco, n) for n in dir(cv2.aruco) if n.startswith("DICT_") and n == n.upper()}


@dataclass(frozen=True)
class BoardSpec:
    """A ChArUco board: squares_x x squares_y chessboard squares with markers in the white ones."""

    squares_x: int = 7
    squares_y: int = 5
    square_mm: float = 35.0
    marker_mm: float = 26.0
    dictionary: str = "DICT_5X5_100"
    dpi: int = 300  # of the printable PNG
    margin_mm: float = 10.0  # white paper around the board in the PNG

    def __post_init__(self) -> None:
        if problem := _problem(self.to_dict()):
            raise CalibrationError(f"board spec: {problem}")

    # --- geometry -------------------------------------------------------------------------------

    @property
    def corner_count(self) -> int:
        return (self.squares_x - 1) * (self.squares_y - 1)

    @property
    def board_mm(self) -> tuple[float, float]:
        return self.squares_x * self.square_mm, self.squares_y * self.square_mm

    @property
    def page_mm(self) -> tuple[float, float]:
        w, h = self.board_mm
        return w + 2 * self.margin_mm, h + 2 * self.margin_mm

    def papers(self) -> list[str]:
        """Paper sizes (either orientation) the page fits on at 100 %."""
        w, h = sorted(self.page_mm, reverse=True)
        return [name for name, (pw, ph) in PAPERS_MM.items() if w <= pw and h <= ph]

    def describe(self) -> str:
        return (
            f"{self.squares_x}x{self.squares_y} squares of {self.square_mm:g} mm, "
            f"{self.marker_mm:g} mm markers, {self.dictionary}"
        )

    # --- TOML -----------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_toml_dict(self) -> dict[str, Any]:
        """The spec file's content: one [board] table."""
        return {"board": self.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "board") -> BoardSpec:
        fields = {f.name: f for f in dataclasses.fields(cls)}
        for key in data:
            if key not in fields:
                raise CalibrationError(
                    f"{where}.{key}: unknown key{did_you_mean(key, fields)} (expected {', '.join(fields)})"
                )
        values: dict[str, Any] = {
            k: float(v) if fields[k].type == "float" and isinstance(v, int) and not isinstance(v, bool) else v
            for k, v in data.items()
        }
        if problem := _problem({**{k: f.default for k, f in fields.items()}, **values}):
            raise CalibrationError(f"{where}.{problem}")
        return cls(**values)

    @classmethod
    def from_toml(cls, path: str | Path) -> BoardSpec:
        path = Path(path)
        try:
            doc = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise CalibrationError(f"{path}: board spec not found") from None
        except (OSError, UnicodeDecodeError) as e:
            raise CalibrationError(f"{path}: cannot read the board spec: {e}") from None
        except tomllib.TOMLDecodeError as e:
            raise CalibrationError(f"{path}: not valid TOML: {e}") from None
        table = doc.get("board")
        if not isinstance(table, dict):
            raise CalibrationError(
                f"{path}: board: missing [board] table (squares_x, squares_y, square_mm, marker_mm, dictionary)"
            )
        return cls.from_dict(table, where=f"{path}: board")


def _problem(v: dict[str, Any]) -> str | None:
    """The first thing wrong with a spec's values as `key: problem`, or None."""
    for key in ("squares_x", "squares_y"):
        if isinstance(v[key], bool) or not isinstance(v[key], int) or not 2 <= v[key] <= 100:
            return f"{key}: expected an integer from 2 to 100, got {v[key]!r}"
    for key in ("square_mm", "marker_mm", "margin_mm"):
        x = v[key]
        if (
            isinstance(x, bool)
            or not isinstance(x, (int, float))
            or not 0 <= x < 10_000
            or (x == 0 and key != "margin_mm")
        ):
            return f"{key}: expected a positive number of millimetres, got {x!r}"
    if v["marker_mm"] >= v["square_mm"]:
        return f"marker_mm: must be smaller than square_mm ({v['square_mm']:g}), got {v['marker_mm']:g}"
    if isinstance(v["dpi"], bool) or not isinstance(v["dpi"], int) or not 50 <= v["dpi"] <= 2400:
        return f"dpi: expected an integer from 50 to 2400, got {v['dpi']!r}"
    names = _dictionaries()
    if not isinstance(v["dictionary"], str) or v["dictionary"] not in names:
        return f"dictionary: unknown ArUco dictionary {v['dictionary']!r} (e.g. DICT_5X5_100, DICT_6X6_250)"
    have = cv2.aruco.getPredefinedDictionary(names[v["dictionary"]]).bytesList.shape[0]
    need = v["squares_x"] * v["squares_y"] // 2
    if need > have:
        return (
            f"dictionary: {v['dictionary']} has {have} markers, a {v['squares_x']}x{v['squares_y']} board needs {need}"
        )
    return None


def cv_board(spec: BoardSpec) -> cv2.aruco.CharucoBoard:
    """The OpenCV board; object points in millimetres, origin at the board's top-left outer corner."""
    return _cv_board(spec.squares_x, spec.squares_y, spec.square_mm, spec.marker_mm, spec.dictionary)


@functools.lru_cache(maxsize=8)
def _cv_board(sx: int, sy: int, square: float, marker: float, dictionary: str) -> cv2.aruco.CharucoBoard:
    d = cv2.aruco.getPredefinedDictionary(_dictionaries()[dictionary])
    return cv2.aruco.CharucoBoard((sx, sy), float(square), float(marker), d)


# --- the printable PNG --------------------------------------------------------------------------


def page_image(spec: BoardSpec) -> np.ndarray:
    """The page as a grey image at spec.dpi: white paper, the board, and a caption with a 100 mm bar."""
    px_per_mm = spec.dpi / 25.4
    bw, bh = (round(v * px_per_mm) for v in spec.board_mm)
    margin = round(spec.margin_mm * px_per_mm)
    page = np.full((bh + 2 * margin, bw + 2 * margin), 255, np.uint8)
    page[margin : margin + bh, margin : margin + bw] = cv_board(spec).generateImage((bw, bh), marginSize=0)
    if spec.margin_mm >= 6:  # room for the caption below the board
        y = margin + bh + round(4 * px_per_mm)
        ruler = round(RULER_MM * px_per_mm)
        if ruler <= bw:
            thick = max(1, round(0.3 * px_per_mm))
            cv2.line(page, (margin, y), (margin + ruler, y), 0, thick)
            for x in (margin, margin + ruler):
                cv2.line(page, (x, y - round(1.2 * px_per_mm)), (x, y + round(1.2 * px_per_mm)), 0, thick)
        x0 = margin + (ruler + round(3 * px_per_mm) if ruler <= bw else 0)
        text = f"ChArUco {spec.describe()} - print at 100 %: the bar is {RULER_MM:g} mm"
        font, thick = cv2.FONT_HERSHEY_SIMPLEX, max(1, round(0.2 * px_per_mm))
        scale = 0.1 * px_per_mm  # text about 2.5 mm high, narrower if the line would not fit
        width = cv2.getTextSize(text, font, scale, thick)[0][0]
        scale *= min(1.0, (margin + bw - x0) / max(width, 1))
        cv2.putText(page, text, (x0, y + round(1.2 * px_per_mm)), font, scale, 0, thick, cv2.LINE_AA)
    return page


def _png_with_dpi(image: np.ndarray, dpi: int) -> bytes:
    """PNG bytes with a pHYs chunk (pixels per metre) right after IHDR, so a print at 100 % is to scale."""
    ok, buf = cv2.imencode(".png", image)
    if not ok:
        raise CalibrationError("cannot encode the board as PNG")
    data = buf.tobytes()
    ihdr_end = 8 + 8 + 13 + 4  # signature, IHDR length+type, IHDR data, CRC
    ppm = round(dpi / 0.0254)
    body = b"pHYs" + struct.pack(">IIB", ppm, ppm, 1)
    chunk = struct.pack(">I", 9) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)
    return data[:ihdr_end] + chunk + data[ihdr_end:]


def render_png(spec: BoardSpec, path: str | Path) -> Path:
    """Write the printable page as a PNG at spec.dpi; refuses to overwrite an existing file."""
    path = Path(path)
    data = _png_with_dpi(page_image(spec), spec.dpi)
    try:
        with open(path, "xb") as fh:
            fh.write(data)
    except FileExistsError:
        raise CalibrationError(f"{path}: already exists; not overwritten") from None
    except OSError as e:
        raise CalibrationError(f"{path}: cannot write: {e.strerror or e}") from None
    return path


def write_board(spec: BoardSpec, png: str | Path) -> tuple[Path, Path]:
    """The PNG and its spec `<stem>.toml` beside it; neither is written if either exists already."""
    png = Path(png)
    if png.suffix.lower() != ".png":
        png = png.with_name(png.name + ".png")
    toml = png.with_suffix(".toml")
    for p in (png, toml):
        if p.exists():
            raise CalibrationError(f"{p}: already exists; not overwritten")
    if not png.parent.is_dir():
        raise CalibrationError(f"{png.parent}: no such folder")
    render_png(spec, png)
    try:
        with open(toml, "x", encoding="utf-8") as fh:
            fh.write(f"# ChArUco board printed as {png.name}: {spec.describe()}\n" + dump_toml(spec.to_toml_dict()))
    except OSError as e:
        png.unlink(missing_ok=True)
        raise CalibrationError(f"{toml}: cannot write: {e.strerror or e}") from None
    return png, toml

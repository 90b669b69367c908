"""Synthetic views of a ChArUco board through known cameras: the ground truth of camera calibration.

A `PinholeCamera` is OpenCV's model (camera matrix, distortion k1 k2 p1 p2 k3) placed in the rig frame.
`BoardRenderer` draws the board as that camera sees it: the board texture (the printed page, kept as a
small pyramid so a far board is not aliased) is warped by the plane's homography into the ideal,
undistorted image, then `cv2.remap` bends it by the lens distortion. The remap table (for each output
pixel, the ideal pixel it shows) comes from `cv2.undistortPoints` once per camera; per frame only the
region around the board is warped and remapped, so a 720p frame costs a few milliseconds.

`board_pose_at(t)` is the board's path in the rig frame: it holds a pose for 0.6 s, then glides in 0.4 s
to the next one (a person presenting a board). Because it is a function of the true time alone, every demo
camera films the same pose at the same instant, and the holds make frames matched across cameras agree
even when their exposures differ by a few milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from .board import BoardSpec, cv_board

DEFAULT_DISTORTION = (-0.12, 0.05, 0.0006, -0.0004, -0.01)
BACKGROUND = 128
TEXTURE_PX_PER_MM = 8.0  # finest level of the texture pyramid
PATH_CENTER_MM = (0.0, 0.0, 900.0)
PATH_RANGE_MM = (280.0, 160.0, 250.0)
PATH_TILT_RAD = (0.6, 0.6, 0.45)
PATH_PERIOD_S = 1.0
PATH_HOLD_S = 0.6
_GRID = 16  # px: coarse grid used to find the output region a board covers


def _rt_matrix(rvec: Any, tvec: Any) -> np.ndarray:
    m = np.eye(4)
    m[:3, :3] = cv2.Rodrigues(np.asarray(rvec, np.float64).reshape(3, 1))[0]
    m[:3, 3] = np.asarray(tvec, np.float64).ravel()
    return m


def _rt_vectors(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return cv2.Rodrigues(m[:3, :3])[0].ravel(), m[:3, 3].copy()


@dataclass(frozen=True)
class PinholeCamera:
    """OpenCV's pinhole camera with distortion; rvec/tvec map rig coordinates (mm) into the camera's."""

    size: tuple[int, int]
    matrix: np.ndarray
    dist: np.ndarray
    rvec: np.ndarray = field(default_factory=lambda: np.zeros(3))
    tvec: np.ndarray = field(default_factory=lambda: np.zeros(3))

    @classmethod
    def from_pose(
        cls,
        size: tuple[int, int],
        focal_px: float = 0.0,
        distortion: Any = DEFAULT_DISTORTION,
        pose: Any = (0, 0, 0, 0, 0, 0),
        center_offset_px: Any = (0, 0),
    ) -> PinholeCamera:
        """`pose` = [rx, ry, rz, tx, ty, tz]: the camera's orientation (Rodrigues) and centre (mm) in the
        rig frame (camera to rig). `focal_px` 0 means 0.9 x width; the principal point is the image centre
        moved by `center_offset_px`."""
        w, h = size
        f = float(focal_px) or 0.9 * w
        cx, cy = (w - 1) / 2 + float(center_offset_px[0]), (h - 1) / 2 + float(center_offset_px[1])
        matrix = np.array([[f, 0, cx], [0, f, cy], [0, 0, 1]], np.float64)
        cam_to_rig = _rt_matrix(pose[:3], pose[3:])
        rvec, tvec = _rt_vectors(np.linalg.inv(cam_to_rig))
        return cls((int(w), int(h)), matrix, np.asarray(distortion, np.float64).ravel(), rvec, tvec)

    def truth(self) -> dict[str, Any]:
        """The anipose layout of this camera (rotation/translation: rig to camera, mm)."""
        return {
            "size": list(self.size),
            "matrix": self.matrix.tolist(),
            "distortions": self.dist.tolist(),
            "rotation": np.asarray(self.rvec, float).ravel().tolist(),
            "translation": np.asarray(self.tvec, float).ravel().tolist(),
        }

    def board_in_camera(self, board_rvec: Any, board_tvec: Any) -> tuple[np.ndarray, np.ndarray]:
        """The board pose (board to rig) as seen by this camera (board to camera)."""
        return _rt_vectors(_rt_matrix(self.rvec, self.tvec) @ _rt_matrix(board_rvec, board_tvec))

    def project(self, points: np.ndarray, board_rvec: Any, board_tvec: Any) -> np.ndarray:
        """Pixel positions of board points (N x 3, mm) for a board pose in the rig frame."""
        r, t = self.board_in_camera(board_rvec, board_tvec)
        return cv2.projectPoints(np.asarray(points, np.float64).reshape(-1, 1, 3), r, t, self.matrix, self.dist)[
            0
        ].reshape(-1, 2)


class BoardRenderer:
    """Grey images of the board seen by one camera; the costly tables are made once, here.

    `supersample` = 2 draws at twice the size and averages down: corners then land within about 0.07 px
    of the model (0.13 px at 1, where sampling the texture aliases a little). Four times the work; the
    demo camera draws at 1."""

    def __init__(
        self, spec: BoardSpec, camera: PinholeCamera, background: int = BACKGROUND, supersample: int = 1
    ) -> None:
        self.spec, self.camera, self.background = spec, camera, int(background)
        self.board = cv_board(spec)
        self.supersample = ss = int(supersample)
        if ss > 1:  # the same lens on a finer pixel grid: pixel centre u maps to ss * u + (ss - 1) / 2
            k = camera.matrix * ss
            k[2, 2] = 1.0
            k[:2, 2] = camera.matrix[:2, 2] * ss + (ss - 1) / 2
            camera = PinholeCamera((camera.size[0] * ss, camera.size[1] * ss), k, camera.dist, camera.rvec, camera.tvec)
        self._camera = camera
        self._small = np.full((self.camera.size[1], self.camera.size[0]), self.background, np.uint8)
        w, h = camera.size
        self._levels = self._texture_pyramid(spec)
        # For every output (distorted) pixel, the ideal pixel it shows; in bands of rows to bound memory.
        criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-10)
        ideal = np.empty((h, w, 2), np.float32)
        xs = np.arange(w, dtype=np.float64)
        for y0 in range(0, h, 64):
            ys = np.arange(y0, min(h, y0 + 64), dtype=np.float64)
            band = np.stack(np.meshgrid(xs, ys), -1).reshape(-1, 1, 2)
            ideal[y0 : y0 + len(ys)] = cv2.undistortPoints(
                band, camera.matrix, camera.dist, P=camera.matrix, criteria=criteria
            ).reshape(len(ys), w, 2)
        probe = np.stack(np.meshgrid(np.linspace(0, w - 1, 41), np.linspace(0, h - 1, 23)), -1).reshape(-1, 1, 2)
        back = cv2.projectPoints(
            cv2.convertPointsToHomogeneous(
                cv2.undistortPoints(probe, camera.matrix, camera.dist, criteria=criteria)
            ).reshape(-1, 3),
            np.zeros(3),
            np.zeros(3),
            camera.matrix,
            camera.dist,
        )[0]
        self.max_model_error = float(np.abs(back - probe).max())  # large where the distortion folds over
        # The ideal image lives on a canvas covering every ideal position the output shows (clipped, as a
        # strong barrel distortion sends the image corners far out); out-of-canvas pixels stay background.
        np.clip(ideal, np.array([-w, -h], np.float32), np.array([2 * w, 2 * h], np.float32), out=ideal)
        self._origin = np.floor(ideal.reshape(-1, 2).min(0)).astype(int)
        extent = np.ceil(ideal.reshape(-1, 2).max(0)).astype(int) - self._origin + 2
        self._canvas = np.full((int(extent[1]), int(extent[0])), self.background, np.uint8)
        self._coarse = ideal[::_GRID, ::_GRID].astype(np.float64)  # ideal positions of a coarse output grid
        ideal -= self._origin.astype(np.float32)
        self._map1, self._map2 = cv2.convertMaps(ideal[..., 0], ideal[..., 1], cv2.CV_16SC2)
        del ideal
        self._out = np.full((h, w), self.background, np.uint8)

    @staticmethod
    def _texture_pyramid(spec: BoardSpec) -> list[tuple[np.ndarray, float, float, float, float]]:
        """Levels from fine to coarse: (image, texels per mm in x and y, paper margin in mm in x and y).

        Texel centre (u, v) shows the board point x = (u + 0.5) / sx - mx (likewise y), as cv2.resize
        and generateImage both place pixel edges, not centres, on the grid."""
        bw, bh = (round(v * TEXTURE_PX_PER_MM) for v in spec.board_mm)
        m = round(spec.margin_mm * TEXTURE_PX_PER_MM)
        page = np.full((bh + 2 * m, bw + 2 * m), 255, np.uint8)
        page[m : m + bh, m : m + bw] = cv_board(spec).generateImage((bw, bh), marginSize=0)
        sx, sy = bw / spec.board_mm[0], bh / spec.board_mm[1]  # exact scale of the generated board
        levels = []
        img: np.ndarray = page
        while True:
            fx, fy = img.shape[1] / page.shape[1], img.shape[0] / page.shape[0]
            levels.append((img, fx * sx, fy * sy, m / sx, m / sy))
            if min(img.shape) <= 64:
                return levels
            img = cv2.resize(img, ((img.shape[1] + 1) // 2, (img.shape[0] + 1) // 2), interpolation=cv2.INTER_AREA)

    def render(self, board_rvec: Any, board_tvec: Any) -> np.ndarray:
        """The camera's grey image (h x w uint8) with the board at this pose (board to rig, mm).

        The returned array is reused by the next call; copy it to keep it."""
        out = self._draw(board_rvec, board_tvec)
        if self.supersample == 1:
            return out
        return cv2.resize(out, self.camera.size, dst=self._small, interpolation=cv2.INTER_AREA)

    def _draw(self, board_rvec: Any, board_tvec: Any) -> np.ndarray:
        out = self._out
        out.fill(self.background)
        r, t = self._camera.board_in_camera(board_rvec, board_tvec)
        rot = cv2.Rodrigues(r)[0]
        pw, ph = self.spec.page_mm
        m = self.spec.margin_mm
        outline = np.array([[-m, -m, 0], [pw - m, -m, 0], [pw - m, ph - m, 0], [-m, ph - m, 0]], np.float64)
        cam = outline @ rot.T + t
        if cam[:, 2].min() < 1.0:  # any part of the page at or behind the camera: not shown
            return out
        k = self._camera.matrix
        ideal = cam @ k.T
        ideal = ideal[:, :2] / ideal[:, 2:]
        lo, hi = ideal.min(0) - 2, ideal.max(0) + 2
        # Output region: the coarse cells whose ideal position falls inside the board's ideal bounding box.
        inside = np.all((self._coarse >= lo) & (self._coarse <= hi), axis=2)
        if not inside.any():
            return out
        rows, cols = np.nonzero(inside)
        w, h = self._camera.size
        y0, y1 = max(0, (rows.min() - 1) * _GRID), min(h, (rows.max() + 2) * _GRID)
        x0, x1 = max(0, (cols.min() - 1) * _GRID), min(w, (cols.max() + 2) * _GRID)
        # Canvas region the board covers.
        ch, cw = self._canvas.shape
        c0 = np.clip(np.floor(lo).astype(int) - self._origin, 0, (cw, ch))
        c1 = np.clip(np.ceil(hi).astype(int) - self._origin + 1, 0, (cw, ch))
        if np.any(c1 <= c0):
            return out
        level = self._level(k, rot, t, outline)
        tex, sx, sy, mx, my = level
        texel_to_mm = np.array([[1 / sx, 0, 0.5 / sx - mx], [0, 1 / sy, 0.5 / sy - my], [0, 0, 1]])
        plane = np.column_stack([rot[:, 0], rot[:, 1], t])  # board plane z = 0 into the camera
        start = self._origin + c0
        shift = np.array([[1, 0, -start[0]], [0, 1, -start[1]], [0, 0, 1]], np.float64)
        canvas = self._canvas
        canvas.fill(self.background)
        region = canvas[c0[1] : c1[1], c0[0] : c1[0]]
        cv2.warpPerspective(
            tex,
            shift @ k @ plane @ texel_to_mm,
            (region.shape[1], region.shape[0]),
            dst=region,
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_TRANSPARENT,
        )
        cv2.remap(
            canvas,
            self._map1[y0:y1, x0:x1],
            self._map2[y0:y1, x0:x1],
            cv2.INTER_LINEAR,
            dst=out[y0:y1, x0:x1],
            borderMode=cv2.BORDER_TRANSPARENT,
        )
        return out

    def _level(
        self, k: np.ndarray, rot: np.ndarray, t: np.ndarray, outline: np.ndarray
    ) -> tuple[np.ndarray, float, float, float, float]:
        """The coarsest pyramid level with at least one texel per image pixel all over the board."""
        hm = k @ np.column_stack([rot[:, 0], rot[:, 1], t])  # board mm -> ideal px
        most = 0.0
        for x, y, _ in outline:  # the homography's largest local scale
            p = hm @ (x, y, 1.0)
            jac = (hm[:2, :2] - np.outer(p[:2] / p[2], hm[2, :2])) / p[2]
            most = max(most, float(np.linalg.svd(jac, compute_uv=False)[0]))
        level = self._levels[0]
        for candidate in self._levels:
            if min(candidate[1], candidate[2]) >= most:
                level = candidate
        return level

    def corners(self, board_rvec: Any, board_tvec: Any) -> np.ndarray:
        """True pixel positions of the board's inner corners (in id order) at this pose."""
        return self.camera.project(np.asarray(self.board.getChessboardCorners()), board_rvec, board_tvec)


# --- the board's path in the rig frame ------------------------------------------------------------


def key_pose(n: int, spec: BoardSpec, center: Any = PATH_CENTER_MM) -> tuple[np.ndarray, np.ndarray]:
    """The n-th held pose (board to rig): centred near `center`, facing the rig's z axis, tilted."""
    rng = np.random.default_rng([int(n) & 0xFFFFFFFF, 20240905])
    offset = rng.uniform(-1, 1, 3) * PATH_RANGE_MM
    tilt = rng.uniform(-1, 1, 3) * PATH_TILT_RAD
    rot = cv2.Rodrigues(tilt.reshape(3, 1))[0]
    w, h = spec.board_mm
    position = np.asarray(center, np.float64) + offset
    return cv2.Rodrigues(rot)[0].ravel(), position - rot @ np.array([w / 2, h / 2, 0.0])


def board_pose_at(t_s: float, spec: BoardSpec, center: Any = PATH_CENTER_MM) -> tuple[np.ndarray, np.ndarray]:
    """The board pose (board to rig) at time t_s: held, then a smooth glide to the next held pose."""
    n = int(np.floor(t_s / PATH_PERIOD_S))
    phase = t_s - n * PATH_PERIOD_S
    r0, t0 = key_pose(n, spec, center)
    if phase <= PATH_HOLD_S:
        return r0, t0
    a = (phase - PATH_HOLD_S) / (PATH_PERIOD_S - PATH_HOLD_S)
    a = a * a * (3 - 2 * a)  # smoothstep: velocity is zero at both ends
    r1, t1 = key_pose(n + 1, spec, center)
    # Interpolate the board centre and the rotation (about the relative axis), so the glide is rigid.
    w, h = spec.board_mm
    c = np.array([w / 2, h / 2, 0.0])
    m0, m1 = cv2.Rodrigues(r0)[0], cv2.Rodrigues(r1)[0]
    rel = cv2.Rodrigues(m0.T @ m1)[0]
    rot = m0 @ cv2.Rodrigues(rel * a)[0]
    centre = (1 - a) * (m0 @ c + t0) + a * (m1 @ c + t1)
    return cv2.Rodrigues(rot)[0].ravel(), centre - rot @ c


# --- a known rig, and a calibration compared with the truth ----------------------------------------


def example_rig(size: tuple[int, int] = (1280, 720)) -> dict[str, PinholeCamera]:
    """Three cameras around the board's path: straight on, from the right and from up left, with three
    different lenses (the rig of the tests and the benchmark)."""
    w = size[0]
    return {
        "cam0": PinholeCamera.from_pose(size, 0.9 * w, DEFAULT_DISTORTION, (0, 0, 0, 0, 0, 0), (6, -4)),
        "cam1": PinholeCamera.from_pose(
            size, 0.78 * w, (-0.25, 0.1, 0.0, 0.001, -0.02), (0, -0.42, 0, 400, 0, 0), (-0.012 * w, 0.01 * w)
        ),
        "cam2": PinholeCamera.from_pose(
            size, 1.02 * w, (0.05, -0.03, -0.001, 0.0005, 0.0), (-0.2, 0.37, 0, -350, -200, 50), (0.015 * w, 0.008 * w)
        ),
    }


def compare(
    result: dict[str, Any], truth: dict[str, dict[str, Any]], covered: dict[str, np.ndarray] | None = None
) -> dict[str, dict[str, float]]:
    """Per camera of a calibration (anipose layout): errors against truth dicts (`PinholeCamera.truth()`
    or a demo camera's describe()["board_truth"]), extrinsics compared relative to the first camera.

    fx/fy: % error; cx/cy: px; rotation: degrees between the relative rotations; translation: % of the
    true distance from the first camera (mm when that distance is 0); ray_px_median/max: over a grid of
    the whole image, how far the calibrated lens model's ray through a pixel is from the true one, in
    pixels at the true focal length (focal length, principal point and distortion together);
    ray_px_max_covered: the same where the board was seen (`covered`: per camera, a rows x cols bool grid
    over the image, as cameras.coverage_grid gives)."""
    cams = [result[k] for k in sorted((k for k in result if k.startswith("cam_")), key=lambda k: int(k[4:]))]
    first = truth[cams[0]["name"]]
    ref = _rt_matrix(first["rotation"], first["translation"])
    out = {}
    for cam in cams:
        t = truth[cam["name"]]
        k, kt = np.asarray(cam["matrix"]), np.asarray(t["matrix"])
        true_rel = _rt_matrix(t["rotation"], t["translation"]) @ np.linalg.inv(ref)
        got = _rt_matrix(cam["rotation"], cam["translation"])
        angle = float(np.degrees(np.linalg.norm(cv2.Rodrigues(got[:3, :3].T @ true_rel[:3, :3])[0])))
        distance = float(np.linalg.norm(true_rel[:3, 3]))
        miss = float(np.linalg.norm(got[:3, 3] - true_rel[:3, 3]))
        w, h = cam["size"]
        grid = np.stack(np.meshgrid(np.linspace(0, w - 1, 33), np.linspace(0, h - 1, 19)), -1).reshape(-1, 1, 2)
        criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-12)
        rays_true = cv2.undistortPoints(grid, kt, np.asarray(t["distortions"], float), criteria=criteria)
        rays = cv2.undistortPoints(grid, k, np.asarray(cam["distortions"], float), criteria=criteria)
        ray_px = np.linalg.norm((rays - rays_true).reshape(-1, 2), axis=1) * kt[0, 0]
        errors = {"ray_px_median": float(np.median(ray_px)), "ray_px_max": float(ray_px.max())}
        if covered is not None and cam["name"] in covered:
            cells = covered[cam["name"]]
            rows, cols = cells.shape
            g = grid.reshape(-1, 2)
            inside = cells[
                np.minimum((g[:, 1] * rows / h).astype(int), rows - 1),
                np.minimum((g[:, 0] * cols / w).astype(int), cols - 1),
            ]
            errors["ray_px_max_covered"] = float(ray_px[inside].max()) if inside.any() else float("nan")
        out[cam["name"]] = {
            **errors,
            "fx_pct": float((k[0, 0] / kt[0, 0] - 1) * 100),
            "fy_pct": float((k[1, 1] / kt[1, 1] - 1) * 100),
            "cx_px": float(k[0, 2] - kt[0, 2]),
            "cy_px": float(k[1, 2] - kt[1, 2]),
            "rotation_deg": angle,
            "translation_pct" if distance > 0 else "translation_mm": miss / distance * 100 if distance > 0 else miss,
        }
    return out

"""Camera calibration from a ChArUco board filmed by every camera: intrinsics, extrinsics, bundle adjustment.

1. Detection streams through the frames (a take's aligned bundles or folders of stills) and keeps only the
   corner arrays, so memory does not grow with the frame size or count of frames.
2. Each camera's intrinsics (OpenCV's model: fx fy cx cy and k1 k2 p1 p2 k3) from `cv2.calibrateCamera`
   on a spread of its views; each view's board pose from `cv2.solvePnP`.
3. Extrinsics relative to the first camera: for every camera pair, the relative pose averaged over the
   frames both see (chordal rotation mean, median translation), chained along the pairs sharing the most
   views when a camera never sees the board together with the first.
4. A joint bundle adjustment of all intrinsics, distortions, extrinsics and board poses minimising the
   reprojection error: Levenberg-Marquardt on the normal equations with the board poses eliminated by the
   Schur complement (each board pose touches only its own 6 x 6 block), Jacobians from
   `cv2.projectPoints` chained through `cv2.composeRT`. Points far off after a round (a board that moved
   between two cameras' exposures) are dropped and the adjustment repeated.

When the board was held still often enough (a technician pausing at each pose), only the still frames are
used: a moving board is seen by two cameras a few milliseconds apart, blurred and rolling-shuttered, and
those views bias the extrinsics more than the outlier test can catch.

The result is a plain dict in aniposelib's layout ([cam_0] name, size, matrix, distortions, rotation,
translation; rotation/translation map first-camera coordinates in mm into each camera) plus [metadata].
"""

from __future__ import annotations

import datetime as _dt
import itertools
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence, Sized
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..take.layout import SYNC
from .board import BoardSpec, cv_board
from .store import CalibrationError

MIN_CORNERS = 6  # a view with fewer ChArUco corners is not used
MIN_VIEWS = 5  # per camera
FLAG_RMS_PX = 1.0  # a calibration above this RMS reprojection error is written but flagged
MAX_VIEWS = 300  # frames kept for the bundle adjustment (evenly spread) when there are more
INIT_VIEWS = 40  # views per camera for the first intrinsic estimate
OUTLIER_FLOOR_PX = 1.5  # a point is an outlier above max(this, 5 x the median residual)
STILL_PX = 0.5  # a board whose corners moved less than this since the camera's previous frame is still
MIN_STILL_VIEWS = 30  # per camera (and per linked pair): enough still views to calibrate from them alone
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")

Progress = Callable[[str, int, "int | None"], None]  # (stage, done, total or None)


# --- detection ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Detection:
    """The ChArUco corners found in one image: pixel positions (n x 2) and corner ids (n)."""

    corners: np.ndarray
    ids: np.ndarray


@dataclass(frozen=True)
class _Scan:
    detection: Detection | None
    markers: int  # markers of the board's dictionary seen
    foreign: int  # of those, ids the board does not have


class _Detector:
    """One cv2 CharucoDetector per thread (they keep state between calls)."""

    def __init__(self, spec: BoardSpec) -> None:
        self.spec = spec
        self.board = cv_board(spec)
        self.detector = cv2.aruco.CharucoDetector(self.board)
        self.marker_ids = int(np.asarray(self.board.getIds()).max()) + 1  # cv2's stubs say Sequence: an ndarray

    def scan(self, image: np.ndarray) -> _Scan:
        if image.ndim == 3:
            image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        corners, ids, _, marker_ids = self.detector.detectBoard(image)
        markers = 0 if marker_ids is None else len(marker_ids)
        foreign = 0 if marker_ids is None else int(np.count_nonzero(marker_ids.ravel() >= self.marker_ids))
        if ids is None or len(ids) < MIN_CORNERS:
            return _Scan(None, markers, foreign)
        ids = ids.ravel().astype(np.int32)
        if self.board.checkCharucoCornersCollinear(ids.reshape(-1, 1)):
            return _Scan(None, markers, foreign)  # a single row of corners fixes no pose
        return _Scan(Detection(corners.reshape(-1, 2).astype(np.float32), ids), markers, foreign)


def detect(image_gray: np.ndarray, spec: BoardSpec) -> Detection | None:
    """The board's ChArUco corners in one image, or None when fewer than MIN_CORNERS (or only one row)."""
    return _Detector(spec).scan(image_gray).detection


# --- frame sources ------------------------------------------------------------------------------

Frame = Mapping[str, "np.ndarray | None"]


@dataclass
class Views:
    """Simultaneous images of several cameras, one mapping name -> image (or None) per frame.

    `frames` is iterated once, lazily; `total` (if known) is the number of frames, for progress."""

    names: list[str]
    frames: Iterable[Frame]
    total: int | None = None

    def __iter__(self) -> Iterator[Frame]:
        return iter(self.frames)


def views_from_lists(images: Mapping[str, Sequence[np.ndarray | None]]) -> Views:
    """Per-camera lists of images; the i-th images of all cameras are simultaneous."""
    names = list(images)
    total = max((len(v) for v in images.values()), default=0)

    def frames() -> Iterator[Frame]:
        for i in range(total):
            yield {n: (images[n][i] if i < len(images[n]) else None) for n in names}

    return Views(names, frames(), total)


def views_from_take(take_dir: str | Path, cameras: Sequence[str] | None = None) -> Views:
    """The cameras of a take (default: all), decoded as grey frames aligned along sync.csv."""
    from ..take.reader import open_take  # the reader pulls in PyAV; only needed here

    take = open_take(take_dir)
    have = [n for n, s in take.streams.items() if s.kind == "camera"]
    names = list(cameras) if cameras else have
    for name in names:
        if name not in have:
            raise CalibrationError(
                f"{take_dir}: no camera {name!r} in this take (cameras: {', '.join(have) or 'none'})"
            )
    if not names:
        raise CalibrationError(f"{take_dir}: the take has no camera")
    with open(take.path / SYNC, "rb") as fh:
        total = max(0, sum(1 for _ in fh) - 1)

    def frames() -> Iterator[Frame]:
        for bundle in take.frames(streams=names, video_format="gray"):
            yield bundle.video

    return Views(names, frames(), total)


def views_from_images(name_to_dir: Mapping[str, str | Path]) -> Views:
    """Folders of still images, one per camera; files in sorted-name order, the i-th of each simultaneous."""
    files: dict[str, list[Path]] = {}
    for name, folder in name_to_dir.items():
        folder = Path(folder)
        if not folder.is_dir():
            raise CalibrationError(f"{name}: {folder}: no such folder")
        files[name] = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not files[name]:
            raise CalibrationError(f"{name}: {folder}: no images ({', '.join(IMAGE_SUFFIXES)})")
    counts = {n: len(f) for n, f in files.items()}
    if len(set(counts.values())) > 1:
        listing = ", ".join(f"{n} {c}" for n, c in counts.items())
        raise CalibrationError(
            f"the folders hold different numbers of images ({listing}); images in the same "
            "place of the sorted order must be simultaneous"
        )
    total = next(iter(counts.values()), 0)

    def frames() -> Iterator[Frame]:
        first: dict[str, tuple[tuple[int, ...], Path]] = {}
        for i in range(total):
            frame: dict[str, np.ndarray | None] = {}
            for name, paths in files.items():
                image = cv2.imread(str(paths[i]), cv2.IMREAD_GRAYSCALE)
                if image is None:
                    raise CalibrationError(f"{name}: {paths[i]}: not a readable image")
                shape, path = first.setdefault(name, (image.shape, paths[i]))
                if image.shape != shape:
                    raise CalibrationError(
                        f"{name}: images of different sizes: {shape[1]}x{shape[0]} ({path.name}) "
                        f"and {image.shape[1]}x{image.shape[0]} ({paths[i].name})"
                    )
                frame[name] = image
            yield frame

    return Views(list(files), frames(), total)


def as_views(views: Any) -> Views:
    """A `Views` from any accepted input: Views itself, per-camera lists of images, or an iterable (or a
    callable returning one) of frames, each a mapping camera name -> image or None (names from the first)."""
    if isinstance(views, Views):
        return views
    if isinstance(views, Mapping):
        return views_from_lists(views)
    frames = iter(views() if callable(views) else views)
    first = next(frames, None)
    if first is None:
        raise CalibrationError("no frames to calibrate from")
    total = len(views) if isinstance(views, Sized) else None
    return Views(list(first), itertools.chain([first], frames), total)


# --- collecting detections ----------------------------------------------------------------------


@dataclass
class CameraViews:
    """What detection kept of one camera: its image size, counts, and the corners per frame number."""

    name: str
    size: tuple[int, int] | None = None
    frames: int = 0  # frames that had an image
    with_markers: int = 0  # frames where markers of the board's dictionary were seen
    foreign_frames: int = 0  # frames with marker ids the board does not have
    detections: dict[int, Detection] = field(default_factory=dict)
    first_size_frame: int = 0


def collect(
    views: Views | Mapping[str, Sequence[np.ndarray | None]] | Iterable[Frame],
    spec: BoardSpec,
    progress: Progress | None = None,
    image_sizes: Mapping[str, tuple[int, int]] | None = None,
) -> dict[str, CameraViews]:
    """Detect the board in every frame of every camera as the frames stream in (a thread per core)."""
    views = as_views(views)
    cams = {n: CameraViews(n) for n in views.names}
    workers = max(1, min(4, os.cpu_count() or 1))
    detectors = [_Detector(spec) for _ in range(workers)]
    free = list(detectors)
    pending: list[tuple[int, str, Future[_Scan]]] = []

    def scan(image: np.ndarray) -> _Scan:
        detector = free.pop()  # list.pop/append are atomic: each running task holds its own detector
        try:
            return detector.scan(image)
        finally:
            free.append(detector)

    def settle(limit: int) -> None:
        while len(pending) > limit:
            k, name, fut = pending.pop(0)
            result = fut.result()
            cam = cams[name]
            cam.with_markers += result.markers > 0
            if result.foreign:
                cam.foreign_frames += 1
            if result.detection is not None:
                cam.detections[k] = result.detection

    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)  # parallel over images instead: OpenCV's own threads barely help the detector
    try:
        with ThreadPoolExecutor(workers, thread_name_prefix="improvcap-detect") as pool:
            for k, frame in enumerate(views):
                for name in views.names:
                    image = frame.get(name)
                    if image is None:
                        continue
                    cam = cams[name]
                    size = (int(image.shape[1]), int(image.shape[0]))
                    if cam.size is None:
                        cam.size, cam.first_size_frame = size, k
                        expected = (image_sizes or {}).get(name)
                        if expected is not None and tuple(expected) != size:
                            raise CalibrationError(
                                f"{name}: images are {size[0]}x{size[1]}, expected {expected[0]}x{expected[1]}"
                            )
                    elif size != cam.size:
                        raise CalibrationError(
                            f"{name}: images of different sizes: {cam.size[0]}x{cam.size[1]} (frame "
                            f"{cam.first_size_frame}) and {size[0]}x{size[1]} (frame {k})"
                        )
                    cam.frames += 1
                    pending.append((k, name, pool.submit(scan, np.ascontiguousarray(image))))
                settle(4 * workers)  # bounded: only a few frames are in flight
                if progress is not None:
                    progress("detect", k + 1, views.total)
            settle(0)
    finally:
        cv2.setNumThreads(threads)
    return cams


# --- calibration ----------------------------------------------------------------------------------


def calibrate_cameras(
    views: Views | Mapping[str, Sequence[np.ndarray | None]] | Iterable[Frame],
    spec: BoardSpec | None = None,
    image_sizes: Mapping[str, tuple[int, int]] | None = None,
    progress: Progress | None = None,
    *,
    threshold_px: float = FLAG_RMS_PX,
    max_views: int = MAX_VIEWS,
    model: str = "full",
) -> dict[str, Any]:
    """Detect, then calibrate: the anipose-layout dict described in the module docstring.

    `views`: a `Views` (views_from_take, views_from_images), per-camera lists of images (None: no image), or
    an iterable of frames (mappings camera name -> grey image or None), see `as_views`.
    `image_sizes`: optional expected (width, height) per camera. `progress(stage, done, total)` is called
    with stages "detect" (per frame), "intrinsics" (per camera) and "bundle" (per iteration).
    `model`: "full" (fx, fy, cx, cy, k1, k2, p1, p2, k3) or "anipose" (one focal length and k1, principal
    point fixed at the image centre, as aniposelib fits)."""
    spec = spec or BoardSpec()
    return solve(
        collect(views, spec, progress, image_sizes),
        spec,
        threshold_px=threshold_px,
        max_views=max_views,
        model=model,
        progress=progress,
    )


def solve(
    cams: Mapping[str, CameraViews],
    spec: BoardSpec,
    *,
    threshold_px: float = FLAG_RMS_PX,
    max_views: int = MAX_VIEWS,
    model: str = "full",
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Calibrate from collected detections (see `collect`)."""
    if model not in ("full", "anipose"):
        raise ValueError(f"unknown model {model!r}")
    names = list(cams)
    if not names:
        raise CalibrationError("no cameras to calibrate")
    _check_views(cams, spec)
    all_found = {n: len(cams[n].detections) for n in names}
    cams = _still_views(cams) or cams
    board = cv_board(spec)
    points = np.asarray(board.getChessboardCorners(), dtype=np.float64)

    # Intrinsics and per-view poses, camera by camera.
    intrinsics: list[tuple[np.ndarray, np.ndarray]] = []
    poses: list[dict[int, np.ndarray]] = []  # camera -> frame -> 4x4 board-to-camera
    for i, name in enumerate(names):
        cam = cams[name]
        assert cam.size is not None
        k, d = _initial_intrinsics(cam, points, model)
        intrinsics.append((k, d))
        poses.append({f: _pnp(points[det.ids], det.corners, k, d) for f, det in cam.detections.items()})
        if progress is not None:
            progress("intrinsics", i + 1, len(names))

    shared = _shared_counts(names, cams)
    extrinsics = _initial_extrinsics(names, poses, shared)
    frames = _select_frames(names, cams, shared, max_views)

    # Board pose (board to first camera) per frame, from the camera that sees most corners.
    board_poses = {}
    for f in frames:
        seers = [i for i, n in enumerate(names) if f in cams[n].detections]
        best = max(seers, key=lambda i: len(cams[names[i]].detections[f].ids))
        board_poses[f] = np.linalg.inv(extrinsics[best]) @ poses[best][f]

    observations = [
        (i, f, points[cams[n].detections[f].ids], cams[n].detections[f].corners.astype(np.float64))
        for i, n in enumerate(names)
        for f in frames
        if f in cams[n].detections
    ]
    adjust = _BundleAdjustment(intrinsics, extrinsics, board_poses, observations, model)
    dropped = 0
    for _ in range(4):
        adjust.run(progress)
        removed = adjust.drop_outliers()
        dropped += removed
        if not removed:
            break
    return _result(names, cams, adjust, spec, shared, threshold_px, dropped, model, all_found)


def _motion_px(cam: CameraViews, frame: int) -> float:
    """How far the board's corners moved since the camera's previous frame (inf: not seen there)."""
    now, before = cam.detections[frame], cam.detections.get(frame - 1)
    if before is None:
        return float("inf")
    _, a, b = np.intersect1d(now.ids, before.ids, return_indices=True)
    if len(a) < MIN_CORNERS:
        return float("inf")
    return float(np.max(np.linalg.norm(now.corners[a] - before.corners[b], axis=-1)))


def _still_views(cams: Mapping[str, CameraViews]) -> dict[str, CameraViews] | None:
    """The cameras' views restricted to frames where the board was still, or None when there are too few
    of them for every camera and every pair of cameras that shares views."""
    still = {}
    for name, cam in cams.items():
        keep = {f: d for f, d in cam.detections.items() if _motion_px(cam, f) < STILL_PX}
        if len(keep) < MIN_STILL_VIEWS:
            return None
        still[name] = replace(cam, detections=keep)
    names = list(cams)
    for (a, b), count in _shared_counts(names, cams).items():
        if count and _shared_counts([names[a], names[b]], still)[(0, 1)] < MIN_STILL_VIEWS:
            return None
    return still


def _check_views(cams: Mapping[str, CameraViews], spec: BoardSpec) -> None:
    """Refuse cameras with too few usable views, saying what was found."""
    for name, cam in cams.items():
        found = len(cam.detections)
        if cam.frames == 0:
            raise CalibrationError(f"{name}: no frames")
        if found >= MIN_VIEWS:
            continue
        counts = f"{name}: the board was found in {found} of {cam.frames} frames"
        if cam.foreign_frames:
            raise CalibrationError(
                f"{counts}; markers the board does not have were seen in {cam.foreign_frames} frames: the board "
                f"spec ({spec.describe()}) may not match the print"
            )
        if cam.with_markers > found:
            raise CalibrationError(
                f"{counts}, though its markers were seen in {cam.with_markers}: the board spec "
                f"({spec.describe()}) may not match the print"
            )
        if found == 0:
            raise CalibrationError(
                f"{counts} (no {spec.dictionary} markers seen; is the board in view, and the "
                f"spec's dictionary the printed one?)"
            )
        raise CalibrationError(f"{counts}; at least {MIN_VIEWS} views are needed")


def _initial_intrinsics(cam: CameraViews, points: np.ndarray, model: str) -> tuple[np.ndarray, np.ndarray]:
    frames = sorted(cam.detections)
    pick = [frames[round(j)] for j in np.linspace(0, len(frames) - 1, min(INIT_VIEWS, len(frames)))]
    obj = [points[cam.detections[f].ids].astype(np.float32) for f in pick]
    img = [cam.detections[f].corners.reshape(-1, 1, 2) for f in pick]
    assert cam.size is not None
    try:
        k = cv2.initCameraMatrix2D(obj, img, cam.size)
        flags = cv2.CALIB_USE_INTRINSIC_GUESS
        if model == "anipose":  # aniposelib: one focal length, k1 only, principal point where it starts
            flags |= (
                cv2.CALIB_FIX_PRINCIPAL_POINT
                | cv2.CALIB_FIX_ASPECT_RATIO
                | cv2.CALIB_ZERO_TANGENT_DIST
                | cv2.CALIB_FIX_K2
                | cv2.CALIB_FIX_K3
            )
            k[0, 0] = k[1, 1] = (k[0, 0] + k[1, 1]) / 2
        _, k, d, _, _ = cv2.calibrateCamera(obj, img, cam.size, k, np.zeros(5), flags=flags)
    except cv2.error as e:
        reason = str(e).strip().splitlines()[-1]
        raise CalibrationError(f"{cam.name}: the intrinsic calibration failed: {reason}") from None
    return k.astype(np.float64), d.ravel()[:5].astype(np.float64)


def _pnp(obj: np.ndarray, img: np.ndarray, k: np.ndarray, d: np.ndarray) -> np.ndarray:
    ok, r, t = cv2.solvePnP(obj, img.astype(np.float64), k, d, flags=cv2.SOLVEPNP_IPPE)
    if not ok:
        ok, r, t = cv2.solvePnP(obj, img.astype(np.float64), k, d)
    r, t = cv2.solvePnPRefineLM(obj, img.astype(np.float64), k, d, r, t)
    return _matrix(r, t)


def _matrix(r: Any, t: Any) -> np.ndarray:
    m = np.eye(4)
    m[:3, :3] = cv2.Rodrigues(np.asarray(r, np.float64).reshape(3, 1))[0]
    m[:3, 3] = np.asarray(t, np.float64).ravel()
    return m


def _vectors(m: np.ndarray) -> np.ndarray:
    return np.concatenate([cv2.Rodrigues(m[:3, :3])[0].ravel(), m[:3, 3]])


def _shared_counts(names: list[str], cams: Mapping[str, CameraViews]) -> dict[tuple[int, int], int]:
    keys = [set(cams[n].detections) for n in names]
    return {(a, b): len(keys[a] & keys[b]) for a in range(len(names)) for b in range(a + 1, len(names))}


def _average_pose(transforms: list[np.ndarray]) -> np.ndarray:
    """Robust mean of rigid transforms: chordal rotation mean without the far ones, median translation."""
    rots = np.array([m[:3, :3] for m in transforms])

    def project(mean: np.ndarray) -> np.ndarray:
        u, _, vt = np.linalg.svd(mean)
        return u @ np.diag([1, 1, np.linalg.det(u @ vt)]) @ vt

    rot = project(rots.sum(0))
    angles = np.array([np.linalg.norm(cv2.Rodrigues(rot.T @ r)[0]) for r in rots])
    keep = angles <= max(3 * np.median(angles), np.radians(1.0))
    rot = project(rots[keep].sum(0))
    out = np.eye(4)
    out[:3, :3] = rot
    out[:3, 3] = np.median(np.array([m[:3, 3] for m in transforms])[keep], axis=0)
    return out


def _initial_extrinsics(
    names: list[str], poses: list[dict[int, np.ndarray]], shared: dict[tuple[int, int], int]
) -> list[np.ndarray]:
    """First-camera-to-camera transforms along a maximum spanning tree of shared views (Prim)."""
    n = len(names)
    placed = {0: np.eye(4)}
    while len(placed) < n:
        best = None
        for (a, b), count in shared.items():
            if count and (a in placed) != (b in placed):
                if best is None or count > best[2]:
                    best = (a, b, count)
        if best is None:
            raise CalibrationError(_unconnected_message(names, placed, shared))
        a, b, _ = best
        src, dst = (a, b) if a in placed else (b, a)
        common = sorted(set(poses[src]) & set(poses[dst]))
        relative = _average_pose([poses[dst][f] @ np.linalg.inv(poses[src][f]) for f in common])  # src -> dst
        placed[dst] = relative @ placed[src]
    return [placed[i] for i in range(n)]


def _unconnected_message(names: list[str], placed: Mapping[int, Any], shared: dict[tuple[int, int], int]) -> str:
    lonely = [i for i in range(len(names)) if i not in placed]
    pairs = ", ".join(f"{names[a]}-{names[b]} {c}" for (a, b), c in shared.items() if a in lonely or b in lonely)
    who = ", ".join(names[i] for i in lonely)
    if len(lonely) == 1:
        return f"{who} never sees the board together with another camera (frames seen together: {pairs})"
    linked = ", ".join(names[i] for i in placed)
    return (
        f"{who} never see the board together with {linked} (frames seen together: {pairs}); "
        "every camera must share views with the first, directly or through others"
    )


def _select_frames(
    names: list[str], cams: Mapping[str, CameraViews], shared: dict[tuple[int, int], int], max_views: int
) -> list[int]:
    """All frames with a detection, or about max_views of them spread evenly, keeping those of weakly
    linked camera pairs and of cameras that saw the board rarely."""
    frames = sorted(set().union(*(cams[n].detections for n in names)))
    if len(frames) <= max_views:
        return frames
    keep: set[int] = set()
    for (a, b), count in shared.items():
        if 0 < count <= 20:  # a weakly linked pair keeps all its frames
            keep |= set(cams[names[a]].detections) & set(cams[names[b]].detections)
    for n in names:
        if len(cams[n].detections) <= 50:  # so does a camera that saw the board rarely
            keep |= set(cams[n].detections)
    rest = [f for f in frames if f not in keep]
    room = max(0, max_views - len(keep))
    if room and rest:
        keep |= {rest[round(j)] for j in np.linspace(0, len(rest) - 1, min(room, len(rest)))}
    return sorted(keep)


class _BundleAdjustment:
    """Levenberg-Marquardt over camera parameters and board poses, board poses eliminated (Schur)."""

    def __init__(
        self,
        intrinsics: list[tuple[np.ndarray, np.ndarray]],
        extrinsics: list[np.ndarray],
        board_poses: dict[int, np.ndarray],
        observations: list[tuple[int, int, np.ndarray, np.ndarray]],
        model: str,
    ) -> None:
        self.n_cams = len(intrinsics)
        self.frames = sorted(board_poses)
        self.frame_index = {f: j for j, f in enumerate(self.frames)}
        # Intrinsic vector [fx, fy, cx, cy, k1, k2, p1, p2, k3] = base + select @ q.
        if model == "full":
            self.select = np.eye(9)
        else:
            self.select = np.zeros((9, 2))
            self.select[0, 0] = self.select[1, 0] = 1.0
            self.select[4, 1] = 1.0
        self.base, q = [], []
        for k, d in intrinsics:
            vec = np.concatenate([[k[0, 0], k[1, 1], k[0, 2], k[1, 2]], d])
            if model == "full":
                q.append(vec)
                self.base.append(np.zeros(9))
            else:
                q.append(np.array([(vec[0] + vec[1]) / 2, vec[4]]))
                b = vec.copy()
                b[[0, 1, 4, 5, 6, 7, 8]] = 0
                self.base.append(b)
        m = self.select.shape[1]
        # Camera block: per camera q (m), then 6 extrinsic parameters for all but the first.
        self.offsets = [c * m + max(0, c - 1) * 6 for c in range(self.n_cams)]
        self.n_cam_params = self.n_cams * m + (self.n_cams - 1) * 6
        self.m = m
        self.cam_params = np.concatenate(
            [np.concatenate([q[c], _vectors(extrinsics[c])]) if c else q[c] for c in range(self.n_cams)]
        )
        self.board = np.array([_vectors(board_poses[f]) for f in self.frames])
        self.obs = [(c, self.frame_index[f], X, x) for c, f, X, x in observations]

    # parameters

    def camera(self, c: int, params: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        p = self.cam_params if params is None else params
        o = self.offsets[c]
        v = self.base[c] + self.select @ p[o : o + self.m]
        k = np.array([[v[0], 0, v[2]], [0, v[1], v[3]], [0, 0, 1]])
        ext = p[o + self.m : o + self.m + 6] if c else np.zeros(6)
        return k, v[4:9], ext

    # residuals and Jacobians

    def _residuals(self, cam_params: np.ndarray, board: np.ndarray) -> list[np.ndarray]:
        cams = [self.camera(c, cam_params) for c in range(self.n_cams)]
        out = []
        for c, j, X, x in self.obs:
            k, d, ext = cams[c]
            r, t = board[j, :3], board[j, 3:]
            if c:
                r, t = cv2.composeRT(r, t, ext[:3], ext[3:])[:2]
            out.append(cv2.projectPoints(X, r, t, k, d)[0].reshape(-1, 2) - x)
        return out

    def cost(self, cam_params: np.ndarray | None = None, board: np.ndarray | None = None) -> float:
        res = self._residuals(
            self.cam_params if cam_params is None else cam_params, self.board if board is None else board
        )
        return float(sum((r**2).sum() for r in res))

    def _normal_equations(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, float]:
        nc, nf = self.n_cam_params, len(self.frames)
        a = np.zeros((nc, nc))
        b = np.zeros((nf, nc, 6))
        cb = np.zeros((nf, 6, 6))
        ga = np.zeros(nc)
        gb = np.zeros((nf, 6))
        cost = 0.0
        cams = [self.camera(c) for c in range(self.n_cams)]
        for c, j, X, x in self.obs:
            k, d, ext = cams[c]
            rb, tb = self.board[j, :3], self.board[j, 3:]
            if c:
                r, t, dr3dr1, dr3dt1, dr3dr2, dr3dt2, dt3dr1, dt3dt1, dt3dr2, dt3dt2 = cv2.composeRT(
                    rb, tb, ext[:3], ext[3:]
                )
            else:
                r, t = rb, tb
            proj, jac = cv2.projectPoints(X, r, t, k, d)
            res = proj.reshape(-1) - x.reshape(-1)
            cost += float(res @ res)
            jr, jt = jac[:, 0:3], jac[:, 3:6]
            jq = jac[:, 6:15] @ self.select
            if c:
                jb = np.hstack([jr @ dr3dr1 + jt @ dt3dr1, jr @ dr3dt1 + jt @ dt3dt1])
                jc = np.hstack([jq, jr @ dr3dr2 + jt @ dt3dr2, jr @ dr3dt2 + jt @ dt3dt2])
            else:
                jb = jac[:, 0:6]
                jc = jq
            o = self.offsets[c]
            s = slice(o, o + jc.shape[1])
            a[s, s] += jc.T @ jc
            ga[s] += jc.T @ res
            b[j, s, :] += jc.T @ jb
            cb[j] += jb.T @ jb
            gb[j] += jb.T @ res
        return a, b, cb, ga, gb, cost

    def run(self, progress: Progress | None = None, max_iter: int = 100) -> None:
        lam = 1e-3
        a, b, cb, ga, gb, cost = self._normal_equations()
        for it in range(max_iter):
            if progress is not None:
                progress("bundle", it + 1, None)
            da = np.maximum(np.diag(a), 1e-12)
            dc = np.maximum(np.diagonal(cb, axis1=1, axis2=2), 1e-12)
            while True:
                a_l = a + lam * np.diag(da)
                c_l = cb + lam * dc[:, :, None] * np.eye(6)
                c_inv = np.linalg.inv(c_l)
                bc = np.einsum("jcp,jpq->jcq", b, c_inv)
                s = a_l - np.einsum("jcq,jdq->cd", bc, b)
                rhs = -ga + np.einsum("jcq,jq->c", bc, gb)
                try:
                    step_c = np.linalg.solve(s, rhs)
                except np.linalg.LinAlgError:
                    step_c = np.linalg.lstsq(s, rhs, rcond=None)[0]
                step_b = -np.einsum("jpq,jq->jp", c_inv, gb + np.einsum("jcq,c->jq", b, step_c))
                new_c, new_b = self.cam_params + step_c, self.board + step_b
                new_cost = self.cost(new_c, new_b)
                if np.isfinite(new_cost) and new_cost < cost:
                    break
                lam *= 10
                if lam > 1e10:
                    return
            self.cam_params, self.board = new_c, new_b
            lam = max(lam / 10, 1e-9)
            improvement = (cost - new_cost) / max(cost, 1e-300)
            small_step = np.abs(step_c).max() < 1e-10 * (1 + np.abs(self.cam_params).max())
            a, b, cb, ga, gb, cost = self._normal_equations()
            if improvement < 1e-10 or small_step:
                return

    def point_errors(self) -> list[np.ndarray]:
        """Per observation, each point's reprojection error (px)."""
        return [np.linalg.norm(r, axis=1) for r in self._residuals(self.cam_params, self.board)]

    def drop_outliers(self) -> int:
        """Drop views that fit badly as a whole (the board moved between two cameras' exposures), then
        single stray corners; returns the number of points dropped."""
        errors = self.point_errors()
        view_rms = np.array([np.sqrt(np.mean(e**2)) for e in errors])
        view_limit = max(OUTLIER_FLOOR_PX, 3 * float(np.median(view_rms)))
        point_limit = max(OUTLIER_FLOOR_PX, 5 * float(np.median(np.concatenate(errors))))
        kept, removed = [], 0
        for (c, j, X, x), e, rms in zip(self.obs, errors, view_rms):
            good = e <= point_limit
            if rms > view_limit or good.sum() < MIN_CORNERS:
                removed += len(e)
                continue
            removed += int((~good).sum())
            kept.append((c, j, X[good], x[good]))
        self.obs = kept
        return removed


def coverage_grid(cam: CameraViews, cols: int = 8, rows: int = 6) -> np.ndarray:
    """Which cells of a rows x cols grid over the image hold at least one detected corner (bool array)."""
    grid = np.zeros((rows, cols), bool)
    if cam.size is None or not cam.detections:
        return grid
    pts = np.concatenate([d.corners for d in cam.detections.values()])
    c = np.clip((pts[:, 0] * cols / cam.size[0]).astype(int), 0, cols - 1)
    r = np.clip((pts[:, 1] * rows / cam.size[1]).astype(int), 0, rows - 1)
    grid[r, c] = True
    return grid


def _result(
    names: list[str],
    cams: Mapping[str, CameraViews],
    adjust: _BundleAdjustment,
    spec: BoardSpec,
    shared: dict[tuple[int, int], int],
    threshold_px: float,
    dropped: int,
    model: str,
    found: Mapping[str, int],
) -> dict[str, Any]:
    errors = adjust.point_errors()
    per_cam: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for (c, _, _, _), e in zip(adjust.obs, errors):
        per_cam[names[c]].append(e)
    out: dict[str, Any] = {}
    for c, name in enumerate(names):
        if len(per_cam[name]) < MIN_VIEWS:
            raise CalibrationError(
                f"{name}: only {len(per_cam[name])} views fit the others (at least "
                f"{MIN_VIEWS} are needed); the board may have moved between the cameras' frames"
            )
        k, d, ext = adjust.camera(c)
        out[f"cam_{c}"] = {
            "name": name,
            "size": list(cams[name].size or (0, 0)),
            "matrix": k.tolist(),
            "distortions": d.tolist(),
            "rotation": ext[:3].tolist(),
            "translation": ext[3:].tolist(),
        }
    rms = {n: float(np.sqrt(np.mean(np.concatenate(per_cam[n]) ** 2))) for n in names}
    overall = float(np.sqrt(np.mean(np.concatenate(errors) ** 2)))
    out["metadata"] = {
        "error": overall,
        "per_camera_error": rms,
        "views_used": {n: len(per_cam[n]) for n in names},
        "frames": {n: cams[n].frames for n in names},
        "board_found": dict(found),
        # frames used: those where the board was still when there were enough of them, else all
        "still_only": any(len(cams[n].detections) < found[n] for n in names),
        "shared_views": {f"{names[a]}-{names[b]}": c for (a, b), c in shared.items()},
        # fraction of an 8 x 6 grid over the image that the board's corners reached: the lens model is
        # extrapolated elsewhere (low coverage: film the board in the image corners too)
        "coverage": {n: round(float(coverage_grid(cams[n]).mean()), 3) for n in names},
        "outlier_points": dropped,
        "model": "k1 k2 p1 p2 k3" if model == "full" else "f k1 (aniposelib)",
        "units": "mm",
        "board": spec.to_dict(),
        "threshold_px": float(threshold_px),
        "flagged": bool(max(overall, *rms.values()) > threshold_px),  # any camera above the threshold
        "created_utc": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    return out

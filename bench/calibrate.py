"""Camera calibration: time and accuracy on rendered views with a known truth, beside aniposelib's model.

Three cameras (improvcap.calibrate.render.example_rig: three lenses with distortion, at three poses)
film the default ChArUco board at N held poses of its path (`key_pose`), rendered at WIDTHxHEIGHT (drawn at
twice the size and averaged down, so the renders themselves put corners within about 0.07 px of the
model) into one PNG folder per camera. The calibration then runs as `--images` would: frames stream from
the folders (PNG decoding included in the time) and only the corners are kept. Reported:
- time: PNG decoding + detection, solving (intrinsics + extrinsics + bundle adjustment), the rendering
  (not part of the calibration), and the process's peak memory;
- accuracy of our full OpenCV model (fx fy cx cy k1 k2 p1 p2 k3) against the truth: focal length error
  (%), principal point error (px), relative rotation (degrees) and translation (% of the baseline) of each
  camera against the first, RMS reprojection error;
- the same detections calibrated the way aniposelib does it: one focal length (fx = fy) and k1 only,
  principal point fixed at the image centre, no tangential distortion (aniposelib's Camera parameters
  rvec, tvec, f, k1, started from cv2.initCameraMatrix2D): intrinsics from cv2.calibrateCamera with
  CALIB_USE_INTRINSIC_GUESS | CALIB_FIX_PRINCIPAL_POINT | CALIB_FIX_ASPECT_RATIO | CALIB_ZERO_TANGENT_DIST
  | CALIB_FIX_K2 | CALIB_FIX_K3, then the same joint adjustment restricted to that model.

    python bench/calibrate.py [--views 200] [--width 1280] [--height 720]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import cv2

from improvcap.calibrate.board import BoardSpec
from improvcap.calibrate.cameras import collect, coverage_grid, solve, views_from_images
from improvcap.calibrate.render import BoardRenderer, compare, example_rig, key_pose


def summary(result: dict, truth: dict, covered: dict) -> dict:
    errors = compare(result, truth, covered)
    meta = result["metadata"]
    worst = {
        "focal_pct": max(max(abs(e["fx_pct"]), abs(e["fy_pct"])) for e in errors.values()),
        "principal_point_px": max(max(abs(e["cx_px"]), abs(e["cy_px"])) for e in errors.values()),
        "rotation_deg": max(e["rotation_deg"] for e in errors.values()),
        "translation_pct": max(e.get("translation_pct", 0.0) for e in errors.values()),
        "ray_px_max_covered": max(e["ray_px_max_covered"] for e in errors.values()),
        "ray_px_max": max(e["ray_px_max"] for e in errors.values()),
    }
    return {
        "rms_px": round(meta["error"], 4),
        "per_camera_rms_px": {k: round(v, 4) for k, v in meta["per_camera_error"].items()},
        "views_used": meta["views_used"],
        "coverage": meta["coverage"],
        "worst": {k: round(v, 4) for k, v in worst.items()},
        "per_camera": {n: {k: round(v, 4) for k, v in e.items()} for n, e in errors.items()},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--views", type=int, default=200)
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=720)
    args = ap.parse_args()

    spec = BoardSpec()
    cameras = example_rig((args.width, args.height))
    truth = {n: c.truth() for n, c in cameras.items()}
    with tempfile.TemporaryDirectory(prefix="improvcap-calibrate-bench-") as tmp:
        # Render once to PNG folders (not timed), then calibrate from them as `--images` would.
        t0 = time.perf_counter()
        folders = {n: Path(tmp) / n for n in cameras}
        for name, camera in cameras.items():
            folders[name].mkdir()
            renderer = BoardRenderer(spec, camera, supersample=2)
            for i in range(args.views):
                cv2.imwrite(str(folders[name] / f"{i:05d}.png"), renderer.render(*key_pose(i, spec)))
        render_s = time.perf_counter() - t0

        t0 = time.perf_counter()
        detections = collect(views_from_images(folders), spec)
        detect_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    ours = solve(detections, spec)
    solve_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    anipose = solve(detections, spec, model="anipose")
    anipose_s = time.perf_counter() - t0
    covered = {n: coverage_grid(d) for n, d in detections.items()}

    result = {
        "command": " ".join(["bench/calibrate.py", *sys.argv[1:]]),
        "cameras": len(cameras),
        "views": args.views,
        "size": [args.width, args.height],
        "board": spec.describe(),
        "board_found": {n: len(d.detections) for n, d in detections.items()},
        "time_s": {
            "calibration_total": round(detect_s + solve_s, 2),
            "png_decode_and_detection": round(detect_s, 2),
            "solve": round(solve_s, 2),
            "rendering_not_counted": round(render_s, 2),
            "solve_aniposelib_model": round(anipose_s, 2),
        },
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "ours_full_model": summary(ours, truth, covered),
        "aniposelib_model": summary(anipose, truth, covered),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

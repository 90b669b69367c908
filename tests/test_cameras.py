"""Cameras: the FFmpeg driver (lavfi graphs and video files), OpenCV on files, the demo twin, and the
Matroska writer end to end, including what survives a kill -9."""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import av
import numpy as np
import pytest

from improvcap.devices import Device, driver_class
from improvcap.devices.base import StreamEnded
from improvcap.devices.camera_demo import DemoCamera
from improvcap.devices.camera_ffmpeg import FfmpegCamera, list_cameras
from improvcap.devices.camera_opencv import OpenCVCamera
from improvcap.errors import DeviceError, TakeError
from improvcap.records import Record, Sample
from improvcap.registry import DRIVERS
from improvcap.rig import StreamSpec
from improvcap.writers.video import VideoWriter

from helpers import camera_spec, collect_frames

REPO = Path(__file__).resolve().parents[1]
LAVFI = "lavfi:testsrc2=size=320x240:rate=30"
TIMECODE = "01:02:03:04"


def opened(device: Device) -> Device:
    device.open()
    device.start()
    return device


def record(take: Path, spec: StreamSpec, device: Device, frames: int, timeout: float,
           ) -> tuple[VideoWriter, list[Sample]]:
    """Read from an open device into a VideoWriter as the recorder does: the writer is made from describe()
    while the device is open ("_" keys are not stored in take.json), and t_ns is the device time mapped by
    a constant offset onto the host clock, relative to the take's t0."""
    info = device.describe()
    json.dumps({k: v for k, v in info.items() if not k.startswith("_")})  # take.json must hold the rest
    writer = VideoWriter(take, spec, {**info, "timecode": TIMECODE})
    try:
        samples = collect_frames(device, frames, timeout)
    finally:
        device.close()
    t0, offset = samples[0].host_ns, samples[0].host_ns - samples[0].device_ns
    for i, s in enumerate(samples):
        t_ns = s.device_ns + offset - t0
        writer.write(Record(spec.name, i, t_ns, s.device_ns, s.host_ns - t0, s.payload, seq=s.seq))
    writer.close()
    return writer, samples


def ffprobe(path: Path, *entries: str) -> dict:
    out = subprocess.run(["ffprobe", "-v", "error", "-count_packets", "-show_entries", ":".join(entries),
                          "-of", "json", str(path)], capture_output=True, text=True, check=True).stdout
    return json.loads(out)


def packet_pts(path: Path) -> list[int]:
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "packet=pts",
                          "-of", "csv=p=0", str(path)], capture_output=True, text=True, check=True).stdout
    return [int(line.split(",")[0]) for line in out.split()]


def frames_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def check_take(writer: VideoWriter, frames: int, codec: str) -> list[dict[str, str]]:
    """The mkv holds exactly the frames.csv rows, on strictly increasing pts, with timecode and title."""
    assert writer.files == [writer.mkv, writer.csv.path]
    probe = ffprobe(writer.mkv, "stream=nb_read_packets,codec_name,width,height", "stream_tags=timecode",
                    "format_tags=title")
    (stream,) = probe["streams"]
    assert stream["codec_name"] == codec
    rows = frames_csv(writer.csv.path)
    assert len(rows) == frames == int(stream["nb_read_packets"])
    pts = packet_pts(writer.mkv)
    assert pts == [int(r["pts"]) for r in rows]
    assert all(b > a for a, b in zip(pts, pts[1:]))
    # Matroska stores the tag as TIMECODE; ffprobe matches tag names regardless of case
    assert {k.lower(): v for k, v in stream["tags"].items()}["timecode"] == TIMECODE
    assert probe["format"]["tags"]["title"] == writer.spec.name
    assert [int(r["index"]) for r in rows] == list(range(frames))
    assert all(int(r["pts"]) == int(r["t_ns"]) // 1_000_000 for r in rows)  # the shared clock, in ms
    return rows


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """60-frame 320x240 30 fps clips made with the ffmpeg CLI: MJPEG in Matroska, H.264 (with B-frames) in MP4."""
    d = tmp_path_factory.mktemp("clips")
    made = {"mjpeg": d / "mjpeg.mkv", "h264": d / "h264.mp4"}
    for codec, path in made.items():
        extra = ["-q:v", "5"] if codec == "mjpeg" else ["-pix_fmt", "yuv420p", "-bf", "2"]
        subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30",
                        "-frames:v", "60", "-c:v", "libx264" if codec == "h264" else "mjpeg", *extra, str(path)],
                       check=True)
    return made


# --- the protocol ------------------------------------------------------------------------------------

def test_camera_drivers_implement_the_device_protocol():
    for (kind, driver), _ in DRIVERS.items():
        if kind == "camera":
            cls = driver_class(kind, driver)
            assert isinstance(cls(camera_spec(driver, source=LAVFI)), Device)


# --- FFmpeg driver -----------------------------------------------------------------------------------

def test_ffmpeg_lavfi_frames_arrive_at_30_fps_with_rising_pts():
    cam = opened(FfmpegCamera(camera_spec("ffmpeg", source=LAVFI)))
    try:
        got = collect_frames(cam, 31, timeout=3)
    finally:
        cam.close()
    assert len(got) == 31
    assert all(isinstance(s.payload, av.VideoFrame) and s.payload.format.name == "yuv420p" for s in got)
    assert [s.device_ns for s in got] == [round(i * 1e9 / 30 - 0.5) for i in range(31)]  # stream time, 1/30 s
    span = (got[-1].host_ns - got[0].host_ns) / 1e9
    assert 0.9 < span < 1.2, f"lavfi frames not paced like a camera: 30 intervals in {span:.3f} s"
    info = cam.describe()
    assert (info["width"], info["height"], info["pix_fmt"], info["copy"]) == (320, 240, "yuv420p", False)
    assert info["average_rate"] == 30.0 and info["input"] == "lavfi"


@pytest.mark.parametrize("clip", ["mjpeg", "h264"])
def test_ffmpeg_file_decodes_every_frame_then_ends(clips: dict[str, Path], clip: str):
    cam = opened(FfmpegCamera(camera_spec("ffmpeg", source=str(clips[clip]), realtime=False)))
    got: list[Sample] = []
    try:
        with pytest.raises(StreamEnded, match="cam0: end of"):
            while True:
                s = cam.read(1.0)
                assert s is not None
                got.append(s)
    finally:
        cam.close()
    assert len(got) == 60
    device = [s.device_ns for s in got]
    assert device[0] == 0 and all(b > a for a, b in zip(device, device[1:]))  # presentation order
    assert abs(device[-1] - 59e9 / 30) < 2e6
    assert all(isinstance(s.payload, av.VideoFrame) for s in got)


def test_ffmpeg_file_is_paced_in_real_time(clips: dict[str, Path]):
    cam = opened(FfmpegCamera(camera_spec("ffmpeg", source=str(clips["mjpeg"]))))
    try:
        got = collect_frames(cam, 16, timeout=3)
    finally:
        cam.close()
    span = (got[-1].host_ns - got[0].host_ns) / 1e9
    assert 0.45 < span < 0.7, f"15 intervals of 1/30 s took {span:.3f} s"


def test_ffmpeg_file_loops_with_device_time_running_on(clips: dict[str, Path]):
    cam = opened(FfmpegCamera(camera_spec("ffmpeg", source=str(clips["mjpeg"]), realtime=False, loop=True,
                                          codec="copy")))
    try:
        got = collect_frames(cam, 40, timeout=5)
        time.sleep(0.2)  # the reader is now waiting with a frame in hand
        cam.stop()  # between takes: the device stays open and carries on where it was
        while (s := cam.read(0.1)) is not None:
            got.append(s)
        cam.start()
        got += collect_frames(cam, 150 - len(got), timeout=10)
    finally:
        cam.close()
    assert len(got) == 150 and cam.stats()["loops"] >= 2 and cam.stats()["overflows"] == 0
    steps = np.diff([s.device_ns for s in got]) / 1e6
    assert steps.min() > 32 and steps.max() < 35, "the restart must continue the timeline one frame on"


def test_ffmpeg_copy_keeps_mjpeg_packets_untouched(tmp_path: Path, clips: dict[str, Path]):
    spec = camera_spec("ffmpeg", source=str(clips["mjpeg"]), codec="copy", realtime=False)
    cam = opened(FfmpegCamera(spec))
    info = cam.describe()
    assert isinstance(info["_template"], av.video.stream.VideoStream) and info["codec"] == "mjpeg"
    writer, got = record(tmp_path, spec, cam, 100, timeout=5)
    assert len(got) == 60 and all(isinstance(s.payload, av.Packet) for s in got)
    with av.open(str(clips["mjpeg"])) as src:
        source = [bytes(p) for p in src.demux(video=0) if p.size]
    check_take(writer, 60, "mjpeg")
    with av.open(str(writer.mkv)) as out:
        written = [bytes(p) for p in out.demux(video=0) if p.size]
    assert written == source


def test_ffmpeg_copy_keeps_h264_with_b_frames_decodable(tmp_path: Path, clips: dict[str, Path]):
    spec = camera_spec("ffmpeg", source=str(clips["h264"]), codec="copy", realtime=False)
    writer, _ = record(tmp_path, spec, opened(FfmpegCamera(spec)), 100, timeout=5)
    probe = ffprobe(writer.mkv, "stream=nb_read_packets,codec_name")
    assert probe["streams"][0] == {"codec_name": "h264", "nb_read_packets": "60"}
    decoded = subprocess.run(["ffmpeg", "-v", "error", "-i", str(writer.mkv), "-f", "null", "-"],
                             capture_output=True, text=True)
    assert decoded.returncode == 0 and decoded.stderr == ""
    with av.open(str(writer.mkv)) as out:
        assert sum(1 for _ in out.decode(video=0)) == 60


def test_ffmpeg_copy_refuses_what_matroska_cannot_hold():
    cam = FfmpegCamera(camera_spec("ffmpeg", source=LAVFI, codec="copy"))
    with pytest.raises(DeviceError) as e:
        cam.open()
    assert "wrapped_avframe" in str(e.value) and "\n" not in str(e.value) and str(e.value).startswith("cam0: ")
    cam.close()


@pytest.mark.parametrize("source, reason", [
    ("/nonexistent/take.mkv", "No such file or directory"),
    ("/dev/video99", "No such file or directory"),
    ("lavfi:testsrc2=size=banana", "banana"),
    ("lavfi:no_such_filter", "no_such_filter"),
    ("rtsp://127.0.0.1:9/stream", "Connection refused"),
])
def test_ffmpeg_unopenable_sources_fail_in_one_line(source: str, reason: str):
    cam = FfmpegCamera(camera_spec("ffmpeg", source=source))
    started = time.monotonic()
    with pytest.raises(DeviceError) as e:
        cam.open()
    cam.close()
    message = str(e.value)
    assert message.startswith(f"cam0: cannot open {source}: ") and reason in message and "\n" not in message
    assert time.monotonic() - started < 3


def test_ffmpeg_writer_end_to_end(tmp_path: Path):
    spec = camera_spec("ffmpeg", source=LAVFI)
    writer, got = record(tmp_path, spec, opened(FfmpegCamera(spec)), 45, timeout=4)
    rows = check_take(writer, 45, "h264")
    assert [int(r["device_ns"]) for r in rows] == [s.device_ns for s in got]


def test_list_cameras_reads_sysfs(tmp_path: Path):
    sysfs = tmp_path / "sys" / "class" / "video4linux"
    usb = tmp_path / "sys" / "devices" / "usb1" / "1-1"
    interface = usb / "1-1:1.0"
    interface.mkdir(parents=True)
    (usb / "idVendor").write_text("046d\n")
    (usb / "idProduct").write_text("085e\n")
    for n, index in ((0, 0), (1, 1)):
        node = sysfs / f"video{n}"
        node.mkdir(parents=True)
        (node / "name").write_text("Logitech BRIO\n")
        (node / "index").write_text(f"{index}\n")
        (node / "device").symlink_to(interface)
    (sysfs / "video10").mkdir()
    (sysfs / "video10" / "name").write_text("platform camera\n")
    found = list_cameras(sysfs, Path("/dev"))
    assert found == [
        {"path": "/dev/video0", "name": "Logitech BRIO", "driver": "ffmpeg", "index": 0, "usb_id": "046d:085e"},
        {"path": "/dev/video1", "name": "Logitech BRIO", "driver": "ffmpeg", "index": 1, "usb_id": "046d:085e"},
        {"path": "/dev/video10", "name": "platform camera", "driver": "ffmpeg"},
    ]
    assert list_cameras(tmp_path / "absent") == []


# --- OpenCV driver -----------------------------------------------------------------------------------

def test_opencv_reads_a_file_by_position(tmp_path: Path, clips: dict[str, Path]):
    spec = camera_spec("opencv", source=str(clips["h264"]))
    cam = opened(OpenCVCamera(spec))
    writer, got = record(tmp_path, spec, cam, 100, timeout=5)
    assert len(got) == 60
    frame = got[0].payload
    assert isinstance(frame, av.VideoFrame) and frame.format.name == "bgr24" and (frame.width, frame.height) == (320, 240)
    assert [s.device_ns for s in got[:3]] == [0, 33_333_333, 66_666_667]
    span = (got[-1].host_ns - got[0].host_ns) / 1e9
    assert 1.85 < span < 2.3, f"59 intervals of a real-time file took {span:.3f} s"
    info = cam.describe()
    assert (info["width"], info["height"], info["device_time"]) == (320, 240, "position")
    check_take(writer, 60, "h264")


@pytest.mark.parametrize("source, reason", [
    ("/nonexistent/take.mp4", "No such file or directory"),
    (99, "No such file or directory"),
    (__file__, "OpenCV cannot read it"),
])
def test_opencv_unopenable_sources_fail_in_one_line(source: object, reason: str):
    cam = OpenCVCamera(camera_spec("opencv", source=source))
    with pytest.raises(DeviceError) as e:
        cam.open()
    cam.close()
    assert str(e.value).startswith("cam0: cannot open ") and reason in str(e.value) and "\n" not in str(e.value)


def test_opencv_and_demo_refuse_copy():
    for cls, driver in ((OpenCVCamera, "opencv"), (DemoCamera, "demo")):
        with pytest.raises(DeviceError, match="copy"):
            cls(camera_spec(driver, source=LAVFI, codec="copy")).open()


# --- demo camera -------------------------------------------------------------------------------------

def luma(frame: av.VideoFrame) -> float:
    return float(frame.to_ndarray()[: frame.height].mean())


def test_demo_camera_rate_sequence_and_clock(tmp_path: Path):
    spec = camera_spec("demo", width=640, height=360, drift_ppm=500, offset_ms=12)
    cam = opened(DemoCamera(spec))
    writer, got = record(tmp_path, spec, cam, 46, timeout=4)
    assert [s.seq for s in got] == list(range(46))
    # paced at 30 fps: the median arrival interval (the first frame may wait for the thread to start)
    interval = np.median(np.diff([s.host_ns for s in got])) / 1e6
    assert 32.0 < interval < 34.7, interval
    true = np.array([s.true_ns for s in got])
    assert np.allclose(np.diff(true), 1e9 / 30 / (1 + 500e-6), atol=2)  # the camera's clock ticks the frames
    device = np.array([s.device_ns for s in got])
    assert np.allclose(device - true - 12e6, (true - cam.timing.origin_ns) * 500e-6, atol=2)
    assert all(s.host_ns >= s.true_ns for s in got)
    frame = got[0].payload
    assert frame.format.name == "yuv420p" and (frame.width, frame.height) == (640, 360)
    assert 60 < luma(frame) < 150
    rows = check_take(writer, 46, "h264")
    assert [r["seq"] for r in rows] == [str(i) for i in range(46)]


def test_demo_camera_kept_open_between_takes_runs_on():
    cam = opened(DemoCamera(camera_spec("demo", width=320, height=240)))
    try:
        first = collect_frames(cam, 5, timeout=30)
        cam.stop()
        time.sleep(0.3)  # stopped for a while
        cam.start()
        second = collect_frames(cam, 5, timeout=30)
    finally:
        cam.close()
    # the counter and clock ran on while nobody read: the frames never exposed to a reader are counted,
    # one per frame period of the camera's clock (no drift here: exactly the host's)
    gap = second[0].seq - first[-1].seq
    assert gap == round((second[0].true_ns - first[-1].true_ns) * 30 / 1e9) and gap >= 9
    assert second[0].true_ns - first[-1].true_ns == pytest.approx(gap * 1e9 / 30, abs=2)
    assert second[0].host_ns >= second[0].true_ns


def test_demo_camera_drops_skip_frames_but_not_the_counter():
    cam = opened(DemoCamera(camera_spec("demo", width=320, height=240, fps=60, drop_rate=0.25)))
    try:
        got = collect_frames(cam, 60, timeout=4)
    finally:
        cam.close()
    seqs = [s.seq for s in got]
    assert all(b > a for a, b in zip(seqs, seqs[1:]))
    lost = seqs[-1] + 1 - len(seqs)
    assert lost > 5 and cam.stats()["dropped"] >= lost


def test_demo_camera_slate_flashes_three_frames():
    cam = opened(DemoCamera(camera_spec("demo", width=320, height=240, jitter_ms=3, transport_ms=5)))
    try:
        at = time.monotonic_ns() + 400_000_000
        cam.slate(at)
        got = collect_frames(cam, 30, timeout=3)
    finally:
        cam.close()
    lumas = [luma(s.payload) for s in got]
    flashed = [s.true_ns for s, y in zip(got, lumas) if y > 200]
    first = min(s.true_ns for s in got if s.true_ns >= at)
    assert len(flashed) == 3 and flashed[0] == first
    assert max(y for y in lumas if y <= 200) < 150


# --- writer ------------------------------------------------------------------------------------------

def test_writer_bumps_frames_that_share_a_millisecond(tmp_path: Path):
    spec = camera_spec("demo", width=320, height=240)
    cam = DemoCamera(spec)
    cam.open()
    writer = VideoWriter(tmp_path, spec, {**cam.describe(), "timecode": TIMECODE})
    for i, t_ns in enumerate((0, 400_000, 900_000, 33_000_000)):
        writer.write(Record("cam0", i, t_ns, t_ns, t_ns, cam._render(i, t_ns, False)))
    writer.close()
    assert packet_pts(writer.mkv) == [0, 1, 2, 33]
    assert [r["pts"] for r in frames_csv(writer.csv.path)] == ["0", "1", "2", "33"]


def test_writer_never_overwrites(tmp_path: Path):
    spec = camera_spec("demo", width=320, height=240)
    (tmp_path / "cam0.mkv").write_bytes(b"precious")
    with pytest.raises(TakeError, match="cam0.mkv"):
        VideoWriter(tmp_path, spec, {"width": 320, "height": 240, "fps": 30.0})
    assert (tmp_path / "cam0.mkv").read_bytes() == b"precious"


def test_writer_copy_needs_a_template(tmp_path: Path):
    with pytest.raises(Exception, match="copy"):
        VideoWriter(tmp_path, camera_spec("ffmpeg", source=LAVFI, codec="copy"), {"width": 320, "height": 240})


CRASH_SCRIPT = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from improvcap.devices.camera_ffmpeg import FfmpegCamera
    from improvcap.records import Record
    from improvcap.rig import parse_rig
    from improvcap.writers.video import VideoWriter

    rig = parse_rig('[rig]\\nname = "t"\\n[[camera]]\\nname = "cam0"\\ndriver = "ffmpeg"\\n'
                    'source = "lavfi:testsrc2=size=320x240:rate=30"\\n', Path("t.toml"))
    spec = rig.streams[0]
    cam = FfmpegCamera(spec)
    cam.open()
    cam.start()
    writer = VideoWriter(Path(sys.argv[1]), spec, {**cam.describe(), "timecode": "01:02:03:04"})
    t0, flushed, index = time.monotonic_ns(), time.monotonic(), 0
    while True:
        s = cam.read(0.2)
        if s is None:
            continue
        writer.write(Record("cam0", index, s.host_ns - t0, s.device_ns, s.host_ns - t0, s.payload))
        if index == 0:
            print("recording", flush=True)
        index += 1
        if time.monotonic() - flushed >= 0.5:  # the recorder flushes at least once a second
            writer.flush()
            flushed = time.monotonic()
            print("flushed", index, flush=True)
""")


def test_kill_9_leaves_all_but_the_last_second(tmp_path: Path):
    script = tmp_path / "record.py"
    script.write_text(CRASH_SCRIPT)
    take = tmp_path / "take"
    take.mkdir()
    proc = subprocess.Popen([sys.executable, str(script), str(take)], stdout=subprocess.PIPE, text=True,
                            cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    flushed = 0
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "recording"
        while flushed < 90:  # three seconds of frames flushed, as the writer reports them
            line = proc.stdout.readline()
            assert line, "the recording script ended"
            flushed = int(line.split()[1])
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    # the frames flushed before the kill are readable but the last second (the cluster Matroska holds)
    probe = ffprobe(take / "cam0.mkv", "stream=nb_read_packets,codec_name")
    packets = int(probe["streams"][0]["nb_read_packets"])
    assert flushed - 31 <= packets <= flushed + 31, f"{packets} frames readable, {flushed} flushed"
    with open(take / "cam0.frames.csv", newline="") as f:
        rows = [r for r in csv.reader(f)]
    assert rows[0] == ["index", "t_ns", "device_ns", "host_ns", "seq", "pts"]
    complete = [r for r in rows[1:] if len(r) == 6]
    assert len(complete) >= flushed
    assert [int(r[0]) for r in complete] == list(range(len(complete)))
    with av.open(str(take / "cam0.mkv")) as c:
        assert sum(1 for _ in c.decode(video=0)) >= packets - 1

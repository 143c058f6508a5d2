"""VideoSource on real encoded videos: exact frame counts, frame-exact seeks, folders, S3, damaged input.

Every video is encoded here with PyAV; each frame carries its index as a block pattern (encoded_videos.py),
so a decoded frame is identified exactly despite compression.
"""

import gc
import pickle
import random
import shutil
import threading
import time
from dataclasses import replace

import numpy as np
import pytest

from tests.encoded_videos import (frame_index, indexed_frames, truncate_file, write_frame_folder,
                                  write_variable_rate_video, write_video, write_video_without_frames)
from workers.video_source import FrameIterator, VideoError, VideoSource, _pack, probe_video

LONG = 150  # frames of the longer h264 clip
SHORT = 40
# name -> (file name, codec, frames): B-frames (x264 bframes=2, mpeg4 max_b_frames=2), GOP 12
FORMATS = {
    "h264-mp4": ("long.mp4", "libx264", LONG),
    "vp9-webm": ("clip.webm", "libvpx-vp9", SHORT),
    "h264-mkv": ("clip.mkv", "libx264", SHORT),
    "h264-mov": ("clip.mov", "libx264", SHORT),
    "mpeg4-mp4": ("mpeg4.mp4", "mpeg4", SHORT),
    "h264-mp4-faststart": ("faststart.mp4", "libx264", SHORT),
}


@pytest.fixture(scope="module")
def source_frames():
    return indexed_frames(LONG)


@pytest.fixture(scope="module")
def videos(tmp_path_factory, source_frames):
    root = tmp_path_factory.mktemp("videos")
    paths = {}
    for name, (file, codec, n) in FORMATS.items():
        paths[name] = str(write_video(root / file, source_frames[:n], codec, faststart="faststart" in name))
    return paths


def read(info, start, stop, **kw):
    with VideoSource(info, **kw) as source:
        return list(source.frames(start, stop))


def assert_exact(frames, start, source_frames):
    """Decoded frames are exactly start, start+1, ... and look like their sources (RGB order, size)."""
    assert [frame_index(f) for f in frames] == list(range(start, start + len(frames)))
    for k, f in enumerate(frames, start):
        assert f.dtype == np.uint8 and f.shape == source_frames[k].shape
        assert np.abs(f.astype(np.int16) - source_frames[k]).mean() < 8, f"frame {k} differs from its source"


# ---- containers --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", FORMATS)
def test_probe_counts_exactly(videos, name):
    info = probe_video(videos[name])
    assert (info.num_frames, info.width, info.height, info.kind) == (FORMATS[name][2], 128, 96, "video")
    assert info.fps == pytest.approx(24.0)
    assert len(info.pts()) == info.num_frames and np.all(np.diff(info.pts()) > 0)
    assert info.keyframes()[0] == 0 and len(info.keyframes()) >= info.num_frames // 12


@pytest.mark.parametrize("name", FORMATS)
def test_ranges_are_frame_exact(videos, name, source_frames):
    info = probe_video(videos[name])
    n = info.num_frames
    full = read(info, 0, n)
    assert_exact(full, 0, source_frames)
    rng = random.Random(name)
    ranges = [(13, 20), (23, 25), (12, 13), (n - 5, n), (n - 1, n), (7, 7)]  # mid-GOP, keyframe, the end
    ranges += [tuple(sorted(rng.sample(range(n + 1), 2))) for _ in range(8)]
    with VideoSource(info) as source:
        for start, stop in ranges:
            got = list(source.frames(start, stop))
            assert [frame_index(f) for f in got] == list(range(start, stop)), (start, stop)
            assert all(np.array_equal(g, full[k]) for k, g in enumerate(got, start)), (start, stop)


@pytest.mark.parametrize("name", ["h264-mp4", "vp9-webm"])
@pytest.mark.parametrize("chunk", [7, 64])
def test_chunked_reads_equal_one_full_read(videos, name, chunk):
    info = probe_video(videos[name])
    n = info.num_frames
    full = np.stack(read(info, 0, n))
    with VideoSource(info, prefetch=3) as source:
        chunks = [f for s in range(0, n, chunk) for f in source.frames(s, min(s + chunk, n))]
    assert np.array_equal(np.stack(chunks), full)


@pytest.mark.parametrize("name", ["h264-mp4", "vp9-webm"])
def test_decoder_thread_count_does_not_change_the_pixels(videos, name):
    info = probe_video(videos[name])
    n = info.num_frames
    assert np.array_equal(np.stack(read(info, 0, n, threads=1)), np.stack(read(info, 0, n)))
    with pytest.raises(ValueError, match="-1"):
        VideoSource(info, threads=-1)


def test_seek_that_lands_late_backs_off(videos, source_frames):
    """mpeg4 in mp4 seeks by dts: claiming every frame is a keyframe makes seeks to the B-frames just before a
    real keyframe land after them; the reader must notice (by pts) and back off to an earlier keyframe."""
    info = probe_video(videos["mpeg4-mp4"])
    lying = replace(info, packed_keyframes=_pack(np.arange(info.num_frames)))
    with VideoSource(lying) as source:
        for start in range(info.num_frames):
            assert frame_index(next(source.frames(start, start + 1))) == start


@pytest.mark.parametrize("file,codec,seekable,has_pts", [
    ("clip.ts", "libx264", False, True),  # MPEG-TS: seeks by binary search over timestamps miss
    ("clip.mpg", "mpeg2video", False, True),  # MPEG-PS: the same
    ("clip.h264", "libx264", False, False),  # a raw stream: no timestamps, counted by decoding
    ("clip.avi", "mpeg4", True, True),
])
def test_containers_with_unreliable_seeks_or_no_timestamps(tmp_path, source_frames, file, codec, seekable,
                                                           has_pts):
    info = probe_video(str(write_video(tmp_path / file, source_frames[:SHORT], codec)))
    assert (info.num_frames, info.seekable, bool(info.packed_pts)) == (SHORT, seekable, has_pts)
    with VideoSource(info) as source:
        for start, stop in [(0, SHORT), (13, 17), (25, 26), (SHORT - 3, SHORT)]:
            assert_exact(list(source.frames(start, stop)), start, source_frames)


@pytest.mark.parametrize("file", ["audio.mp4", "audio.mkv"])
def test_video_after_a_longer_audio_track(tmp_path, source_frames, file):
    info = probe_video(str(write_video(tmp_path / file, source_frames[:SHORT], audio=True)))
    assert (info.num_frames, info.stream_index) == (SHORT, 1)  # the audio's length is not the video's
    assert_exact(read(info, 30, SHORT), 30, source_frames)


def test_info_is_small_and_picklable(videos):
    info = probe_video(videos["h264-mp4"])
    assert pickle.loads(pickle.dumps(info)) == info
    assert len(pickle.dumps(info)) < 1500
    # an hour at 24 fps in Matroska's millisecond timestamps (steps of 41 and 42 ms) stays in the kilobytes
    hour = np.round(np.arange(24 * 3600) * 1000 / 24).astype(np.int64)
    big = replace(info, num_frames=len(hour), packed_pts=_pack(np.diff(hour, prepend=0)),
                  packed_keyframes=_pack(np.arange(0, len(hour), 12)))
    assert len(pickle.dumps(big)) < 20_000 and np.array_equal(big.pts(), hour)


def test_frame_times_follow_the_timestamps_of_variable_rate_video(tmp_path, source_frames):
    gaps = np.resize([40, 40, 33, 100, 40, 250, 20, 40, 67, 40], SHORT - 1)  # irregular, in ms
    gaps[9] = 1000  # and a pause, as a phone recording in low light may hold
    pts_ms = np.concatenate([[0], np.cumsum(gaps)])
    info = probe_video(write_variable_rate_video(tmp_path / "vfr.mp4", source_frames[:SHORT], pts_ms))
    assert info.num_frames == SHORT and info.time_base is not None
    times = info.frame_times(0, SHORT)
    assert times.dtype == np.float64 and times.shape == (SHORT,)
    np.testing.assert_allclose(times, info.pts() * float(info.time_base), rtol=0, atol=1e-12)
    np.testing.assert_allclose(times, pts_ms / 1000, rtol=0, atol=1e-9)
    assert np.abs(times - np.arange(SHORT) / info.fps).max() > 0.3  # what frame / fps would have said
    assert_exact(read(info, 15, 20), 15, source_frames)  # a read after a seek: frames 15..19 ...
    np.testing.assert_allclose(info.frame_times(15, 20), pts_ms[15:20] / 1000, rtol=0, atol=1e-9)  # ... at their times
    assert info.frame_times(7, 7).shape == (0,)
    with pytest.raises(ValueError, match=rf"\[35, {SHORT + 1}\)"):
        info.frame_times(35, SHORT + 1)


def test_frame_times_of_a_folder_count_frames_at_its_rate(tmp_path, source_frames):
    info = probe_video(str(write_frame_folder(tmp_path / "png", source_frames[:10], "png")), fps=12)
    np.testing.assert_array_equal(info.frame_times(3, 8), np.arange(3, 8) / 12.0)
    np.testing.assert_array_equal(info.frame_times(0, 10), np.arange(10) / 12.0)


# ---- frame folders -----------------------------------------------------------------------------------------
def test_png_folder_in_natural_order(tmp_path, source_frames):
    frames = source_frames[:25]
    folder = write_frame_folder(tmp_path / "png", frames, "png", name="frame_{}")  # frame_2 before frame_10
    (folder / "notes.txt").write_text("not a frame")
    (folder / ".frame_99.png").write_bytes(b"hidden junk")
    info = probe_video(str(folder))
    assert (info.num_frames, info.width, info.height, info.kind, info.fps) == (25, 128, 96, "frames", 30.0)
    assert info.frame_files()[:3] == ["frame_0.png", "frame_1.png", "frame_2.png"]
    assert np.array_equal(np.stack(read(info, 0, 25)), frames)  # PNG is lossless
    assert np.array_equal(np.stack(read(info, 9, 12)), frames[9:12])
    assert probe_video(f"file://{folder}", fps=12).fps == 12.0


def test_jpeg_folder(tmp_path, source_frames):
    folder = write_frame_folder(tmp_path / "jpg", source_frames[:15], "jpg", name="{}")  # 0.jpg .. 14.jpg
    info = probe_video(str(folder) + "/")
    assert info.num_frames == 15
    assert_exact(read(info, 0, 15), 0, source_frames)
    assert_exact(read(info, 10, 15), 10, source_frames)


def test_folder_frame_of_another_size_fails_at_that_frame(tmp_path, source_frames):
    folder = write_frame_folder(tmp_path / "mixed", source_frames[:6], "png")
    write_frame_folder(tmp_path / "small", indexed_frames(1, 64, 64), "png", name="frame_4")
    shutil.copy(tmp_path / "small" / "frame_4.png", folder / "frame_4.png")
    info = probe_video(str(folder))
    got = []
    with VideoSource(info) as source, pytest.raises(VideoError) as e:
        for frame in source.frames(0, 6):
            got.append(frame)
    assert len(got) == 4 and e.value.frame == 4 and "frame_4.png" in str(e.value) and "64x64" in str(e.value)


# ---- S3 (moto's server on loopback) ---------------------------------------------------------------------------
def test_s3_video_and_folder(s3_server, videos, tmp_path, source_frames):
    import s3fs

    fs = s3fs.S3FileSystem()
    fs.mkdir("video-bucket")
    fs.put_file(videos["h264-mp4"], "video-bucket/v/long.mp4")
    folder = write_frame_folder(tmp_path / "png", source_frames[:12], "png")
    for p in sorted(folder.iterdir()):
        fs.put_file(str(p), f"video-bucket/frames/{p.name}")

    info = probe_video("s3://video-bucket/v/long.mp4")
    local = probe_video(videos["h264-mp4"])
    assert (info.num_frames, info.packed_pts, info.packed_keyframes) == (LONG, local.packed_pts,
                                                                         local.packed_keyframes)
    for start, stop in [(0, 10), (37, 45), (LONG - 3, LONG)]:
        assert all(np.array_equal(a, b) for a, b in zip(read(info, start, stop), read(local, start, stop)))
    frames_info = probe_video("s3://video-bucket/frames")
    assert frames_info.num_frames == 12
    assert np.array_equal(np.stack(read(frames_info, 0, 12)), source_frames[:12])

    secret = {"key": "AKIAEXAMPLEKEY", "secret": "do-not-print-me-123"}
    with pytest.raises(VideoError, match="not found") as e:
        probe_video("s3://video-bucket/v/missing.mp4", secret)
    assert e.value.url == "s3://video-bucket/v/missing.mp4"
    assert "AKIAEXAMPLEKEY" not in str(e.value) and "do-not-print-me" not in str(e.value)


# ---- damaged and invalid input -------------------------------------------------------------------------------
@pytest.mark.parametrize("file,codec,faststart,at_probe", [
    ("cut.mp4", "libx264", False, "not a readable video"),  # the index (moov) at the end is lost
    ("cut_faststart.mp4", "libx264", True, "truncated"),  # index intact: a packet is cut short
    ("cut.mkv", "libx264", False, "truncated"),  # declared duration longer than the readable stream
    ("cut.webm", "libvpx-vp9", False, "truncated"),
])
def test_truncated_file_fails_at_probe(tmp_path, source_frames, file, codec, faststart, at_probe):
    path = truncate_file(write_video(tmp_path / file, source_frames[:SHORT], codec, faststart=faststart), 0.6)
    with pytest.raises(VideoError, match=at_probe) as e:
        probe_video(str(path))
    assert str(path) in str(e.value) and e.value.url == str(path)
    if at_probe == "truncated":  # the frame where the readable part ends
        assert 10 <= e.value.frame < SHORT and f"at frame {e.value.frame}" in str(e.value)


def test_damage_inside_the_file_fails_at_read_with_the_frame(tmp_path, source_frames):
    path = write_video(tmp_path / "damaged.mp4", source_frames[:60], faststart=True)
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 3000] = np.random.default_rng(1).integers(0, 256, 3000, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    info = probe_video(str(path))  # demuxing does not decode: the damage shows when frames are decoded
    got = []
    with VideoSource(info) as source, pytest.raises(VideoError, match="decoding failed") as e:
        for frame in source.frames(0, 60):
            got.append(frame)
    assert 15 <= e.value.frame <= 45 and len(got) == e.value.frame and str(path) in str(e.value)
    assert_exact(got, 0, source_frames)  # everything before the damage is right
    assert_exact(read(info, 0, 10), 0, source_frames)


def test_not_a_video_missing_and_empty(tmp_path):
    text = tmp_path / "notes.mp4"
    text.write_text("this is a text file, not a video\n" * 20)
    cases = {
        str(text): "not a readable video",
        str(tmp_path / "missing.mp4"): "not found",
        f"file://{tmp_path}/missing.mkv": "not found",
        str(write_video_without_frames(tmp_path / "empty.mp4")): "no video stream",
        str(write_video_without_frames(tmp_path / "empty.mkv")): "before any video data",
    }
    (tmp_path / "empty_folder").mkdir()
    (tmp_path / "text_only").mkdir()
    (tmp_path / "text_only" / "a.txt").write_text("x")
    cases[str(tmp_path / "empty_folder")] = "no jpg/jpeg/png frames"
    cases[str(tmp_path / "text_only")] = "no jpg/jpeg/png frames"
    for url, message in cases.items():
        with pytest.raises(VideoError, match=message) as e:
            probe_video(url)
        assert e.value.url == url and url in str(e.value) and e.value.frame is None


def test_credentials_in_the_url_never_reach_the_message():
    with pytest.raises(VideoError) as e:
        probe_video("s3://AKIAUSER:hunter2secret@bucket/v.mp4?X-Amz-Signature=abcdef123")
    text = str(e.value) + e.value.url + e.value.cause
    assert "hunter2secret" not in text and "abcdef123" not in text and "AKIAUSER" not in text


def test_out_of_range_reads_raise_value_error(videos):
    info = probe_video(videos["h264-mkv"])
    with VideoSource(info) as source:
        for start, stop in [(-1, 5), (0, SHORT + 1), (5, 3), (SHORT, SHORT + 2)]:
            with pytest.raises(ValueError, match=rf"\[{start}, {stop}\)") as e:
                source.frames(start, stop)
            assert str(SHORT) in str(e.value)
        assert list(source.frames(SHORT, SHORT)) == []


def test_errors_are_picklable():
    error = pickle.loads(pickle.dumps(VideoError("s3://b/v.mp4", "decoding failed (x)", 17)))
    assert (error.url, error.frame, str(error)) == ("s3://b/v.mp4", 17, "video s3://b/v.mp4 at frame 17: "
                                                                           "decoding failed (x)")


# ---- the decoding thread --------------------------------------------------------------------------------------
def wait_dead(thread: threading.Thread, timeout: float = 5.0) -> bool:
    thread.join(timeout)
    return not thread.is_alive()


def test_early_close_stops_the_thread(videos):
    info = probe_video(videos["h264-mp4"])
    before = threading.active_count()
    source = VideoSource(info, prefetch=2)
    frames = source.frames(0, LONG)
    assert isinstance(frames, FrameIterator) and frames.thread.is_alive()
    assert [frame_index(next(frames)) for _ in range(3)] == [0, 1, 2]
    time.sleep(0.2)  # the thread fills the queue and waits: bounded read-ahead
    assert frames._queue.qsize() <= 2 and frames.thread.is_alive()
    frames.close()
    assert not frames.thread.is_alive() and frames.thread not in threading.enumerate()
    assert threading.active_count() <= before  # (<=: a thread of another test's server may end meanwhile)
    assert list(frames) == []  # a closed iterator is exhausted


def test_abandoned_iterators_and_closed_sources_stop_their_threads(videos):
    info = probe_video(videos["h264-mp4"])
    frames = VideoSource(info, prefetch=1).frames(0, LONG)  # never iterated, never closed
    thread = frames.thread
    del frames
    gc.collect()
    assert wait_dead(thread)

    with VideoSource(info, prefetch=1) as source:
        iterators = [source.frames(0, LONG), source.frames(50, LONG)]
        next(iterators[1])
    assert all(wait_dead(it.thread, 0) for it in iterators)
    with pytest.raises(ValueError, match="closed"):
        source.frames(0, 1)
    finished = iter(VideoSource(info).frames(0, 3))  # the source itself is dropped at once (as StreamWorker does)
    gc.collect()
    assert len(list(finished)) == 3 and wait_dead(finished.thread)

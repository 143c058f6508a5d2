"""Previews: overlay pixels, preview mp4 and contact sheet on a small generated video."""

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from workers.masklets import masklet_rows
from workers.preview import (PALETTE, contour, object_color, overlay, sheet_frame_indices,
                             write_contact_sheet, write_preview_video)
from workers.video_source import VideoSource, probe_video
from workers.video_writer import write_mp4

H, W, T, SIDE = 64, 96, 12, 28


def _square(t: int, h: int = H, w: int = W) -> np.ndarray:
    mask = np.zeros((h, w), bool)
    x = 5 + 3 * t
    mask[20:20 + SIDE, x:x + SIDE] = True
    return mask


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """A grey video with a moving square, and masklet rows (object 3) that follow the square."""
    root = tmp_path_factory.mktemp("preview")
    frames = np.full((T, H, W, 3), 128, np.uint8)
    for t in range(T):
        frames[t][_square(t)] = (200, 200, 200)
    url = str(write_mp4(root / "clip.mp4", frames, fps=12))
    rows = pa.concat_tables(masklet_rows("clip", t, t / 12, [3], _square(t)[None], [0.9], [0.95])
                            for t in range(T))
    return url, rows, root


def test_overlay_touches_mask_pixels_only():
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    masks = np.stack([_square(0), _square(4)])  # overlapping squares
    out = overlay(frame, masks, [1, 2], draw_ids=False)
    outside = ~masks.any(0)
    assert out.dtype == np.uint8 and out.shape == frame.shape
    np.testing.assert_array_equal(out[outside], frame[outside])
    assert (out[masks.any(0)] != frame[masks.any(0)]).any(-1).mean() > 0.95
    # Interior: a 50% blend with the object's colour.
    c1, c2 = (object_color(i).astype(np.float32) for i in (1, 2))
    inner = masks[1] & ~contour(masks[1]) & ~masks[0]
    np.testing.assert_allclose(out[inner], np.rint(0.5 * frame[inner] + 0.5 * c2), atol=1)
    # Where they overlap, object 2 is blended over object 1's blend (later objects on top).
    both = masks[0] & masks[1] & ~contour(masks[0]) & ~contour(masks[1])
    assert both.sum() > 0
    np.testing.assert_allclose(out[both], 0.5 * (0.5 * frame[both] + 0.5 * c1) + 0.5 * c2, atol=1.5)
    assert (frame.copy() == frame).all()  # the input is not modified


def test_contour_is_on_the_boundary_in_full_colour():
    mask = _square(2)
    edge = contour(mask, thickness=2)
    assert edge.sum() > 0 and not (edge & ~mask).any()
    ys, xs = np.nonzero(edge)
    top, left, bottom, right = 20, 11, 20 + SIDE - 1, 11 + SIDE - 1
    dist = np.minimum.reduce([ys - top, bottom - ys, xs - left, right - xs])
    assert dist.max() <= 1  # 2 px thick: distance 0 or 1 from the square's side
    assert edge.sum() == mask.sum() - (SIDE - 4) ** 2
    out = overlay(np.zeros((H, W, 3), np.uint8), mask[None], [5], draw_ids=False)
    assert (out[edge] == object_color(5)).all()


def test_colours_are_stable_per_object_id():
    assert (object_color(7) == object_color(7)).all()
    assert (object_color(7) == PALETTE[7]).all()
    assert len({tuple(object_color(i)) for i in range(10)}) == 10
    frame = np.zeros((H, W, 3), np.uint8)
    a = overlay(frame, _square(0)[None], [4], draw_ids=False)
    b = overlay(frame, np.stack([_square(9), _square(0)]), [1, 4], draw_ids=False)
    np.testing.assert_array_equal(a[_square(0) & ~_square(9)], b[_square(0) & ~_square(9)])


def test_id_label_drawn_near_centroid():
    frame = np.zeros((H, W, 3), np.uint8)
    mask = _square(4)
    plain = overlay(frame, mask[None], [7], draw_ids=False)
    labelled = overlay(frame, mask[None], [7])
    ys, xs = np.nonzero((plain != labelled).any(-1))
    assert len(ys) > 0
    assert abs(ys.mean() - (20 + SIDE / 2)) < 4 and abs(xs.mean() - (17 + SIDE / 2)) < 4


def test_empty_masks_leave_the_frame_alone():
    frame = np.full((H, W, 3), 9, np.uint8)
    np.testing.assert_array_equal(overlay(frame, np.zeros((1, H, W), bool), [1]), frame)
    np.testing.assert_array_equal(overlay(frame, np.zeros((0, H, W), bool), []), frame)


def _mean_inside(frames, t):
    inner = _square(t) & ~contour(_square(t), 3)  # away from the edges, where compression blurs colours
    ys, xs = np.nonzero(_square(t))
    cy, cx = int(ys.mean()), int(xs.mean())
    inner[cy - 7:cy + 8, cx - 6:cx + 7] = False  # and off the id label drawn at the centroid
    assert inner.sum() > 200
    return frames[t][inner].astype(np.float32).mean(0)


@pytest.mark.parametrize("as_pandas", [False, True])
def test_preview_video_shows_overlay(clip, tmp_path, as_pandas):
    url, rows, _ = clip
    masklets = rows.to_pandas() if as_pandas else rows
    out = write_preview_video(url, masklets, tmp_path / "sub" / "preview.mp4")
    info = probe_video(str(out))
    assert (info.num_frames, info.width, info.height) == (T, W, H)
    assert info.fps == pytest.approx(12)
    with VideoSource(info) as source:
        frames = np.stack(list(source.frames(0, T)))
    expected = 0.5 * 200 + 0.5 * object_color(3).astype(np.float32)
    for t in (0, T // 2, T - 1):
        np.testing.assert_allclose(_mean_inside(frames, t), expected, atol=8)
        np.testing.assert_allclose(frames[t][:10, :10].reshape(-1, 3).mean(0), 128, atol=4)  # background


def test_preview_video_max_frames_fps_and_odd_size(tmp_path):
    frames = np.full((6, 30, 40, 3), 100, np.uint8)  # write_mp4 needs even; crop to odd via a folder
    folder = tmp_path / "frames"
    folder.mkdir()
    for t, f in enumerate(frames):
        Image.fromarray(f[:29, :39]).save(folder / f"{t:03d}.png")
    mask = np.zeros((1, 29, 39), bool)
    mask[0, 5:20, 5:20] = True
    rows = pa.concat_tables(masklet_rows("odd", t, t / 10, [1], mask, [1.0], [1.0]) for t in range(6))
    out = write_preview_video(str(folder), rows, tmp_path / "odd.mp4", max_frames=4, fps=10)
    info = probe_video(str(out))
    assert (info.num_frames, info.width, info.height) == (4, 40, 30)
    assert info.fps == pytest.approx(10)


def test_contact_sheet_grid(clip, tmp_path):
    url, rows, _ = clip
    out = write_contact_sheet(url, rows, tmp_path / "sheet.png", columns=4, rows=2, thumb_width=48)
    sheet = np.asarray(Image.open(out).convert("RGB"))
    thumb_h = round(H * 48 / W)
    cell_h = thumb_h + 16
    assert sheet.shape == (2 * cell_h, 4 * 48, 3)
    indices = sheet_frame_indices(T, 8)
    assert indices[0] == 0 and indices[-1] == T - 1 and len(indices) == 8
    # Every cell holds a thumbnail (grey video, not the dark sheet background) with the overlay colour.
    color = object_color(3).astype(np.float32)
    for cell in range(8):
        y, x = (cell // 4) * cell_h, (cell % 4) * 48
        thumb = sheet[y:y + thumb_h, x:x + 48].astype(np.float32)
        assert thumb[:4, :4].mean() > 100
        assert (np.abs(thumb - (0.5 * 200 + 0.5 * color)).max(-1) < 20).sum() > 20
        caption = sheet[y + thumb_h:y + cell_h, x:x + 48]
        assert (caption > 150).any()  # the "frame k" text


def test_sheet_indices_short_video():
    assert sheet_frame_indices(3, 18) == [0, 1, 2]
    assert sheet_frame_indices(0, 18) == []

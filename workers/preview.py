"""Previews of masklets for people: masks drawn over the video frames.

- `overlay` blends each object's mask into a frame in a colour fixed by its object id, outlines it in the
  full colour and writes the id near the mask's centroid.
- `write_preview_video` re-encodes a video (or its first `max_frames`) with the overlays as H.264 mp4.
- `write_contact_sheet` is a PNG grid of evenly spaced frames with overlays, each captioned with its index.

Masklets are the rows of ONE video (MASKLET_SCHEMA columns; a pyarrow Table or a pandas DataFrame), e.g.
`read_masklets(out, video_id=...)`. Frames without rows are shown unchanged.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pyarrow as pa
from PIL import Image, ImageDraw, ImageFont

from workers.masklets import decode_rle
from workers.video_source import VideoSource, probe_video
from workers.video_writer import write_mp4

# tab10 followed by tab20's light shades: neighbouring ids get clearly different hues.
PALETTE = np.array([
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
    (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207), (174, 199, 232), (255, 187, 120),
    (152, 223, 138), (255, 152, 150), (197, 176, 213), (196, 156, 148), (247, 182, 210), (219, 219, 141),
    (158, 218, 229), (199, 199, 199),
], np.uint8)
ALPHA = 0.5
CAPTION_HEIGHT = 16  # px under each contact-sheet thumbnail, fits the default bitmap font


def object_color(object_id: int) -> np.ndarray:
    """(3,) uint8 RGB of an object: depends on its id only, so it is the same in every frame and video."""
    return PALETTE[int(object_id) % len(PALETTE)]


def contour(mask: np.ndarray, thickness: int = 2) -> np.ndarray:
    """The mask's pixels within `thickness` px (4-neighbour) of its outside: mask & ~eroded(mask)."""
    eroded = mask.copy()
    for _ in range(thickness):
        # Pad with False so a mask touching the frame edge is outlined along the edge too.
        p = np.pad(eroded, 1, constant_values=False)
        eroded = p[1:-1, 1:-1] & p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
    return mask & ~eroded


def overlay(frame: np.ndarray, masks: np.ndarray, object_ids, *, alpha: float = ALPHA,
            thickness: int = 2, draw_ids: bool = True) -> np.ndarray:
    """(H, W, 3) uint8 frame with each (O, H, W) bool mask blended in, outlined and labelled with its id.

    Objects are drawn in order, so where masks overlap the later object is on top. Empty masks are skipped.
    """
    out = frame.astype(np.float32)  # a copy: the caller's frame is never modified
    masks = np.asarray(masks, bool)
    ids = [int(i) for i in object_ids]
    for mask, oid in zip(masks, ids):
        color = object_color(oid).astype(np.float32)
        out[mask] = (1 - alpha) * out[mask] + alpha * color
        out[contour(mask, thickness)] = color
    out = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    return _draw_ids(out, masks, ids) if draw_ids else out


def _draw_ids(frame: np.ndarray, masks: np.ndarray, ids: list[int]) -> np.ndarray:
    img = Image.fromarray(frame)
    draw, font = ImageDraw.Draw(img), ImageFont.load_default()
    for mask, oid in zip(masks, ids):
        ys, xs = np.nonzero(mask)
        if not len(ys):
            continue
        # Centred by its bounding box rather than anchor="mm", which bitmap fonts (no FreeType) reject.
        left, top, right, bottom = draw.textbbox((0, 0), str(oid), font=font, stroke_width=1)
        xy = (xs.mean() - (left + right) / 2, ys.mean() - (top + bottom) / 2)
        # White with a black stroke reads on any mask colour and background.
        draw.text(xy, str(oid), fill=(255, 255, 255), font=font, stroke_width=1, stroke_fill=(0, 0, 0))
    return np.asarray(img)


# ---------------------------------------------------------------------------------------------- masklets


def _rows_by_frame(masklets) -> dict[int, list[tuple[int, str, int, int]]]:
    """frame_index -> [(object_id, mask_rle, height, width)] in object-id order (stable stacking order)."""
    table = masklets if isinstance(masklets, pa.Table) else pa.Table.from_pandas(masklets, preserve_index=False)
    cols = [table.column(c).to_pylist() for c in ("frame_index", "object_id", "mask_rle", "height", "width")]
    by_frame: dict[int, list] = {}
    for k, oid, rle, h, w in sorted(zip(*cols), key=lambda r: (r[0], r[1])):
        by_frame.setdefault(int(k), []).append((int(oid), rle, int(h), int(w)))
    return by_frame


def _frame_masks(rows, height: int, width: int) -> tuple[np.ndarray, list[int]]:
    """Decoded (O, height, width) masks of one frame's rows; masks of another size are resized (nearest)."""
    masks = []
    for _, rle, h, w in rows:
        m = decode_rle(rle, h, w)
        if (h, w) != (height, width):
            m = np.asarray(Image.fromarray(m).resize((width, height), Image.NEAREST))
        masks.append(m)
    return np.asarray(masks, bool).reshape(len(rows), height, width), [r[0] for r in rows]


def _overlaid(frame: np.ndarray, by_frame: dict, k: int) -> np.ndarray:
    rows = by_frame.get(k)
    if not rows:
        return frame
    masks, ids = _frame_masks(rows, *frame.shape[:2])
    return overlay(frame, masks, ids)


# ---------------------------------------------------------------------------------------------- video


class _FrameStream:
    """What write_mp4 reads (`.shape`, iteration) without holding the whole video in memory."""

    def __init__(self, frames, count: int, height: int, width: int):
        self._frames, self.shape = frames, (count, height, width, 3)

    def __iter__(self):
        return iter(self._frames)


def _even(frame: np.ndarray) -> np.ndarray:
    """Pad an odd height/width by one edge-replicated pixel: yuv420p H.264 needs even sizes."""
    h, w = frame.shape[:2]
    return np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge") if h % 2 or w % 2 else frame


def _rate(fps: float):
    """The encoder's frame rate as an exact fraction (29.97 -> 30000/1001), an int when whole."""
    rate = Fraction(float(fps)).limit_denominator(1001)
    return int(rate) if rate.denominator == 1 else rate


def write_preview_video(video_url: str, masklets, out_path, storage_options: dict | None = None,
                        max_frames: int | None = None, fps: float | None = None) -> Path:
    """Encode `video_url` with the masklets drawn on as H.264 mp4 at `out_path` (a local path).

    Frames are decoded, overlaid and encoded one at a time, so memory does not grow with the video's length.
    `fps` defaults to the video's own rate; `max_frames` keeps the first frames only.
    """
    info = probe_video(video_url, storage_options)
    count = info.num_frames if max_frames is None else min(int(max_frames), info.num_frames)
    if count < 1:
        raise ValueError(f"nothing to preview: {count} frames")
    by_frame = _rows_by_frame(masklets)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    height, width = info.height + info.height % 2, info.width + info.width % 2
    with VideoSource(info, storage_options) as source:
        frames = (_even(_overlaid(f, by_frame, k)) for k, f in enumerate(source.frames(0, count)))
        return write_mp4(out_path, _FrameStream(frames, count, height, width), fps=_rate(fps or info.fps))


# ---------------------------------------------------------------------------------------------- contact sheet


def sheet_frame_indices(num_frames: int, cells: int) -> list[int]:
    """Up to `cells` evenly spaced frame indices from the first frame to the last, no repeats."""
    n = min(num_frames, cells)
    return sorted(set(np.linspace(0, num_frames - 1, n).round().astype(int).tolist())) if n > 0 else []


def write_contact_sheet(video_url: str, masklets, out_png, columns: int = 6, rows: int = 3,
                        thumb_width: int = 240, storage_options: dict | None = None) -> Path:
    """A PNG of `columns` x `rows` thumbnails (evenly spaced frames, overlaid), each captioned "frame k".

    The sheet is always columns*thumb_width wide and rows*(thumb height + caption) high; cells beyond the
    video's frame count stay dark.
    """
    info = probe_video(video_url, storage_options)
    thumb_h = max(1, round(info.height * thumb_width / info.width))
    cell_h = thumb_h + CAPTION_HEIGHT
    sheet = Image.new("RGB", (columns * thumb_width, rows * cell_h), (24, 24, 24))
    draw, font = ImageDraw.Draw(sheet), ImageFont.load_default()
    by_frame = _rows_by_frame(masklets)
    with VideoSource(info, storage_options, prefetch=1) as source:
        for cell, k in enumerate(sheet_frame_indices(info.num_frames, columns * rows)):
            # One short read per thumbnail: the source seeks, so a long video is not decoded in full.
            with source.frames(k, k + 1) as it:
                frame = next(it)
            thumb = Image.fromarray(_overlaid(frame, by_frame, k)).resize((thumb_width, thumb_h), Image.BILINEAR)
            x, y = (cell % columns) * thumb_width, (cell // columns) * cell_h
            sheet.paste(thumb, (x, y))
            draw.text((x + 4, y + thumb_h + 2), f"frame {k}", fill=(230, 230, 230), font=font)
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out_png, format="PNG")
    return out_png

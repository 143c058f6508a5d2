"""workers.mask_runs: change bits on the masks' device + runs on the host give pycocotools' exact RLE, and the
actor's tables are the ones encode_masks would have made."""

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from workers.mask_runs import change_bits, change_bits_np, change_bits_torch, encode_change_bits
from workers.masklets import ChunkRows, EncodedMasks, MaskletValueError, decode_rle, encode_masks

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")


def edge_masks(h, w):
    """Empty, full, one pixel at each end of the column-major order and of the row-major one, a full first /
    last column and row, a checkerboard (a run per pixel), column stripes (runs that span columns)."""
    yy, xx = np.mgrid[0:h, 0:w]
    singles = [(0, 0), (h - 1, w - 1), (h - 1, 0), (0, w - 1), (h // 2, w // 2)]
    masks = [np.zeros((h, w), bool), np.ones((h, w), bool)]
    for y, x in singles:
        m = np.zeros((h, w), bool)
        m[y, x] = True
        masks += [m, ~m]
    masks += [xx == 0, xx == w - 1, yy == 0, yy == h - 1, (xx + yy) % 2 == 0, xx % 2 == 1, yy % 3 == 0]
    return np.stack(masks)


def blob_masks(rng, n, h, w):
    """Discs and rectangles of random sizes, some cut by the frame's border."""
    yy, xx = np.mgrid[0:h, 0:w]
    out = np.zeros((n, h, w), bool)
    for i in range(n):
        cy, cx, r = rng.uniform(-0.2, 1.2) * h, rng.uniform(-0.2, 1.2) * w, rng.uniform(0.5, 0.6 * max(h, w))
        out[i] = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r if i % 2 else (abs(yy - cy) < r) & (abs(xx - cx) < r / 2)
    return out


def assert_matches_pycocotools(masks):
    """Both change-bit producers agree, and the host encoding equals encode_masks and pycocotools mask by mask."""
    n, h, w = masks.shape
    bits = change_bits(torch.from_numpy(masks)).numpy()
    assert bits.shape == (n, h, -(-w // 8)) and bits.dtype == np.uint8
    np.testing.assert_array_equal(change_bits_torch(torch.from_numpy(masks)).numpy(), bits)
    got = encode_change_bits(bits, h, w)
    counts, boxes, areas = encode_masks(masks)
    assert got.counts == counts and (got.height, got.width) == (h, w)
    assert got.boxes.dtype == np.float32 and got.areas.dtype == np.int64
    np.testing.assert_array_equal(got.boxes, boxes)
    np.testing.assert_array_equal(got.areas, areas)
    for m, c, box in zip(masks, got.counts, got.boxes):  # against pycocotools itself, one mask at a time
        own = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
        assert c == own["counts"].decode("ascii")
        np.testing.assert_array_equal(box, mask_utils.toBbox(own).astype(np.float32))
        np.testing.assert_array_equal(decode_rle(c, h, w), m)
    np.testing.assert_array_equal(got.areas, masks.reshape(n, -1).sum(1))


@pytest.mark.parametrize("h, w", [(1, 1), (1, 9), (9, 1), (2, 2), (3, 8), (7, 5), (8, 16), (13, 17), (31, 33),
                                  (64, 48), (45, 71), (120, 161)])
def test_edge_case_masks_match_pycocotools(h, w):
    assert_matches_pycocotools(edge_masks(h, w))


def test_random_masks_match_pycocotools():
    """Noise of every density and blobs, over sizes with every width residue mod 8 (the row padding)."""
    rng = np.random.default_rng(0)
    for trial in range(120):
        h, w = int(rng.integers(1, 70)), int(rng.integers(1, 70))
        n = int(rng.integers(1, 6))
        noise = rng.random((n, h, w)) < rng.uniform(0, 1, (n, 1, 1))
        assert_matches_pycocotools(np.concatenate([noise, blob_masks(rng, n, h, w)]))


def test_full_size_frame_of_objects():
    """1080p, as the actor sees it, and odd native sizes."""
    rng = np.random.default_rng(1)
    for h, w in [(1080, 1920), (481, 853)]:
        assert_matches_pycocotools(blob_masks(rng, 6, h, w))


def test_many_objects():
    """300 objects in one frame (pycocotools' area() overflows at 256 per call; these are summed here)."""
    masks = np.random.default_rng(2).random((300, 9, 7)) > 0.5
    got = encode_change_bits(change_bits_np(masks), 9, 7)
    counts, boxes, areas = encode_masks(masks)
    assert got.counts == counts and np.array_equal(got.boxes, boxes) and np.array_equal(got.areas, areas)


def test_no_objects_and_bad_input():
    got = encode_change_bits(change_bits(torch.zeros(0, 5, 9, dtype=torch.bool)).numpy(), 5, 9)
    assert got.counts == [] and got.boxes.shape == (0, 4) and got.areas.shape == (0,)
    with pytest.raises(MaskletValueError):
        change_bits(torch.zeros(2, 4, 4))  # float logits: threshold first
    with pytest.raises(MaskletValueError):
        change_bits(torch.zeros(4, 4, dtype=torch.bool))
    with pytest.raises(MaskletValueError) as err:
        encode_change_bits(np.zeros((2, 4, 1), np.uint8), 4, 9)  # 9 pixels a row need 2 bytes
    assert err.value.value == (2, 4, 1)


def test_change_bits_on_fake_cuda_is_fixed_shape():
    """On (fake) CUDA the device half is traced without data: any data-dependent host sync (.item(), nonzero,
    a shape that depends on values) would raise here."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        for shape in [(10, 1080, 1920), (3, 37, 45), (1, 1, 1), (0, 4, 4)]:
            bits = change_bits(torch.empty(shape, dtype=torch.bool, device="cuda"))
            assert bits.device.type == "cuda" and bits.dtype == torch.uint8
            assert tuple(bits.shape) == (shape[0], shape[1], -(-shape[2] // 8))


def test_chunk_rows_take_encoded_masks():
    rng = np.random.default_rng(3)
    masks = blob_masks(rng, 3, 12, 21)
    a, b = ChunkRows("v"), ChunkRows("v")
    a.add(4, 0.5, [3, 1, 2], masks, [0.1, 0.2, 0.3], [0.9, 0.8, 0.7], [True, False, False])
    b.add(4, 0.5, [3, 1, 2], encode_change_bits(change_bits_np(masks), 12, 21), [0.1, 0.2, 0.3], [0.9, 0.8, 0.7],
          [True, False, False])
    assert a.to_table().equals(b.to_table())
    with pytest.raises(MaskletValueError):  # still one value per object
        b.add(5, 0.6, [1, 2], EncodedMasks.of(masks), [0.1] * 3, [0.1] * 3)


def test_actor_tables_are_the_ones_encode_masks_makes(tmp_path, monkeypatch):
    """StreamWorker (no Ray) on a real video, width 90 (not a multiple of 8): its part file equals the table that
    encode_masks makes of the very results the tracker produced (recorded on their way into _start_copy)."""
    from model import Prompt, embedded_checkpoint
    from tests.encoded_videos import write_video
    from tests.videos import moving_shapes
    from workers.output import read_masklets
    from workers.stream_worker import StreamWorker
    from workers.tasks import ChunkTask, ModelSpec
    from workers.video_source import probe_video

    seen, start_copy = [], StreamWorker._start_copy

    def recording(r, frame, res):
        seen.append((frame, list(res.object_ids), res.masks.clone(), res.ious.float().clone(),
                     res.object_scores.float().clone(), list(res.is_prompt)))
        return start_copy(r, frame, res)

    monkeypatch.setattr(StreamWorker, "_start_copy", staticmethod(recording))
    info = probe_video(str(write_video(tmp_path / "v.mp4", moving_shapes(5, 72, 90, seed=1))))
    worker = StreamWorker(ModelSpec("synthetic-tiny", embedded_checkpoint("synthetic-tiny")), str(tmp_path / "out"))
    prompts = ((0, Prompt(1, points=np.array([[30.0, 30.0]]), labels=[1])),
               (1, Prompt(2, points=np.array([[60.0, 50.0]]), labels=[1])))
    (report,) = worker.run([ChunkTask("v", 0, 0, 0, 5, info, prompts)])
    assert report.ok, report.error
    assert [s[0] for s in seen] == list(range(5)) and [len(s[1]) for s in seen] == [1, 2, 2, 2, 2]
    expected, times = ChunkRows("v"), info.frame_times(0, 5)
    for frame, ids, masks, ious, scores, is_prompt in seen:
        expected.add(frame, float(times[frame]), ids, masks.numpy(), ious.numpy(), scores.numpy(), is_prompt)
    want = expected.to_table()
    assert read_masklets(str(tmp_path / "out")).equals(want)
    assert 0 < sum(a > 0 for a in want["area"].to_pylist())  # real masks, not only empty ones

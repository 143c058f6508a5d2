"""Tracking with discovery (model/discovery.py) in the StreamingTracker: objects found on keyframes only where
no live track covers the frame, a proposal matching a live track is that track, objects entering mid-video
join at the next keyframe, tracks absent for max_missing frames end, and the counters survive a snapshot.

The proposer is an oracle (the true masks of the objects under the allowed grid clicks) so the rules are tested
whatever the embedded model's own automatic masks are worth; the tracking itself is the real model's."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import model.discovery as discovery
from model import StreamingTracker, TrackerState, embedded_checkpoint, load_model
from model.auto_masks import Proposals, point_grid
from model.discovery import DiscoveryConfig, DiscoveryState, update_missing

H = W = 128
A_BOX, B_BOX = (20, 20, 52, 52), (76, 72, 108, 104)  # x0, y0, x1, y1 of two squares, on the 4 px grid


def frames(n: int, b_from: int, a_until: int) -> tuple[np.ndarray, np.ndarray]:
    """Object A (red) on frames [0, a_until), object B (blue) from b_from on; their true masks (T, 2, H, W)."""
    video = np.full((n, H, W, 3), 90, np.uint8)
    masks = np.zeros((n, 2, H, W), bool)
    for t in range(n):
        for k, ((x0, y0, x1, y1), on, colour) in enumerate([(A_BOX, t < a_until, (220, 40, 40)),
                                                            (B_BOX, t >= b_from, (40, 60, 230))]):
            if on:
                video[t, y0:y1, x0:x1] = colour
                masks[t, k, y0:y1, x0:x1] = True
    return video, masks


class Oracle:
    """generate_masks stand-in: the true masks of the objects under at least one allowed click."""

    def __init__(self, masks: np.ndarray):
        self.masks, self.frame, self.calls = masks, 0, []

    def __call__(self, model, feat, high_res, config, point_ok=None):
        S, S4 = model.cfg.image_size, model.cfg.image_size // 4
        grid = point_grid(config.points_per_side or 16, S, feat.device)  # (P, 2) model pixels
        found = []
        for m in self.masks[self.frame]:
            small = F.interpolate(torch.from_numpy(m)[None, None].float(), size=(S4, S4), mode="area")[0, 0] > 0.5
            xy = (grid * S4 / S).long()
            under = small[xy[:, 1], xy[:, 0]] & (point_ok if point_ok is not None else True)
            if under.any():
                found.append(small)
        self.calls.append((self.frame, len(found)))
        k = len(found)
        low = (torch.stack(found)[:, None].float() * 20 - 10) if k else torch.zeros(0, 1, S4, S4)
        return Proposals(low, torch.ones(k), torch.ones(k), torch.zeros(k, 4), torch.zeros(k, 2))


@pytest.fixture(scope="module")
def tracker():
    torch.manual_seed(0)
    return StreamingTracker(load_model("synthetic-tiny", embedded_checkpoint("synthetic-tiny")),
                            discovery=DiscoveryConfig(keyframe_every=8, max_missing=6))


def run(tracker, video, masks, monkeypatch, start=0, stop=None, state=None):
    oracle = Oracle(masks)
    monkeypatch.setattr(discovery, "generate_masks", oracle)
    state = state or tracker.new_stream(H, W, start_frame=start, discover_from=1)
    results = []
    for t in range(start, stop or len(video)):
        oracle.frame = t
        results.append(tracker.step(state, video[t]))
    return state, results, oracle


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return (a & b).sum() / max((a | b).sum(), 1)


def test_objects_are_found_once_join_at_a_keyframe_and_end_when_gone(tracker, monkeypatch):
    video, masks = frames(48, b_from=13, a_until=26)
    state, results, oracle = run(tracker, video, masks, monkeypatch)
    assert results[0].object_ids == [1] and iou(results[0][1].mask.numpy(), masks[0, 0]) > 0.9
    # B enters at 13: found at the next keyframe (16), as id 2; A, covered by its track, is not proposed again.
    assert [r.object_ids for r in results[8:16]] == [[1]] * 8
    assert results[16].object_ids == [1, 2] and iou(results[16][2].mask.numpy(), masks[16, 1]) > 0.9
    assert oracle.calls[:3] == [(0, 1), (8, 0), (16, 1)]
    assert not any(r[2].is_prompt for r in results[16:] if 2 in r.object_ids)  # discovered, not prompted
    # A is gone from 26: once absent for max_missing frames its track ends and no row follows.
    ended = next(t for t, r in enumerate(results) if 1 not in r.object_ids)
    assert 26 + 6 <= ended <= 26 + 6 + 2, [r.object_scores.tolist() for r in results[24:36]]
    assert all(1 not in r.object_ids for r in results[ended:])
    assert 1 not in state.objects and 1 not in state.discovery.missing and state.discovery.next_id == 3
    assert all(iou(r[2].mask.numpy(), masks[t + 16, 1]) > 0.8 for t, r in enumerate(results[16:]))


def test_a_proposal_over_a_live_track_is_that_track(tracker, monkeypatch):
    video, masks = frames(10, b_from=0, a_until=10)
    oracle = Oracle(masks)
    monkeypatch.setattr(discovery, "generate_masks", lambda *a, **k: oracle(*a[:4]))  # ignores coverage
    state = tracker.new_stream(H, W, discover_from=5)
    results = [tracker.step(state, video[t]) for t in range(10) if not setattr(oracle, "frame", t)]
    assert results[0].object_ids == [5, 6]
    assert all(r.object_ids == [5, 6] for r in results)  # frame 8 proposed both again: matched, not added


def test_the_live_object_cap_holds(monkeypatch):
    torch.manual_seed(0)
    capped = StreamingTracker(load_model("synthetic-tiny", embedded_checkpoint("synthetic-tiny")),
                              discovery=DiscoveryConfig(keyframe_every=8, max_objects=1))
    video, masks = frames(10, b_from=0, a_until=10)
    _, results, _ = run(capped, video, masks, monkeypatch)
    assert all(len(r.object_ids) == 1 for r in results)


def test_a_snapshot_resumes_discovery_exactly(tracker, monkeypatch):
    video, masks = frames(40, b_from=13, a_until=26)
    _, whole, _ = run(tracker, video, masks, monkeypatch)
    state, first, _ = run(tracker, video, masks, monkeypatch, stop=20)
    restored = TrackerState.from_bytes(state.to_bytes())
    assert restored.discovery == state.discovery
    _, rest, _ = run(tracker, video, masks, monkeypatch, start=20, state=restored)
    for a, b in zip(whole, first + rest):
        assert a.object_ids == b.object_ids
        torch.testing.assert_close(a.logits, b.logits)


def test_a_stream_starting_mid_video_counts_keyframes_from_its_start(tracker, monkeypatch):
    video, masks = frames(30, b_from=0, a_until=30)
    state, results, oracle = run(tracker, video, masks, monkeypatch, start=5)
    assert [f for f, _ in oracle.calls] == [5, 13, 21, 29] and results[0].frame_index == 5
    assert results[0].object_ids == [1, 2]


def test_update_missing_counts_runs_of_absence_and_spares_given_objects():
    state = DiscoveryState(start_frame=0, next_id=10, first_id=10, missing={10: 0, 11: 0})
    assert update_missing(state, [3, 10, 11], [0.0, 0.1, 0.9], max_missing=2) == []
    assert update_missing(state, [3, 10, 11], [0.0, 0.9, 0.1], max_missing=2) == []  # 10's run broken
    assert update_missing(state, [3, 10, 11], [0.0, 0.2, 0.2], max_missing=2) == [11]
    assert state.missing == {10: 1}  # 3 is the user's: never counted, never ended
    with pytest.raises(ValueError, match="max_missing"):
        DiscoveryConfig(max_missing=0)

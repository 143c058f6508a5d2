"""The shipped synthetic-tiny weights: they load, and they track held-out synthetic videos."""

import pytest
import torch

from model import Prompt, StreamingTracker, embedded_checkpoint, get_config, load_model, resolve_checkpoint
from model.metrics import davis_summary, frame_scores, object_score
from model.synthetic import SyntheticConfig, render_video, split_seed
from workers.synthetic_corpus import first_frame_prompts

TEST_VIDEOS = range(5)  # fixed test-split videos, never seen in training
JF_TARGET = 0.80  # issue 5's bar for the shipped weights on these videos
CARD_JF = 0.38  # the level model/weights/MODEL_CARD.md states for these videos (0.3879 measured, 1 thread)


def track_jf(model: torch.nn.Module, video_index: int) -> tuple[list[float], list[float]]:
    """(J, F) per object of one 64-frame test video, each object prompted with its true mask on the first frame
    it is visible (DAVIS's semi-supervised protocol, the model card's headline); the prompt frame is not scored."""
    video = render_video(split_seed("test", video_index), SyntheticConfig(num_frames=64))
    prompts = first_frame_prompts(video, "points")  # which object joins on which frame
    tracker = StreamingTracker(model)
    H, W = video.frames.shape[1:3]
    state = tracker.new_stream(H, W)
    ids = [int(o) for o in video.object_ids]
    scores = {p["object_id"]: ([], []) for p in prompts}
    for t, frame in enumerate(video.frames):
        now = [Prompt(p["object_id"], mask=video.masks[t, ids.index(p["object_id"])])
               for p in prompts if p["frame_index"] == t]
        result = tracker.step(state, frame, now)
        for oid in result.object_ids:
            if not result[oid].is_prompt:
                j, f = frame_scores(result[oid].mask.numpy(), video.masks[t, ids.index(oid)])
                scores[oid][0].append(j)
                scores[oid][1].append(f)
    per_object = [object_score(j, f) for j, f in scores.values()]
    return [s.J for s in per_object], [s.F for s in per_object]


def dataset_jf(model) -> float:
    vids, js, fs = [], [], []
    for i in TEST_VIDEOS:
        j, f = track_jf(model, i)
        vids += [i] * len(j)
        js += j
        fs += f
    return davis_summary(vids, js, fs)["JF"]


@pytest.fixture(scope="module")
def shipped():
    path = embedded_checkpoint("synthetic-tiny")
    assert path is not None, "synthetic-tiny must ship weights under model/weights/"
    return load_model("synthetic-tiny", path)


@pytest.fixture(scope="module")
def shipped_jf(shipped):
    torch.set_num_threads(1)  # fixed, so the figure does not depend on the machine's core count
    return dataset_jf(shipped)


def test_shipped_weights_are_the_jobs_default(shipped):
    path = embedded_checkpoint("synthetic-tiny")
    assert resolve_checkpoint("synthetic-tiny", None) == path
    assert resolve_checkpoint("synthetic-tiny", "random") is None
    assert resolve_checkpoint("sam2.1-tiny", None) is None  # official weights cannot ship: random unless given
    assert shipped.cfg == get_config("synthetic-tiny")


def test_shipped_weights_track_far_better_than_random(shipped_jf):
    torch.manual_seed(0)
    random_jf = dataset_jf(load_model("synthetic-tiny"))
    assert shipped_jf > random_jf + 0.2, (shipped_jf, random_jf)


def test_shipped_weights_track_at_the_model_cards_level(shipped_jf):
    assert shipped_jf >= CARD_JF, f"J&F {shipped_jf:.4f} on 5 test videos < the model card's {CARD_JF}"


@pytest.mark.xfail(strict=True, reason="issue 5 open: the shipped weights do not reach J&F 0.80 yet "
                                       "(figure in model/weights/MODEL_CARD.md)")
def test_shipped_weights_reach_the_target_on_test_videos(shipped_jf):
    assert shipped_jf >= JF_TARGET, f"J&F {shipped_jf:.4f} on 5 test videos < {JF_TARGET}"

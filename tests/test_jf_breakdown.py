"""benchmarks.jf_breakdown: per-frame J split by frames since the prompt, visibility and size."""

import numpy as np
import pandas as pd

from benchmarks.jf_breakdown import breakdown, frame_rows
from workers.masklets import encode_masks


def table(masks: dict[tuple[int, int], np.ndarray], prompts=()) -> pd.DataFrame:
    keys = sorted(masks)
    counts, _, _ = encode_masks(np.stack([masks[k] for k in keys]))
    index = pd.MultiIndex.from_tuples(keys, names=["object_id", "frame_index"])
    return pd.DataFrame({"mask_rle": counts, "height": 8, "width": 8,
                         "is_prompt": [k in prompts for k in keys]}, index=index)


def test_frames_are_split_by_what_went_wrong():
    square, empty = np.zeros((8, 8), bool), np.zeros((8, 8), bool)
    square[2:6, 2:6] = True
    half = square.copy()
    half[2:4] = False  # J 0.5 against the square
    gt = table({(1, 0): square, (1, 1): square, (1, 2): square, (1, 3): empty, (1, 4): empty})
    pred = table({(1, 0): square, (1, 1): square, (1, 2): half, (1, 3): square}, prompts={(1, 0)})
    rows = frame_rows(gt, pred)
    assert [r["since_prompt"] for r in rows] == [0, 1, 2, 3, 4]
    assert [r["J"] for r in rows] == [1.0, 1.0, 0.5, 0.0, 1.0]  # hidden: a mask scores 0, nothing (missing) 1
    tables = breakdown(pd.DataFrame(rows))
    vis = tables["visible vs hidden"]
    assert vis.loc["visible", "mean J"] == 0.75 and vis.loc["hidden", "mean J"] == 0.5
    assert vis.loc["hidden", "predicted empty"] == 0.5
    since = tables["visible frames by frames since the prompt"]
    assert since["mean"].tolist() == [1.0, 0.5]  # the prompted frame is not in the tracked tables
    assert tables["prompted frames"].loc["prompted", "frames"] == 1

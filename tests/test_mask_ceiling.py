"""benchmarks.mask_ceiling: the best J&F a model's mask grid can carry, scored as the model would be."""

import pytest
import torch

from benchmarks.mask_ceiling import ceiling, fit_grid, main
from model.synthetic import SyntheticConfig
from workers.synthetic_corpus import write_corpus


@pytest.fixture(scope="module")
def small_split(tmp_path_factory):
    root = tmp_path_factory.mktemp("ceiling")
    write_corpus(root, "test", 2, SyntheticConfig(height=64, width=64, num_frames=12), prompt_kind="mask")
    return root / "manifest.jsonl"


def test_a_grid_as_fine_as_the_video_scores_almost_perfectly(small_split):
    fine = ceiling(small_split, image_size=256, steps=30)  # 64 x 64 cells on 64 x 64 frames
    coarse = ceiling(small_split, image_size=32, steps=30)  # 8 x 8 cells
    assert fine["J&F"] > 0.97, fine["J&F"]
    assert coarse["J&F"] < fine["J&F"] - 0.02, (coarse["J&F"], fine["J&F"])
    assert fine["frames"] == coarse["frames"] > 0


def test_fitting_beats_the_area_average(small_split):
    plain = ceiling(small_split, image_size=32, steps=0)
    fitted = ceiling(small_split, image_size=32, steps=30)
    assert fitted["J&F"] > plain["J&F"], (fitted["J&F"], plain["J&F"])


def test_fit_grid_keeps_a_disc_and_an_empty_mask():
    yy, xx = torch.meshgrid(torch.arange(48), torch.arange(48), indexing="ij")
    disc = (yy - 20) ** 2 + (xx - 26) ** 2 < 12 ** 2
    out = fit_grid(torch.stack([disc, torch.zeros_like(disc)]), grid=12, steps=40)
    iou = (out[0] & disc).sum() / (out[0] | disc).sum()
    assert iou > 0.9 and not out[1].any()


@pytest.mark.parametrize("bad", [["--image-sizes", "100"], ["--image-sizes", "a,b"], ["--steps", "-1"]])
def test_bad_arguments_are_refused_by_name(bad, capsys, tmp_path):
    with pytest.raises(SystemExit):
        main(bad + ["--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert bad[0] in err and bad[1] in err

"""fill_holes: hand-made masks with known answers, and a brute-force 8-connected BFS oracle."""

from collections import deque

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from model.postprocess import HOLE_LOGIT, fill_holes


def logits_from(fg: np.ndarray) -> torch.Tensor:
    """(H, W) bool foreground -> (1, 1, H, W) logits: +2 on foreground, -3 on background."""
    return torch.where(torch.from_numpy(fg), 2.0, -3.0)[None, None]


def expected(logits: torch.Tensor, filled: np.ndarray) -> torch.Tensor:
    return torch.where(torch.from_numpy(filled)[None, None], torch.tensor(HOLE_LOGIT), logits)


def oracle(logits: torch.Tensor, max_area: int) -> torch.Tensor:
    """Reference answer by BFS over 8-connected background components, plane by plane."""
    out = logits.clone()
    for n in range(logits.shape[0]):
        bg = (logits[n, 0] <= 0).numpy()
        H, W = bg.shape
        seen = np.zeros_like(bg)
        for y0 in range(H):
            for x0 in range(W):
                if not bg[y0, x0] or seen[y0, x0]:
                    continue
                comp, queue = [], deque([(y0, x0)])
                seen[y0, x0] = True
                while queue:
                    y, x = queue.popleft()
                    comp.append((y, x))
                    for dy in (-1, 0, 1):
                        for dx in (-1, 0, 1):
                            v, u = y + dy, x + dx
                            if 0 <= v < H and 0 <= u < W and bg[v, u] and not seen[v, u]:
                                seen[v, u] = True
                                queue.append((v, u))
                if len(comp) <= max_area:
                    for y, x in comp:
                        out[n, 0, y, x] = HOLE_LOGIT
    return out


def test_single_pixel_hole():
    fg = np.ones((7, 7), bool)
    fg[3, 3] = False
    x = logits_from(fg)
    assert_close(fill_holes(x, 1), expected(x, ~fg))


def test_3x3_hole_area_threshold():
    fg = np.ones((9, 9), bool)
    fg[3:6, 3:6] = False
    x = logits_from(fg)
    assert_close(fill_holes(x, 8), x)  # area 9 > 8: stays
    assert_close(fill_holes(x, 9), expected(x, ~fg))


def test_diagonal_holes_are_one_component():
    fg = np.ones((8, 8), bool)
    fg[2:4, 2:4] = False  # 4 pixels
    fg[4:6, 4:6] = False  # 4 pixels, touching the first only at a corner
    x = logits_from(fg)
    assert_close(fill_holes(x, 4), x)  # one component of area 8
    assert_close(fill_holes(x, 8), expected(x, ~fg))


def test_hole_touching_border():
    fg = np.ones((6, 6), bool)
    fg[0, 2:4] = False
    fg[5, 5] = False  # corner pixel
    x = logits_from(fg)
    assert_close(fill_holes(x, 1), expected(x, np.eye(6, dtype=bool) & ~fg))
    assert_close(fill_holes(x, 2), expected(x, ~fg))


def test_large_background_with_small_hole():
    fg = np.zeros((16, 16), bool)
    fg[4:11, 4:11] = True  # a foreground square in a large background ...
    fg[7, 7] = False  # ... with a one-pixel hole
    x = logits_from(fg)
    filled = np.zeros_like(fg)
    filled[7, 7] = True
    assert_close(fill_holes(x, 8), expected(x, filled))
    assert_close(fill_holes(x, 256), expected(x, ~fg))  # everything is small enough now


def test_zero_logit_is_background_and_others_untouched():
    x = torch.full((1, 1, 5, 5), 1.5)
    x[0, 0, 2, 2] = 0.0
    x[0, 0, 0, 0] = 0.3
    y = fill_holes(x, 1)
    assert y[0, 0, 2, 2] == HOLE_LOGIT
    assert_close(y[0, 0, 0, 0], torch.tensor(0.3))


def test_max_area_zero_returns_input():
    fg = np.ones((5, 5), bool)
    fg[2, 2] = False
    x = logits_from(fg)
    assert fill_holes(x, 0) is x
    assert fill_holes(x, -3) is x


def test_bf16_keeps_dtype():
    fg = np.ones((6, 6), bool)
    fg[1, 1] = False
    x = logits_from(fg).bfloat16()
    y = fill_holes(x, 2)
    assert y.dtype == torch.bfloat16
    assert_close(y, expected(x.float(), ~fg).bfloat16())


def random_blobs(gen: torch.Generator, n: int, size: int = 24) -> torch.Tensor:
    """(n, 1, size, size) logits: smoothed noise, thresholded around 0 with varying bias."""
    noise = torch.randn(n, 1, size // 3, size // 3, generator=gen)
    x = torch.nn.functional.interpolate(noise, size=(size, size), mode="bilinear", align_corners=False)
    x = x + 0.4 * torch.randn(n, 1, size, size, generator=gen)  # ragged edges, small holes and specks
    bias = torch.linspace(-0.6, 0.6, n).view(n, 1, 1, 1)
    return x + bias


@pytest.mark.parametrize("max_area", [1, 4, 8, 20])
def test_random_masks_match_bfs_oracle(max_area):
    gen = torch.Generator().manual_seed(max_area)
    x = random_blobs(gen, n=20)
    want = oracle(x, max_area)
    assert (want != x).any()  # the oracle does fill something
    assert_close(fill_holes(x, max_area), want, rtol=0, atol=0)


def test_thin_line_needs_all_iterations():
    """A 1-pixel-wide line of area A has diameter A - 1: the worst case for label propagation."""
    fg = np.ones((3, 14), bool)
    fg[1, 1:11] = False  # area 10
    x = logits_from(fg)
    assert_close(fill_holes(x, 10), expected(x, ~fg))
    assert_close(fill_holes(x, 9), x)
    fg[1, 11] = False  # area 11: no label covers it after 10 rounds, and it must stay
    x = logits_from(fg)
    assert_close(fill_holes(x, 10), x)

"""2-D axial rotary position encoding (RoPE) for tokens of a feature grid, as the memory attention uses it.

The token at grid cell (y, x) has its channel pairs (2i, 2i+1) rotated: the first half of the pairs by
angle x * f_i, the second half by y * f_i, with f_i = theta ** (-4i / dim). After rotating queries and
keys alike, their dot products depend only on relative positions.

Rotations are unit complex numbers, built once per grid size and device.
"""

import torch


def axial_rope_angles(width: int, height: int, dim: int, theta: float = 10000.0,
                      device: torch.device | None = None, pool: int = 1) -> torch.Tensor:
    """Rotation angles of a (height, width) grid in row-major token order -> (height * width, dim // 2).
    With `pool` > 1 the tokens are the cells of that grid pooled pool x pool, each at its cells' centre
    (a coarse memory's positions on the full grid): -> (height * width / pool**2, dim // 2)."""
    assert dim % 4 == 0, "axial RoPE splits the channel pairs evenly between x and y"
    freqs = 1.0 / theta ** (torch.arange(0, dim, 4, dtype=torch.float32, device=device) / dim)  # (dim/4,)
    w, h, centre = width // pool, height // pool, (pool - 1) / 2
    xs = (torch.arange(w, dtype=torch.float32, device=device) * pool + centre).repeat(h)  # (hw,) column of each
    ys = (torch.arange(h, dtype=torch.float32, device=device) * pool + centre).repeat_interleave(w)  # (hw,) row
    return torch.cat([torch.outer(xs, freqs), torch.outer(ys, freqs)], dim=-1)  # (HW, dim/2)


def axial_rope_rotations(width: int, height: int, dim: int, theta: float = 10000.0,
                         device: torch.device | None = None, pool: int = 1) -> torch.Tensor:
    """Unit complex rotations of `axial_rope_angles`: (height * width / pool**2, dim // 2) complex64."""
    angles = axial_rope_angles(width, height, dim, theta, device, pool)
    return torch.polar(torch.ones_like(angles), angles)


def apply_rope(x: torch.Tensor, rotations: torch.Tensor) -> torch.Tensor:
    """Rotate the channel pairs of x (..., N, D) by `rotations` (N, D/2) complex; same shape and dtype out.

    One complex multiply (about 10x faster on CPU than the same arithmetic on cos/sin tables), in float32
    whatever x's dtype: bf16 angles would be too coarse for the far grid cells.
    """
    pairs = torch.view_as_complex(x.float().unflatten(-1, (-1, 2)).contiguous())  # (..., N, D/2)
    return torch.view_as_real(pairs * rotations).flatten(-2).to(x.dtype)  # (..., N, D)

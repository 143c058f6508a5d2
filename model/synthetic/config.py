"""What a synthetic video looks like (SyntheticConfig) and the generator's typed error."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import SamstreamError

MAX_OBJECTS = 4  # owner codes 1..4 in the label map; the issue asks for 1-4 objects
MAX_CLUTTER = 200  # untracked look-alikes per video at most: each needs an owner code of its own while drawn


class SyntheticError(SamstreamError, ValueError):
    """A bad synthetic-data argument or an impossible request; `value` holds the offending value."""

    def __init__(self, message: str, value=None):
        self.value = value
        super().__init__(message)


@dataclass(frozen=True)
class SyntheticConfig:
    """What a synthetic video looks like. The defaults make 64-frame 256x256 videos."""

    height: int = 256  # frame size (px); write_corpus needs both even (H.264 yuv420p)
    width: int = 256
    num_frames: int = 64
    min_objects: int = 1  # tracked objects per video, uniform in [min_objects, max_objects]
    max_objects: int = 4  # at most MAX_OBJECTS
    # Base radius range (half the diameter: 2% to 40% of the frame's shorter side by default), as a fraction of
    # min(height, width), drawn log-uniformly (small objects as often as big ones); raised where needed so
    # that each object can show min_prompt_area pixels.
    object_radius: tuple[float, float] = (0.01, 0.2)
    hidden_frames: tuple[int, int] = (5, 60)  # length range of a scripted full disappearance (frames, log-uniform)
    event_prob: float = 0.75  # chance an object gets a (first, then each further) scripted disappearance
    occluder_share: float = 0.5  # share of disappearances behind a foreground bar; the rest leave the frame
    cross_prob: float = 0.5  # chance an object's path is steered through an object behind it
    max_occluders: int = 2  # foreground occluders (bars and blobs) per video; never tracked objects
    distractor_prob: float = 0.35  # chance an object wears the same texture as an earlier one (a look-alike)
    camera_drift: float = 10.0  # px: bound of the camera offset from its start, on each axis
    noise_std: float = 3.0  # sensor noise (std, 8-bit levels)
    fps: int = 24  # frame rate written to the mp4 and time_s
    min_prompt_area: int = 64  # px: an object is prompted on the first frame its visible area reaches this
    flat_colors: bool = False  # debug: each owner in its own flat colour (FLAT_COLORS), no noise, light or blur
    # --- added with the families (model.synthetic.families)
    twin_shape_prob: float = 0.5  # chance a look-alike (see distractor_prob) also shares its original's shape family
    max_clutter: int = 2  # untracked look-alikes per video (a tracked object's shape family and texture), behind all
    gain_drift: float = 0.25  # global brightness drifts within about 1 +- this over a video (lighting changes)
    light_prob: float = 0.5  # chance of a soft light or shadow moving across the frame
    blur_prob: float = 0.3  # chance of a stretch of blurred frames (defocus or motion blur; the masks unchanged)
    # "kind:name" families to draw from (e.g. ("shape:thin", "motion:fast")): a kind named here uses only the
    # names given, the others all of the seed's split's families. Naming a family of the other family set (a
    # held-out family for a train/val/test seed, or the reverse) fails in render_video: splits stay disjoint.
    families: tuple[str, ...] = ()
    # --- added with the stress split (model.synthetic.stress); the defaults draw exactly what they drew before
    # The most frames between one scripted window's return (plus its lead and 4 frames) and the next window's
    # lead; None: a window starts anywhere in the frames left (few long windows fit in a video then).
    event_gap: int | None = None
    # Untracked look-alikes drawn for EACH tracked object on top of the 0..max_clutter random ones: its shape
    # family and texture, always on screen (behind everything), so a double is in view while it is hidden.
    clutter_per_object: int = 0

    def __post_init__(self) -> None:
        for name in ("height", "width"):
            _check(getattr(self, name) >= 32, f"{name} must be >= 32", getattr(self, name))
        _check(self.num_frames >= 1, "num_frames must be >= 1", self.num_frames)
        _check(1 <= self.min_objects <= self.max_objects <= MAX_OBJECTS,
               f"need 1 <= min_objects <= max_objects <= {MAX_OBJECTS}", (self.min_objects, self.max_objects))
        lo, hi = self.object_radius
        _check(0 < lo <= hi <= 0.4, "object_radius must be (lo, hi) with 0 < lo <= hi <= 0.4", self.object_radius)
        lo, hi = self.hidden_frames
        _check(1 <= lo <= hi, "hidden_frames must be (lo, hi) with 1 <= lo <= hi", self.hidden_frames)
        for name in ("event_prob", "occluder_share", "cross_prob", "distractor_prob", "twin_shape_prob",
                     "light_prob", "blur_prob"):
            _check(0 <= getattr(self, name) <= 1, f"{name} must be in [0, 1]", getattr(self, name))
        for name in ("max_occluders", "camera_drift", "noise_std", "max_clutter"):
            _check(getattr(self, name) >= 0, f"{name} must be >= 0", getattr(self, name))
        _check(0 <= self.gain_drift < 1, "gain_drift must be in [0, 1)", self.gain_drift)
        _check(isinstance(self.fps, int) and self.fps > 0, "fps must be an int > 0", self.fps)
        _check(self.min_prompt_area >= 1, "min_prompt_area must be >= 1", self.min_prompt_area)
        _check(self.event_gap is None or (isinstance(self.event_gap, int) and self.event_gap >= 0),
               "event_gap must be None or an int >= 0", self.event_gap)
        _check(isinstance(self.clutter_per_object, int) and self.clutter_per_object >= 0,
               "clutter_per_object must be an int >= 0", self.clutter_per_object)
        _check(self.max_clutter + MAX_OBJECTS * self.clutter_per_object <= MAX_CLUTTER,
               f"max_clutter + {MAX_OBJECTS} x clutter_per_object must be <= {MAX_CLUTTER}",
               (self.max_clutter, self.clutter_per_object))
        _check(isinstance(self.families, tuple), "families must be a tuple of 'kind:name' strings", self.families)
        from .families import parse_families  # here, not at the top: families imports this module

        parse_families(self.families)  # unknown kinds or names fail now, not at render time


def _check(ok: bool, message: str, value) -> None:
    if not ok:
        raise SyntheticError(f"{message}, got {value!r}", value)

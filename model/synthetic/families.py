"""The one registry of the synthetic generator's families: each a named concept of what is drawn.

Four kinds of family: shapes (model.synthetic.shapes / .outlines), textures (.textures), backgrounds
(.backgrounds) and motions (.motion). Two disjoint family sets:

- IN_FAMILY, for the splits "train", "val" and "test": what the model learns from and is tested on;
- HELD_OUT, for the split "heldout" only: families the model never sees in training, to measure whether it
  learned objects or the generator.

render_video derives the set from the seed's split (model.synthetic.splits), so no training seed can render a
held-out family: the disjointness is structural. A config may narrow a set (SyntheticConfig.families), never
leave it. Shared by every split and not a family: the camera's drift, foreground bars (poles), lighting
changes, blur and sensor noise.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from .backgrounds import BACKGROUND_FAMILIES
from .config import SyntheticError
from .motion import MOTION_FAMILIES
from .shapes import SHAPE_FAMILIES
from .textures import TEXTURE_FAMILIES

FAMILY_KINDS = ("shape", "texture", "background", "motion")
KNOWN_FAMILIES = {"shape": SHAPE_FAMILIES, "texture": TEXTURE_FAMILIES, "background": BACKGROUND_FAMILIES,
                  "motion": MOTION_FAMILIES}  # every family the drawing code implements, by kind
HELD_OUT_SPLITS = ("heldout",)


@dataclass(frozen=True)
class FamilySet:
    """Named families of each kind; a video draws only from one set."""

    name: str
    shape: tuple[str, ...]
    texture: tuple[str, ...]
    background: tuple[str, ...]
    motion: tuple[str, ...]

    def __post_init__(self) -> None:
        for kind in FAMILY_KINDS:
            names = getattr(self, kind)
            if not isinstance(names, tuple) or not names:
                raise SyntheticError(f"family set {self.name!r}: {kind} families must be a non-empty tuple, "
                                     f"got {names!r}", names)
            for name in names:
                if name not in KNOWN_FAMILIES[kind]:
                    raise SyntheticError(f"family set {self.name!r}: unknown {kind} family {name!r}; known: "
                                         f"{', '.join(KNOWN_FAMILIES[kind])}", name)
            if len(set(names)) != len(names):
                raise SyntheticError(f"family set {self.name!r}: {kind} families repeat: {names!r}", names)

    def labels(self) -> frozenset[str]:
        """Every family of the set as "kind:name"."""
        return frozenset(f"{kind}:{name}" for kind in FAMILY_KINDS for name in getattr(self, kind))

    def narrowed(self, wanted: tuple[str, ...]) -> "FamilySet":
        """This set with each kind named in `wanted` ("kind:name" strings) cut to the names given there; a
        name outside this set fails (a held-out family asked of an in-family split, or the reverse)."""
        chosen = parse_families(wanted)
        for kind, names in chosen.items():
            outside = [n for n in names if n not in getattr(self, kind)]
            if outside:
                raise SyntheticError(f"{kind} families {outside} are not in the family set {self.name!r} "
                                     f"({', '.join(getattr(self, kind))})", outside[0])
        return FamilySet(self.name, *(chosen.get(f.name, getattr(self, f.name)) for f in fields(self)[1:]))


def parse_families(wanted) -> dict[str, tuple[str, ...]]:
    """{kind: names} of "kind:name" strings, in order; unknown kinds or names fail with SyntheticError."""
    chosen: dict[str, list[str]] = {}
    for item in wanted:
        kind, _, name = str(item).partition(":")
        if kind not in FAMILY_KINDS or name not in KNOWN_FAMILIES[kind]:
            raise SyntheticError(f"unknown family {item!r}: want 'kind:name' with kind in {FAMILY_KINDS} and "
                                 f"name a known family of that kind", item)
        if name not in chosen.setdefault(kind, []):
            chosen[kind].append(name)
    return {k: tuple(v) for k, v in chosen.items()}


@dataclass(frozen=True)
class FamilyRegistry:
    """The in-family set and the held-out set; they share no family of any kind."""

    in_family: FamilySet
    held_out: FamilySet

    def __post_init__(self) -> None:
        for kind in FAMILY_KINDS:
            shared = sorted(set(getattr(self.in_family, kind)) & set(getattr(self.held_out, kind)))
            if shared:
                raise SyntheticError(f"{kind} families {shared} are both in-family and held out", shared)

    def for_split(self, split: str) -> FamilySet:
        """The family set a split draws from: HELD_OUT_SPLITS the held-out set, every other split in-family."""
        return self.held_out if split in HELD_OUT_SPLITS else self.in_family


IN_FAMILY = FamilySet(
    "in-family",
    shape=("ellipse", "polygon", "star", "blob", "thin", "concave"),
    texture=("flat", "stripes", "checker", "dots", "noise", "gradient"),
    background=("scenery", "mosaic", "gradient"),
    motion=("wander", "drift", "fast"),
)
HELD_OUT = FamilySet(
    "held-out",
    shape=("glyph", "ring"),
    texture=("photo", "voronoi"),
    background=("photo", "bokeh"),
    motion=("orbit", "bounce"),
)
REGISTRY = FamilyRegistry(IN_FAMILY, HELD_OUT)

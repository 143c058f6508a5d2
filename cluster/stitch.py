"""Stitching the tracks of overlapping segments of one video into global object ids (pseudo-label job).

A long video is cut into segments that overlap by O frames; each segment is tracked on its own and numbers
its objects locally. On each overlap the driver measures how well every track of the earlier segment's tail
agrees with every track of the later segment's head (`overlap_iou`), then `stitch` links tracks boundary by
boundary and hands out global ids. Pure functions: no Ray, no I/O, so the driver can run them anywhere.

Overlap IoU (exact definition). For an earlier track a and a later track b and the overlap frames F:
    IoU_f(a, b) = |a_f ∩ b_f| / |a_f ∪ b_f|  (COCO RLE IoU, iscrowd 0), where a track without a row on f, or
                  with visible False there, has the empty mask on f;
    V = {f in F : a or b is visible on f};   IoU(a, b) = mean of IoU_f over V, and 0 when V is empty.
So a frame where only one of the two is visible counts as 0: a track that ends (or starts) inside the overlap
while its partner stays visible is penalised by the share of the overlap it misses, whereas two tracks that
end on the same frame (the object left) lose nothing.

Linking rules (per boundary, left to right):
- A user-given id present on both sides of a boundary is linked to itself whatever its IoU.
- The rest is a Hungarian assignment maximising the summed IoU over candidate pairs only: pairs with
  IoU >= floor that the given-id rules allow. Pairs below the floor weigh 0, so a sub-floor pair never
  displaces a pair that could be linked (a plain Hungarian on the raw matrix followed by the floor filter can
  trade one linkable pair for two unlinkable ones and link nothing).
- Given ids: two different given ids are never linked, and a chain (tracks linked across boundaries) never
  ends up with two given ids, nor with two local tracks of one segment under the same global id.
Global ids: a chain carrying a given id gets it; every other chain gets first_new_id, first_new_id + 1, ...
in order of (first segment of the chain, local id there). Hence when segment 0 numbers its discoveries
first_new_id, first_new_id + 1, ... (as segments do), segment 0's mapping is the identity, provided none of
its discovered tracks is linked to a given id of a later segment (that track takes the given id instead, and
the discoveries after it shift down by one).
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
from pycocotools import mask as mask_utils
from scipy.optimize import linear_sum_assignment

from model.errors import SamstreamError

OVERLAP_COLUMNS = ("object_id", "frame_index", "height", "width", "mask_rle", "visible")
_INT32_MAX = int(np.iinfo(np.int32).max)  # masklet object_id is int32

Overlap = tuple[list[int], list[int], np.ndarray]


class StitchError(SamstreamError, ValueError):
    """Inputs that cannot be stitched; `value` holds the offending value."""

    def __init__(self, message: str, value=None):
        self.value = value
        super().__init__(message)


@dataclass(frozen=True)
class SegmentTracks:
    segment: int  # position of the segment in its video (0, 1, ...)
    local_ids: tuple[int, ...]  # every local object id the segment produced, ascending
    given_ids: frozenset[int] = frozenset()  # local ids that are user-given object ids: kept globally

    def __post_init__(self):
        ids = tuple(int(i) for i in self.local_ids)
        if any(b <= a for a, b in zip(ids, ids[1:])):
            raise StitchError(f"segment {self.segment}: local_ids must be strictly ascending, got {ids}", ids)
        given = frozenset(int(i) for i in self.given_ids)
        if not given <= set(ids):
            extra = sorted(given - set(ids))
            raise StitchError(f"segment {self.segment}: given ids {extra} are not among its local_ids", extra)
        object.__setattr__(self, "local_ids", ids)
        object.__setattr__(self, "given_ids", given)


@dataclass(frozen=True)
class StitchResult:
    mapping: tuple[dict[int, int], ...]  # per segment: local id -> global id
    links: tuple[tuple[int, int, int, float], ...]  # (boundary i: segments i|i+1, earlier id, later id, IoU)


# ---------------------------------------------------------------------------------------------- overlap IoU


@dataclass(frozen=True)
class _Rows:
    """One side's rows on the overlap, sorted by (frame, object) so results do not depend on row order."""
    ids: np.ndarray  # unique object ids, ascending
    frame: np.ndarray  # per row
    col: np.ndarray  # per row: index of its object in ids
    visible: np.ndarray  # per row
    rles: list  # per row: pycocotools RLE dict
    sizes: frozenset  # distinct (height, width)


def _overlap_rows(table: pa.Table, frames: range, side: str) -> _Rows:
    missing = [c for c in OVERLAP_COLUMNS if c not in table.column_names]
    if missing:
        raise StitchError(f"{side} table lacks columns {missing}", missing)
    nulls = [c for c in OVERLAP_COLUMNS if table.column(c).null_count]
    if nulls:
        raise StitchError(f"{side} table has nulls in {nulls}", nulls)
    frame_all = table.column("frame_index").to_numpy().astype(np.int64)
    keep = np.flatnonzero(np.isin(frame_all, np.asarray(frames, np.int64)))
    obj = table.column("object_id").to_numpy()[keep].astype(np.int64)
    order = keep[np.lexsort((obj, frame_all[keep]))]
    rows = table.select(list(OVERLAP_COLUMNS)).take(pa.array(order, pa.int64()))
    frame, obj = frame_all[order], rows.column("object_id").to_numpy().astype(np.int64)
    dup = np.flatnonzero((frame[1:] == frame[:-1]) & (obj[1:] == obj[:-1]))
    if dup.size:
        where = (int(obj[dup[0]]), int(frame[dup[0]]))
        raise StitchError(f"{side} table has two rows for (object_id, frame_index) {where}", where)
    h, w = (rows.column(c).to_numpy().astype(np.int64) for c in ("height", "width"))
    rles = [{"size": [int(a), int(b)], "counts": s}
            for a, b, s in zip(h, w, rows.column("mask_rle").to_pylist())]
    ids, col = np.unique(obj, return_inverse=True)
    return _Rows(ids, frame, col.reshape(-1), rows.column("visible").to_numpy(zero_copy_only=False),
                 rles, frozenset(zip(h.tolist(), w.tolist())))


def _on_frame(rows: _Rows, frame: int) -> tuple[np.ndarray, np.ndarray, list]:
    """(visible flag per object id, indices of the visible objects, their RLEs) on one frame."""
    lo, hi = np.searchsorted(rows.frame, [frame, frame + 1])
    flags = np.zeros(len(rows.ids), bool)
    flags[rows.col[lo:hi]] = rows.visible[lo:hi]
    seen = [j for j in range(lo, hi) if rows.visible[j]]
    return flags, rows.col[seen], [rows.rles[j] for j in seen]


def overlap_iou(earlier: pa.Table, later: pa.Table, frames: range) -> Overlap:
    """(earlier ids, later ids, (len, len) mean mask IoU over the overlap frames); see the module docstring.

    Rows outside `frames` are ignored, so whole segment tables may be passed. Ids are every object with at
    least one row (visible or not) on the overlap, ascending. IoU is computed on RLEs, never on dense masks.
    """
    if not isinstance(frames, range):
        raise StitchError(f"frames must be a range, got {frames!r}", frames)
    a, b = _overlap_rows(earlier, frames, "earlier"), _overlap_rows(later, frames, "later")
    if len(a.sizes | b.sizes) > 1:
        sizes = sorted(a.sizes | b.sizes)
        raise StitchError(f"overlap rows have several (height, width): {sizes}", sizes)
    total = np.zeros((len(a.ids), len(b.ids)))
    counted = np.zeros((len(a.ids), len(b.ids)), np.int64)
    for frame in np.unique(np.concatenate([a.frame, b.frame])).tolist():  # ascending: sums are reproducible
        vis_a, ia, ra = _on_frame(a, frame)
        vis_b, ib, rb = _on_frame(b, frame)
        counted += vis_a[:, None] | vis_b[None, :]  # a pair counts where at least one of the two is visible
        if ra and rb:
            total[np.ix_(ia, ib)] += mask_utils.iou(ra, rb, [0] * len(rb))
    mean = np.divide(total, counted, out=np.zeros_like(total), where=counted > 0)
    return a.ids.tolist(), b.ids.tolist(), mean


# ---------------------------------------------------------------------------------------------- stitching


@dataclass(eq=False)
class _Chain:
    """Tracks linked across consecutive segments; at most one per segment."""
    members: list[tuple[int, int]]  # (segment, local id), segments ascending
    given: int | None  # the user-given id the chain carries, if any


@dataclass
class _Chains:
    given: list[frozenset[int]]  # per segment: its given ids
    of: dict[tuple[int, int], _Chain] = field(default_factory=dict)  # (segment, local id) -> its chain
    # per segment: given id -> the local id whose chain carries it; keeps global ids unique within a segment
    claims: list[dict[int, int]] = field(default_factory=list)

    @classmethod
    def start(cls, segments: list[SegmentTracks]) -> "_Chains":
        chains = cls([s.given_ids for s in segments], claims=[{g: g for g in s.given_ids} for s in segments])
        for k, seg in enumerate(segments):
            for lid in seg.local_ids:
                chains.of[(k, lid)] = _Chain([(k, lid)], lid if lid in seg.given_ids else None)
        return chains

    def allowed(self, chain: _Chain, seg: int, lid: int) -> bool:
        """May `chain` continue with track `lid` of segment `seg`?"""
        theirs = lid if lid in self.given[seg] else None
        if chain.given is not None and theirs is not None and chain.given != theirs:
            return False  # two different user objects
        carried = chain.given if chain.given is not None else theirs
        if carried is None:
            return True
        # The merged chain takes `carried` everywhere: no other track of any of its segments may hold it.
        return all(self.claims[k].get(carried, l) == l for k, l in chain.members + [(seg, lid)])

    def link(self, chain: _Chain, seg: int, lid: int) -> None:
        chain.members.append((seg, lid))
        if chain.given is None:
            chain.given = self.of[(seg, lid)].given
        self.of[(seg, lid)] = chain
        if chain.given is not None:
            for k, l in chain.members:
                self.claims[k][chain.given] = l


def _canonical(overlap: Overlap, boundary: int, earlier: SegmentTracks, later: SegmentTracks) -> Overlap:
    """Validate one overlap and sort its ids (and matrix), so the caller's id order cannot change the result."""
    try:
        a, b = [int(i) for i in overlap[0]], [int(i) for i in overlap[1]]
        iou = np.asarray(overlap[2], np.float64)
    except (TypeError, ValueError, IndexError) as e:
        raise StitchError(f"overlap {boundary} must be (earlier ids, later ids, IoU matrix): {e}", overlap) from e
    if iou.shape != (len(a), len(b)):
        raise StitchError(f"overlap {boundary}: IoU matrix has shape {iou.shape}, ids give "
                          f"{(len(a), len(b))}", iou.shape)
    if iou.size and not (np.isfinite(iou).all() and iou.min() >= 0 and iou.max() <= 1):
        raise StitchError(f"overlap {boundary}: IoU values must lie in [0, 1]", iou)
    for ids, seg in ((a, earlier), (b, later)):
        if len(set(ids)) != len(ids):
            raise StitchError(f"overlap {boundary}: ids repeat: {ids}", ids)
        unknown = sorted(set(ids) - set(seg.local_ids))
        if unknown:
            raise StitchError(f"overlap {boundary}: ids {unknown} are not local ids of segment "
                              f"{seg.segment}", unknown)
    ra, rb = np.argsort(a), np.argsort(b)
    return [a[i] for i in ra], [b[i] for i in rb], iou[np.ix_(ra, rb)]


def _boundary_links(boundary: int, overlap: Overlap, chains: _Chains, floor: float) -> list[tuple]:
    """Link the tracks of one boundary; return the accepted (boundary, earlier id, later id, IoU)."""
    a, b, iou = overlap
    left, right = chains.given[boundary], chains.given[boundary + 1]
    forced = [(a.index(g), b.index(g)) for g in sorted(left & right & set(a) & set(b))]
    done_r, done_c = {r for r, _ in forced}, {c for _, c in forced}
    weight = np.zeros_like(iou)
    for r, c in zip(*np.nonzero(iou >= floor)):
        chain = chains.of[(boundary, a[r])]
        if r not in done_r and c not in done_c and chains.allowed(chain, boundary + 1, b[c]):
            weight[r, c] = iou[r, c]
    rows, cols = linear_sum_assignment(weight, maximize=True)
    chosen = sorted(forced + [(r, c) for r, c in zip(rows, cols) if weight[r, c] > 0])
    links = []
    for r, c in chosen:  # re-checked one by one: each link changes what the next may do
        chain = chains.of[(boundary, a[r])]
        if chains.allowed(chain, boundary + 1, b[c]):
            chains.link(chain, boundary + 1, b[c])
            links.append((boundary, a[r], b[c], float(iou[r, c])))
    return links


def _check_stitch_inputs(segments: list[SegmentTracks], overlaps: list, floor: float, first_new_id: int):
    for k, seg in enumerate(segments):
        if not isinstance(seg, SegmentTracks) or seg.segment != k:
            raise StitchError(f"segments[{k}] must be the SegmentTracks of segment {k}, got {seg!r}", seg)
    if len(overlaps) != max(len(segments) - 1, 0):
        raise StitchError(f"{len(segments)} segments need {max(len(segments) - 1, 0)} overlaps, got "
                          f"{len(overlaps)}", len(overlaps))
    if not (isinstance(floor, numbers.Real) and not isinstance(floor, bool) and 0 < floor <= 1):
        raise StitchError(f"floor must be in (0, 1], got {floor!r}", floor)  # 0 would link disjoint masks
    given = set().union(*(s.given_ids for s in segments))
    if (not isinstance(first_new_id, (int, np.integer)) or isinstance(first_new_id, bool)
            or first_new_id < 0 or first_new_id <= max(given, default=-1)):
        raise StitchError(f"first_new_id must be an int >= 0 above every given id {sorted(given)}, got "
                          f"{first_new_id!r}", first_new_id)


def _global_ids(segments: list[SegmentTracks], chains: _Chains, first_new_id: int) -> tuple[dict, ...]:
    ids: dict[int, int] = {}  # id(chain) -> global id
    next_id = int(first_new_id)
    for k, seg in enumerate(segments):  # chains first met in (segment, local id) order = order of their start
        for lid in seg.local_ids:
            chain = chains.of[(k, lid)]
            if id(chain) not in ids:
                ids[id(chain)] = chain.given if chain.given is not None else next_id
                next_id += chain.given is None
    if next_id - 1 > _INT32_MAX:
        raise StitchError(f"global ids would reach {next_id - 1}, above int32", next_id - 1)
    return tuple({lid: ids[id(chains.of[(k, lid)])] for lid in seg.local_ids} for k, seg in enumerate(segments))


def stitch(segments: list[SegmentTracks], overlaps: list[Overlap], floor: float,
           first_new_id: int) -> StitchResult:
    """Link tracks across the overlaps (overlaps[i] between segments i and i+1) and give global ids.

    Rules and the numbering of new ids: see the module docstring. The result depends only on the values
    given, not on the order of ids inside an overlap.
    """
    _check_stitch_inputs(segments, overlaps, floor, first_new_id)
    chains = _Chains.start(segments)
    links: list[tuple] = []
    for i, overlap in enumerate(overlaps):
        links += _boundary_links(i, _canonical(overlap, i, segments[i], segments[i + 1]), chains, floor)
    return StitchResult(_global_ids(segments, chains, first_new_id), tuple(links))

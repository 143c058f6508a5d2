"""StreamingTracker: one frame per stream at a time, prompts arriving with their frame, bounded memory.

Per step, for B streams: the image encoder runs once on the B frames; every object of every stream is
then decoded in a few batched groups (tracked from memory, prompted, corrected), its new memory encoded
in one batch, and stored in its bank.

On CUDA the host never waits for the device inside a step but for three documented reads: selective storing's
presence (one .tolist() per step), relevance retrieval's similarities (one per step) and a discovery stream's
presence (one per step; its keyframes read the automatic masks' candidates, auto_masks.py). Host data reaches the device by non-blocking copies from pinned
memory and rows are picked without list indices (transfer.py); tests/test_fake_cuda.py checks this on a CPU.
"""

from dataclasses import dataclass
from typing import Sequence

import torch
from torch.profiler import record_function

from .discovery import DiscoveryConfig, DiscoveryState, propose_new_objects, update_missing
from .errors import PromptError, StateError
from .memory_bank import MemoryPolicy
from .memory_batch import build_memory_batch
from .memory_kv import MemoryKVBuffer, TemporalKeyTable, build_memory_kv
from .memory_policy_spec import policy_spec
from .memory_retrieval import frame_queries, retrieve
from .memory_write import encode_memories, new_bank, store_memory, worth_storing
from .postprocess import fill_holes
from .prompts import ModelPrompt, Prompt, check_frame, to_model_prompt
from .sam2 import Decoded, FrameFeatures, SAM2Model
from .state import TrackerState
from .transfer import take_rows, to_device

# DISCOVER: an object found on this frame by the automatic mask generator, joining with its mask as prompt.
TRACK, PROMPT, CORRECT, DISCOVER = "track", "prompt", "correct", "discover"
# Profiler ranges around each stage of a step (free when no profiler runs); "mask_decoder" encloses
# "memory_attention", so a profile's decoder time is the difference of the two.
STAGE_LABELS = {name: f"samstream.{name}" for name in
                ("image_encoder", "memory_attention", "mask_decoder", "memory_encoder", "discovery")}


@dataclass
class ObjectResult:
    mask: torch.Tensor  # (H, W) bool at the frame's native size
    logits: torch.Tensor  # (H, W) float32 mask logits at native size
    iou: torch.Tensor  # () predicted IoU
    object_score: torch.Tensor  # () probability that the object is present
    is_prompt: bool  # the frame carried a prompt for this object


@dataclass
class FrameResult:
    """All objects of one stream on one frame; tensors stay on the model's device."""

    frame_index: int
    object_ids: list[int]
    masks: torch.Tensor  # (O, H, W) bool
    logits: torch.Tensor  # (O, H, W) float32
    ious: torch.Tensor  # (O,)
    object_scores: torch.Tensor  # (O,) probabilities
    is_prompt: list[bool]

    def __getitem__(self, object_id: int) -> ObjectResult:
        i = self.object_ids.index(object_id)
        return ObjectResult(self.masks[i], self.logits[i], self.ious[i], self.object_scores[i], self.is_prompt[i])


@dataclass
class _Task:
    """One object's work on this frame."""

    stream: int  # index into this step's streams
    object_id: int
    kind: str  # TRACK, PROMPT or CORRECT
    prompt: ModelPrompt | None


class StreamingTracker:
    def __init__(self, model: SAM2Model, policy: MemoryPolicy | None = None, fill_hole_area: int | None = None,
                 autocast_dtype: torch.dtype | None | str = "auto", cache_memory_kv: bool = True,
                 discovery: DiscoveryConfig | None = None):
        self.model = model.eval()
        self.discovery = discovery or DiscoveryConfig()  # used by streams started with discover_from
        self.cfg = model.cfg
        self.policy = policy or MemoryPolicy()
        self.fill_hole_area = self.cfg.fill_hole_area if fill_hole_area is None else fill_hole_area
        # "auto": bf16 autocast on CUDA (as the reference runs), float32 on CPU (bit parity with it there);
        # torch.bfloat16 on a CPU with AVX512-BF16 trades the last bits for speed.
        if autocast_dtype == "auto":
            autocast_dtype = torch.bfloat16 if self.device.type == "cuda" else None
        if autocast_dtype not in (None, torch.bfloat16, torch.float16):
            raise ValueError(f"autocast_dtype must be None, torch.bfloat16 or torch.float16, got {autocast_dtype!r}")
        self.autocast_dtype = autocast_dtype
        self.static_shapes = False  # pad memory batches to the banks' capacity (set by compile)
        # Project each stored memory for memory attention once, not on every frame that attends to it
        # (memory_kv.py): faster, at 2 x layers x hw x 256 values per stored memory and object.
        self.cache_memory_kv = cache_memory_kv
        if self.policy.coarse_after and not cache_memory_kv:
            raise ValueError(f"coarse_after={self.policy.coarse_after} needs cache_memory_kv=True (coarse memories "
                             "are attended from their cached keys)")
        self._temporal_keys = TemporalKeyTable()
        self._kv_buffer = MemoryKVBuffer()  # one frame's memory keys and values, reused by the next

    def compile(self, backend: str = "inductor", mode: str | None = None) -> None:
        """torch.compile the hot step's modules (image encoder, memory attention, mask decoder, memory encoder)
        in place, with static shapes: memory batches are padded to the banks' capacity, so no new graph is
        compiled as a stream's memory fills (only per object count, prompt kind or point count)."""
        m = self.model
        # Memory attention's layers, not the module: the tracker calls its `attend`, which `compile` would miss.
        for module in (m.image_encoder, *m.memory_attention.layers, m.sam_mask_decoder, m.memory_encoder):
            module.compile(backend=backend, mode=mode, dynamic=False)
        self.static_shapes = True

    @property
    def device(self) -> torch.device:
        return self.model.pixel_mean.device

    def new_stream(self, height: int, width: int, start_frame: int = 0,
                   discover_from: int | None = None) -> TrackerState:
        """A stream whose first frame is `start_frame`; with `discover_from`, objects are also found
        automatically on keyframes and numbered from that id (ids below it are left to prompts)."""
        if height <= 0 or width <= 0:
            raise ValueError(f"frame size must be positive, got {height}x{width}")
        state = TrackerState(int(height), int(width), self.cfg.name, self.policy, int(start_frame))
        if discover_from is not None:
            state.discovery = DiscoveryState(int(start_frame), int(discover_from), int(discover_from))
        return state

    def remove_object(self, state: TrackerState, object_id: int) -> None:
        if object_id not in state.objects:
            raise StateError(f"object {object_id} is not tracked in this stream (objects: {state.object_ids})")
        del state.objects[object_id]

    def step(self, state: TrackerState, frame, prompts: Sequence[Prompt] = ()) -> FrameResult:
        return self.step_batch([state], [frame], [prompts])[0]

    @torch.inference_mode()
    def step_batch(self, states: Sequence[TrackerState], frames: Sequence,
                   prompts_per_stream: Sequence[Sequence[Prompt]]) -> list[FrameResult]:
        if not len(states) == len(frames) == len(prompts_per_stream):
            raise ValueError(f"{len(states)} states, {len(frames)} frames, {len(prompts_per_stream)} prompt lists")
        # Validate everything before touching any state: a bad input leaves every stream as it was.
        frames = [check_frame(f, s.height, s.width) for s, f in zip(states, frames)]
        for s in states:
            self.check_state(s)
        tasks = [t for i, (s, p) in enumerate(zip(states, prompts_per_stream)) for t in self._plan(i, s, p)]
        keyframes = [i for i, s in enumerate(states)
                     if s.discovery is not None and s.discovery.is_keyframe(s.frame_index, self.discovery.keyframe_every)]
        active = sorted({t.stream for t in tasks} | set(keyframes))
        decoded = low_res = None
        if active:
            with torch.autocast(self.device.type, dtype=self.autocast_dtype or torch.bfloat16,
                                enabled=self.autocast_dtype is not None):
                tasks, decoded, low_res = self._compute(frames, states, tasks, active, keyframes)
        results = [self._result(i, s, tasks, low_res, decoded) for i, s in enumerate(states)]
        for s, r in zip(states, results):
            if s.discovery is not None and r.object_ids:
                self._end_missing(s, r)
            s.frame_index += 1
        return results

    def _compute(self, frames, states, tasks: list[_Task], active: list[int], keyframes: list[int]):
        """Encode the active streams' frames, decode every task (and discover on keyframes), remember."""
        with record_function(STAGE_LABELS["image_encoder"]):
            images = torch.stack([self.model.preprocess(frames[i]) for i in active])  # (B, 3, S, S)
            feats = self.model.encode_frames(images)
        rows = to_device([active.index(t.stream) for t in tasks], self.device, torch.long)  # (N,) frame of each task
        decoded = low_res = None
        if tasks:
            with record_function(STAGE_LABELS["mask_decoder"]):
                decoded = self._decode(feats.select(rows), states, tasks)
                low_res = fill_holes(decoded.low_res, self.fill_hole_area)
        if keyframes:
            with record_function(STAGE_LABELS["discovery"]):
                tasks, rows, decoded, low_res = self._discover(feats, states, active, keyframes, tasks, rows,
                                                               decoded, low_res)
        if tasks:
            with record_function(STAGE_LABELS["memory_encoder"]):
                self._remember(feats.feat[rows], states, tasks, decoded, low_res)
        return tasks, decoded, low_res

    # ---- planning ---------------------------------------------------------------------------------
    def check_state(self, state: TrackerState) -> None:
        """A state (a snapshot's) steps only on the model and memory policy that made it: its banks are laid out
        for that policy, its memories are that model's."""
        if state.model_name != self.cfg.name:
            raise StateError(f"stream state was made by model {state.model_name!r}, this tracker runs "
                             f"{self.cfg.name!r}")
        if state.policy != self.policy:
            raise StateError(f"stream state was made with memory policy {policy_spec(state.policy)}, this "
                             f"tracker keeps {policy_spec(self.policy)}")
        grid = (self.cfg.mem_dim, self.cfg.feat_size, self.cfg.feat_size)  # the same preset at another image size
        for bank in state.objects.values():
            if bank.stores["cond"].item_shape != grid:
                raise StateError(f"stream state holds memories of {bank.stores['cond'].item_shape}, this tracker's "
                                 f"model makes {grid} (another image size?)")

    def _plan(self, stream: int, state: TrackerState, prompts: Sequence[Prompt]) -> list[_Task]:
        by_object: dict[int, ModelPrompt] = {}
        for p in prompts:
            if not isinstance(p, Prompt):
                raise PromptError(f"prompts must be Prompt objects, got {type(p).__name__}", None, p)
            mp = to_model_prompt(p, state.height, state.width, self.cfg.image_size, self.device)
            if mp.object_id in by_object:
                raise PromptError(f"object {mp.object_id} has two prompts on frame {state.frame_index}",
                                  mp.object_id, mp.object_id)
            if mp.correction and mp.object_id not in state.objects:
                raise PromptError(f"object {mp.object_id}: a correction needs a tracked object "
                                  f"(tracked: {state.object_ids})", mp.object_id, mp.object_id)
            by_object[mp.object_id] = mp
        tasks = []
        for oid in state.objects:
            p = by_object.pop(oid, None)
            kind = TRACK if p is None else (CORRECT if p.correction else PROMPT)
            tasks.append(_Task(stream, oid, kind, p))
        tasks += [_Task(stream, oid, PROMPT, p) for oid, p in by_object.items()]  # objects joining now
        return tasks

    # ---- decoding ---------------------------------------------------------------------------------
    def _decode(self, feats: FrameFeatures, states: Sequence[TrackerState], tasks: list[_Task]) -> Decoded:
        """Decode every task's object; returns one Decoded with rows in task order."""
        out: list[Decoded | None] = [None] * len(tasks)
        tracked = [i for i, t in enumerate(tasks) if t.kind == TRACK or (t.kind == CORRECT and t.prompt.mask is None)]
        if tracked:
            with record_function(STAGE_LABELS["memory_attention"]):
                fused = self._fuse(feats, states, tasks, tracked)
            first = self.model.decode(fused, [take_rows(x, tracked) for x in feats.high_res], None, None, None,
                                      self.cfg.multimask_for_tracking)
            for j, i in enumerate(tracked):
                out[i] = _row(first, j)
            corrections = [(j, i) for j, i in enumerate(tracked) if tasks[i].kind == CORRECT]
            for group in _by_points(corrections, lambda ji: tasks[ji[1]].prompt):
                js = [j for j, _ in group]
                prev = fill_holes(take_rows(first.low_res, js), self.fill_hole_area).clamp(-32.0, 32.0)
                high_res = [take_rows(x, [tracked[j] for j in js]) for x in feats.high_res]
                self._decode_points(take_rows(fused, js), high_res, [tasks[i].prompt for _, i in group], prev,
                                    [i for _, i in group], out)
        prompted = [i for i, t in enumerate(tasks) if t.kind == PROMPT and t.prompt.mask is None]
        for group in _by_points(prompted, lambda i: tasks[i].prompt):
            self._decode_points(self.model.without_memory(take_rows(feats.feat, group)),
                                [take_rows(x, group) for x in feats.high_res], [tasks[i].prompt for i in group], None,
                                group, out)
        masked = [i for i, t in enumerate(tasks) if t.kind != TRACK and t.prompt.mask is not None]
        if masked:
            mask = torch.stack([tasks[i].prompt.mask for i in masked])  # (N, 1, S, S)
            res = self.model.decode_mask_prompt(take_rows(feats.feat, masked),
                                                [take_rows(x, masked) for x in feats.high_res], mask)
            for j, i in enumerate(masked):
                out[i] = _row(res, j)
        return _cat(out)

    def _decode_points(self, feat, high_res, prompts: list[ModelPrompt], prev_logits, rows: list[int], out):
        points = torch.stack([p.points for p in prompts])  # (N, P, 2)
        labels = torch.stack([p.labels for p in prompts])  # (N, P)
        multimask = points.shape[1] <= self.cfg.multimask_max_pt_num
        res = self.model.decode(feat, high_res, points, labels, prev_logits, multimask)
        for j, i in enumerate(rows):
            out[i] = _row(res, j)

    def _fuse(self, feats: FrameFeatures, states, tasks, rows: list[int]) -> torch.Tensor:
        """Memory attention for the objects at `rows`, batched with padding."""
        banks = [states[tasks[i].stream].objects[tasks[i].object_id] for i in rows]
        frames = [states[tasks[i].stream].frame_index for i in rows]
        pad = [max(c) for c in zip(*(b.capacity(self.policy) for b in banks))] if self.static_shapes else (0, 0)
        feat, pos = take_rows(feats.feat, rows), take_rows(feats.pos, rows)
        retrieved = None
        if self.policy.retrieval_pool:
            retrieved = retrieve(self.model, self.policy, banks, frames, frame_queries(self.model, feat, pos))
        if self.cache_memory_kv:
            dtype = self.autocast_dtype or feats.feat.dtype  # the projections' dtype under autocast
            kv = build_memory_kv(self.model, banks, frames, self.policy, dtype, self._temporal_keys, *pad,
                                 buffer=self._kv_buffer, retrieved=retrieved)
            return self.model.fuse_with_memory_kv(feat, pos, kv.per_layer(), kv.bias)
        batch = build_memory_batch(self.model, banks, frames, self.policy, feats.feat.dtype, *pad,
                                   retrieved=retrieved)
        return self.model.fuse_with_memory(feat, pos, batch.memory, batch.memory_pos, batch.num_ptr_tokens,
                                           batch.bias)

    # ---- memory -----------------------------------------------------------------------------------
    def _remember(self, raw_feat: torch.Tensor, states, tasks: list[_Task], decoded: Decoded,
                  low_res: torch.Tensor) -> None:
        """Encode this frame's memory for every object and store it in its bank."""
        prompted = to_device([t.kind != TRACK for t in tasks], self.device)  # (N,) bool
        # Prompted frames are remembered as the user saw them: the (hole-filled) output, binarised.
        mask_in = torch.where(prompted[:, None, None, None], self.model.upsample(low_res), decoded.high_res)
        mems = encode_memories(self.model, raw_feat, mask_in, decoded.object_score_logits, prompted)
        keep = worth_storing(self.policy, decoded.object_score_logits)
        for j, t in enumerate(tasks):
            state = states[t.stream]
            if t.object_id not in state.objects:
                state.objects[t.object_id] = new_bank(self.model, self.policy, t.object_id, state.frame_index,
                                                      mems[j], decoded.obj_ptr[j], self.static_shapes)
            store_memory(state.objects[t.object_id], self.policy, state.frame_index, mems[j], decoded.obj_ptr[j],
                         t.kind in (PROMPT, DISCOVER), keep[j])

    def _result(self, stream: int, state: TrackerState, tasks: list[_Task], low_res, decoded) -> FrameResult:
        rows = [j for j, t in enumerate(tasks) if t.stream == stream]  # consecutive but for discovered objects
        H, W = state.height, state.width
        if not rows:
            empty = torch.zeros(0, device=self.device)
            return FrameResult(state.frame_index, [], torch.zeros(0, H, W, dtype=torch.bool, device=self.device),
                               torch.zeros(0, H, W, device=self.device), empty, empty, [])
        logits = torch.nn.functional.interpolate(take_rows(low_res, rows), size=(H, W), mode="bilinear",
                                                 align_corners=False)[:, 0]  # (O, H, W)
        scores = torch.sigmoid(take_rows(decoded.object_score_logits, rows)[:, 0])  # (O,)
        return FrameResult(state.frame_index, [tasks[j].object_id for j in rows], logits > 0, logits,
                           take_rows(decoded.iou, rows), scores, [tasks[j].kind in (PROMPT, CORRECT) for j in rows])

    # ---- discovery --------------------------------------------------------------------------------
    def _discover(self, feats: FrameFeatures, states, active: list[int], keyframes: list[int], tasks: list[_Task],
                  rows: torch.Tensor, decoded: Decoded, low_res: torch.Tensor):
        """Propose new objects on the keyframe streams and append them (decoded from their masks) to the
        step's tasks, so they are remembered and reported with the rest."""
        new_tasks, masks = [], []
        for i in keyframes:
            a = active.index(i)
            mine = [j for j, t in enumerate(tasks) if t.stream == i]
            S4 = self.cfg.image_size // 4
            live = take_rows(low_res, mine) if mine else torch.zeros(0, 1, S4, S4, device=self.device)
            found = propose_new_objects(self.model, self.discovery, feats.feat[a:a + 1],
                                        [x[a:a + 1] for x in feats.high_res], live, states[i].discovery,
                                        len(states[i].objects))
            new_tasks += [_Task(i, oid, DISCOVER, None) for oid in found.object_ids]
            masks.append(found.masks)
        if not new_tasks:
            return tasks, rows, decoded, low_res
        new_rows = to_device([active.index(t.stream) for t in new_tasks], self.device, torch.long)
        sel = feats.select(new_rows)
        found = self.model.decode_mask_prompt(sel.feat, sel.high_res, torch.cat(masks))
        if decoded is None:
            return new_tasks, new_rows, found, found.low_res
        return (tasks + new_tasks, torch.cat([rows, new_rows]), _cat([decoded, found]),
                torch.cat([low_res, found.low_res]))

    def _end_missing(self, state: TrackerState, result: "FrameResult") -> None:
        """End the discovered tracks absent for too long (one host read of the presence scores per frame)."""
        ended = update_missing(state.discovery, result.object_ids, result.object_scores.float().tolist(),
                               self.discovery.max_missing)
        for oid in ended:
            del state.objects[oid]


def _row(d: Decoded, j: int) -> Decoded:
    return Decoded(d.low_res[j:j + 1], d.high_res[j:j + 1], d.iou[j:j + 1], d.obj_ptr[j:j + 1],
                   d.object_score_logits[j:j + 1])


def _cat(rows: list[Decoded]) -> Decoded:
    return Decoded(*(torch.cat([getattr(r, f) for r in rows]) for f in ("low_res", "high_res", "iou", "obj_ptr",
                                                                        "object_score_logits")))


def _by_points(items: list, prompt_of) -> list[list]:
    """Group items by prompt point count: the decoder batches prompts of equal length only."""
    groups: dict[int, list] = {}
    for item in items:
        groups.setdefault(prompt_of(item).num_points, []).append(item)
    return list(groups.values())

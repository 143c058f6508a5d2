"""State bytes per object of memory policies at an official preset's shapes, counted from real banks.

A bank is allocated with every slot a policy can fill (ObjectMemory.allocate(preallocate=True): what a long
video reaches) for one prompted frame, at the memory shapes of `--preset` at `--image-size` (all official
presets: 64 channels, a 64 x 64 grid at 1024 px, pointers of 256, 15 recent pointers, 4 memory-attention
layers). "stored" is what TrackerState.nbytes counts and snapshots carry; "resident" adds the key/value
cache memory_kv.py keeps per spatial memory (2 x layers x tokens x 256 values, in the attention's dtype:
bf16 on CUDA, float32 on CPU; int8 plus a float32 scale per channel with --int8-memory).

    python -m benchmarks.memory_state_bytes [--preset sam2.1-tiny] [--image-size 1024] [--row NAME=SPEC ...]
"""

from __future__ import annotations

import argparse
import sys

import torch

from benchmarks.memory_policies import parse_policy_spec, parse_rows
from model import MemoryPolicy, get_config
from model.memory_bank import SPATIAL_STORES, ObjectMemory

DEFAULT_ROWS = ("num_recent=4", "default", "num_recent=8", "num_recent=12", "num_recent=16", "num_recent=32",
                "int8=true", "num_recent=16,coarse_after=4", "num_recent=6,retrieval_pool=32,retrieval_topk=4",
                "num_recent=6,retrieval_pool=32,retrieval_topk=4,coarse_after=2,int8=true")


def full_bank(policy: MemoryPolicy, preset: str, image_size: int) -> ObjectMemory:
    cfg = get_config(preset, image_size)
    num_ptrs = cfg.max_obj_ptrs - 1 if policy.num_recent else 0
    bank = ObjectMemory.allocate(1, 0, policy, num_ptrs, (cfg.mem_dim, cfg.feat_size, cfg.feat_size),
                                 cfg.d_model, torch.device("cpu"), preallocate=True)
    # One prompted frame, as most objects have: the cond stores hold what is used.
    for name in ("cond", "cond_ptrs"):
        st = bank.stores[name]
        st.data, st.frames = st.data[:1], st.frames[:1]
        if st.scales is not None:
            st.scales = st.scales[:1]
    return bank


def state_bytes(policy: MemoryPolicy, preset: str, image_size: int) -> dict[str, int]:
    """{"stored", "resident_bf16", "resident_fp32"} bytes of one object's full bank."""
    cfg = get_config(preset, image_size)
    bank = full_bank(policy, preset, image_size)
    stored = sum(t.numel() * t.element_size() for t in bank.tensors().values())
    # Spatial memories attended at once: every slot but the pool's, of which top-k are read (and cached).
    tokens = sum(len(bank.stores[n].frames) * bank.tokens(n) for n in SPATIAL_STORES if n != "pool")
    tokens += policy.retrieval_topk * bank.tokens("pool") if policy.retrieval_pool else 0
    values = 2 * cfg.memory_attention_layers * tokens * cfg.d_model  # keys and values, every layer
    scales = 2 * cfg.memory_attention_layers * cfg.d_model * 4  # per cached memory, per channel
    n_cached = sum(len(bank.stores[n].frames) for n in SPATIAL_STORES if n != "pool") + policy.retrieval_topk
    cache = {b: values + n_cached * scales if policy.int8 else values * b for b in (2, 4)}
    return {"stored": stored, "resident_bf16": stored + cache[2], "resident_fp32": stored + cache[4]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.memory_state_bytes", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="sam2.1-tiny")
    ap.add_argument("--image-size", type=int, default=1024)
    ap.add_argument("--row", action="append", default=[], help="NAME=SPEC (benchmarks.memory_policies' spelling)")
    args = ap.parse_args(argv)
    rows = parse_rows(args.row, []) if args.row else {r: parse_policy_spec(r) for r in DEFAULT_ROWS}
    base = state_bytes(MemoryPolicy(), args.preset, args.image_size)
    print(f"| policy ({args.preset}, {args.image_size} px) | stored MiB | x default | resident MiB, bf16 cache "
          "| resident MiB, fp32 cache | x default (fp32) |\n|---|---|---|---|---|---|")
    for name, policy in rows.items():
        b = state_bytes(policy, args.preset, args.image_size)
        print(f"| {name} | {b['stored'] / 2**20:.2f} | {b['stored'] / base['stored']:.2f} | "
              f"{b['resident_bf16'] / 2**20:.1f} | {b['resident_fp32'] / 2**20:.1f} | "
              f"{b['resident_fp32'] / base['resident_fp32']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

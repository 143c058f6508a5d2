"""The memory policy's command-line options, one spelling for every job that tracks (segment, pseudo_label,
benchmark)."""

import argparse

from model import MemoryPolicy
from model.memory_policy_spec import PolicySpecError, parse_policy_spec, policy_spec


def add_memory_args(ap: argparse.ArgumentParser, segment: bool) -> None:
    """MemoryPolicy's options as flags; `segment`: jobs.segment, whose --keyframe-every is the memory's (in
    jobs.pseudo_label that flag is its discovery keyframes')."""
    g = ap.add_argument_group("memory policy (defaults: the reference's)")
    g.add_argument("--memory-policy", default=None, metavar="SPEC",
                   help="the whole policy as reports and errors spell it: 'default' or MemoryPolicy field=value "
                        "pairs, e.g. num_recent=16,int8=true (instead of the flags below)")
    g.add_argument("--num-recent", type=int, default=6, help="recent frames kept (0..32; default: %(default)s)")
    g.add_argument("--max-cond", type=int, default=16, help="prompted frames kept (default: %(default)s)")
    g.add_argument("--decay", type=float, default=0.0,
                   help="temporal decay lambda: attention to a recent memory dt frames old is weighted "
                        "exp(-lambda*dt)")
    g.add_argument("--store-threshold", type=float, default=None,
                   help="selective storing: remember a tracked frame only when the object's presence probability "
                        "is at least this; the N most recent remembered frames are kept (default: every frame)")
    g.add_argument("--num-keyframes", type=int, default=0,
                   help="long-term keyframes kept beside the recent frames (default 0: none, as the reference)")
    flags = ["--memory-keyframe-every"] + (["--keyframe-every"] if segment else [])
    g.add_argument(*flags, dest="memory_keyframe_every", type=int, default=8,
                   help="a remembered frame every this many frames after an object's first becomes a long-term "
                        "memory keyframe")
    g.add_argument("--retrieval-pool", type=int, default=0,
                   help="relevance retrieval: frames leaving the recent ring are kept in a pool of this many "
                        "(0..64; default 0: none)")
    g.add_argument("--retrieval-topk", type=int, default=0,
                   help="pool memories each frame attends to: the most similar to it (needs --retrieval-pool)")
    g.add_argument("--coarse-after", type=int, default=0,
                   help="hierarchical storage: only the newest this many recent frames at full resolution, older "
                        "memories (and keyframes, the pool) at half (default 0: all full)")
    g.add_argument("--int8-memory", action="store_true",
                   help="keep memories, object pointers and cached keys/values in int8 with per-channel scales")


def policy_from_args(args: argparse.Namespace) -> MemoryPolicy:
    """The typed policy, from --memory-policy or the separate flags; a bad value raises ValueError naming it."""
    try:
        flags = MemoryPolicy(args.num_recent, args.max_cond, args.decay, args.store_threshold, args.num_keyframes,
                             args.memory_keyframe_every, args.retrieval_pool, args.retrieval_topk, args.coarse_after,
                             args.int8_memory)
    except ValueError as e:
        raise ValueError(f"memory policy: {e}") from None
    if args.memory_policy is None:
        return flags
    if flags != MemoryPolicy():
        raise ValueError(f"--memory-policy {args.memory_policy!r} and the flags for {policy_spec(flags)} both set "
                         "the memory policy: give one")
    try:
        return parse_policy_spec(args.memory_policy)
    except PolicySpecError as e:
        raise ValueError(f"--memory-policy: {e}") from None

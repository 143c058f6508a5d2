"""Host (CPU) work per frame of a StreamWorker at 1080p with 10 objects: how many cores keep one GPU fed?

Per frame the actor's host decodes the frame (VideoSource: PyAV on a prefetch thread), receives the masks
(on CUDA: a pinned, non-blocking copy one frame late), RLE-encodes them into ChunkRows, and at the chunk's end
serialises one Parquet part. Each stage is timed through the actor's own functions, on ONE core
(sched_setaffinity to one CPU, torch.set_num_threads(1), the decoder's threads set to 1, and also FFmpeg's
default threads on that core), then the decode again with FFmpeg's default threads on every core this process
may use. "before" is the pycocotools path (ChunkRows.add on the masks: encode_masks); "after" is the actor's
path now (workers.mask_runs: change bits where the masks are, runs on the host). Cores per GPU = host ms per
frame / GPU ms per frame (published SAM 2.1 A100 speeds: tiny 91 FPS, base-plus 64 FPS), times the GPU's
gain from batching B streams; and since the actor encodes every stream's frame on its main thread, that
thread's ms per batched step against the GPU's.

    python -m benchmarks.host_side [--frames 128] [--objects 10] [--repeats 5] [--chunk 64] --out out/host_side

Writes <out>/host_side.json and <out>/host_side.md (and caches the encoded video there), prints the table.
The content: a textured background under a panning camera, 10 textured silhouettes (model.synthetic.shapes,
radii 6-35% of the height) moving, turning and deforming, sensor noise, H.264 at 8 Mbit/s (a typical 1080p30
camera or streaming rate); the masks are the silhouettes' true masks. Figures are CPU time of this process
(all its threads), not wall time, since the machines are shared: the median of --repeats runs, min and max.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import av
import numpy as np
import torch

from model.synthetic import shapes
from workers.host_allocator import tune_host_allocator
from workers.mask_runs import change_bits, encode_change_bits
from workers.masklets import ChunkRows, _parquet_bytes, _part_table, encode_masks
from workers.stream_worker import _to_host
from workers.video_source import VideoSource, probe_video

GPU_FPS = {"sam2.1-tiny": 91.0, "sam2.1-base-plus": 64.0}  # published, one A100, B=1
BATCH_GAIN = (1, 2, 4)  # the GPU's aggregate frames/s with B streams per actor, relative to B=1 (B=8/16: 2-4x)
BATCHES = ((1, 1), (8, 2), (16, 4))  # (B streams per actor, gain): for the actor's main thread per step
CONTENT = "shapes1"  # names the cached video: change it with anything that changes the rendered frames


@dataclass(frozen=True)
class Config:
    height: int = 1080  # px of the video and of every mask
    width: int = 1920
    objects: int = 10  # tracked objects: masks per frame
    frames: int = 128  # frames of the encoded video (decode stage)
    chunk: int = 64  # frames per part file (the actor's default chunk): RLE and Parquet stages
    fps: int = 30
    bitrate: int = 8_000_000  # bit/s of the H.264 encode
    gop: int = 60  # frames between keyframes
    repeats: int = 5  # runs of each stage; figures are medians
    seed: int = 0


# ---------------------------------------------------------------------------------------------- content


@dataclass(frozen=True)
class _Mover:
    sprite: shapes.Sprite
    start: np.ndarray  # (x, y) px at frame 0
    velocity: np.ndarray  # px / frame
    radii: tuple[float, float]  # px along the object's own axes
    spin: float  # rad / frame


def _movers(rng: np.random.Generator, cfg: Config) -> list[_Mover]:
    """Silhouettes from small (~0.2% of the frame) to large (~10%), spread over the frame."""
    side = np.geomspace(0.06, 0.35, cfg.objects) * cfg.height  # radius, px
    out = []
    for r in rng.permutation(side):
        sprite = shapes.Sprite(shapes.make_shape(rng), shapes.make_wobble(rng), shapes.make_texture(rng), 12.0)
        start = rng.uniform([0.1 * cfg.width, 0.1 * cfg.height], [0.9 * cfg.width, 0.9 * cfg.height])
        out.append(_Mover(sprite, start, rng.uniform(-6, 6, 2), (float(r), float(r * rng.uniform(0.5, 0.9))),
                          float(rng.uniform(-0.03, 0.03))))
    return out


def _bounce(p: np.ndarray, size: np.ndarray) -> np.ndarray:
    """Positions moving freely, folded back into [0, size] (objects bounce off the frame's edges)."""
    q = np.mod(p, 2 * size)
    return np.where(q > size, 2 * size - q, q)


def render(cfg: Config, t: int, background: np.ndarray, movers: list[_Mover], noise: np.ndarray):
    """Frame t: (H, W, 3) uint8 RGB and (H, W) uint8 owner map (0 background, i + 1 object i)."""
    h, w = cfg.height, cfg.width
    dy, dx = int(40 + 30 * np.sin(t / 40)), 2 * t % (background.shape[1] - w)  # camera pan
    img = background[dy:dy + h, dx:dx + w].copy()
    owner = np.zeros((h, w), np.uint8)
    for i, m in enumerate(movers):
        x, y = _bounce(m.start + t * m.velocity, np.array([w, h], np.float64))
        amps = 0.06 * np.array([np.sin(t / 7 + i), np.cos(t / 11 + i)])
        shapes.draw_sprite(img, owner, i + 1, m.sprite, x, y, m.spin * t + i, *m.radii, amps)
    return np.clip(img + noise[t % len(noise)], 0, 255).astype(np.uint8), owner


def make_content(cfg: Config, video: Path) -> list[np.ndarray]:
    """Encode the video (unless `video` holds it already) and return the first cfg.chunk owner maps."""
    rng = np.random.default_rng(cfg.seed)
    background = shapes.background_image(rng, cfg.height + 100, cfg.width + 2 * cfg.frames + 1)
    movers = _movers(rng, cfg)
    noise = rng.normal(0, 3, (8, cfg.height, cfg.width, 3)).astype(np.float32)  # sensor grain, cycled
    if video.exists():  # the same config renders the same frames: only the masks are needed
        return [render(cfg, t, background, movers, noise)[1] for t in range(cfg.chunk)]
    video.parent.mkdir(parents=True, exist_ok=True)
    partial, owners = video.with_suffix(".partial.mp4"), []
    with av.open(str(partial), "w") as container:
        stream = container.add_stream("libx264", rate=cfg.fps)
        stream.height, stream.width, stream.pix_fmt = cfg.height, cfg.width, "yuv420p"
        stream.options = {"b": str(cfg.bitrate), "maxrate": str(cfg.bitrate), "bufsize": str(2 * cfg.bitrate),
                          "preset": "veryfast", "x264-params": f"keyint={cfg.gop}:min-keyint={cfg.gop}:bframes=2"}
        for t in range(cfg.frames):
            img, owner = render(cfg, t, background, movers, noise)
            owners += [owner] if t < cfg.chunk else []
            container.mux(stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        container.mux(stream.encode())
    partial.rename(video)  # a run cut short never leaves a video to reuse
    return owners


def masks_of(owner: np.ndarray, objects: int) -> np.ndarray:
    """(O, H, W) bool: object i's mask is where the owner map says i + 1."""
    return owner[None] == np.arange(1, objects + 1, dtype=np.uint8)[:, None, None]


# ---------------------------------------------------------------------------------------------- stages


def _stats(ms: list[float]) -> dict:
    return {"median": float(np.median(ms)), "min": float(np.min(ms)), "max": float(np.max(ms))}


def _cpu() -> float:
    """CPU seconds of this process, all threads: what a core does for us, whoever else shares it (the
    machines are shared: wall time on a busy core counts the others' work too)."""
    return time.process_time()


def time_decode(info, cfg: Config, threads: int) -> dict:
    """ms per frame of reading every frame through VideoSource(...).frames(...) as the actor does: wall, and
    CPU (process time: the prefetch thread and the decoder's threads included)."""
    wall, cpu = [], []
    for _ in range(cfg.repeats):
        w0, c0 = time.perf_counter(), _cpu()
        n = sum(1 for _ in VideoSource(info, threads=threads).frames(0, info.num_frames))
        wall.append((time.perf_counter() - w0) * 1e3 / n)
        cpu.append((_cpu() - c0) * 1e3 / n)
    return {"wall": _stats(wall), "cpu": _stats(cpu), "threads": threads}


def same_pixels(info) -> bool:
    """The decoder's threads change nothing: every frame identical with 1 thread and with FFmpeg's default."""
    one, auto = VideoSource(info, threads=1).frames(0, info.num_frames), VideoSource(info).frames(0, info.num_frames)
    return all(np.array_equal(a, b) for a, b in zip(one, auto, strict=True))


def _frame_inputs(cfg: Config, t: int):
    ids = list(range(1, cfg.objects + 1))
    return ids, np.full(cfg.objects, 0.9, np.float32), np.full(cfg.objects, 0.99, np.float32), t / cfg.fps


def time_masks(owners: list[np.ndarray], cfg: Config) -> tuple[dict, ChunkRows]:
    """CPU ms per frame of each host step from the step's masks to the chunk's rows, before and after."""
    steps = ("to_host", "encode_masks", "change_bits", "encode_change_bits", "rows_add")
    ms = {k: [] for k in steps}
    for rep in range(cfg.repeats):
        spent, rows = dict.fromkeys(steps, 0.0), ChunkRows("v")
        reference = ChunkRows("v") if rep == 0 else None
        for t, owner in enumerate(owners):
            masks = masks_of(owner, cfg.objects)  # the tracker's (O, H, W) bool result (not timed)
            ids, ious, scores, time_s = _frame_inputs(cfg, t)
            t0 = _cpu()
            on_host = _to_host(torch.from_numpy(masks))  # CPU: the tensor itself
            t1 = _cpu()
            encode_masks(on_host.numpy())
            t2 = _cpu()
            bits = _to_host(change_bits(torch.from_numpy(masks)))  # on CUDA: the GPU's part
            t3 = _cpu()
            encoded = encode_change_bits(bits.numpy(), cfg.height, cfg.width)
            t4 = _cpu()
            rows.add(t, time_s, ids, encoded, ious, scores)
            t5 = _cpu()
            for k, dt in zip(steps, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4)):
                spent[k] += dt
            if reference is not None:  # the old actor path, on the same masks
                reference.add(t, time_s, ids, on_host.numpy(), ious, scores)
        if reference is not None and not reference.to_table().equals(rows.to_table()):
            raise AssertionError("the change-bits path made a different table from encode_masks")
        for k in steps:
            ms[k].append(spent[k] * 1e3 / len(owners))
    return {k: _stats(v) for k, v in ms.items()}, rows


def time_parquet(rows: ChunkRows, cfg: Config, frames: int) -> dict:
    """CPU ms per frame of a chunk's end (ChunkRows.to_table + the part's Parquet bytes), amortised over its
    frames."""
    ms, size = [], 0
    for _ in range(cfg.repeats):
        t0 = _cpu()
        size = len(_parquet_bytes(_part_table("v", rows.to_table())))
        ms.append((_cpu() - t0) * 1e3 / frames)
    return {"ms": _stats(ms), "part_bytes_per_frame": size / frames}


def gil_held(fn, inputs: list, repeats: int) -> dict:
    """Share of `fn`'s time during which it holds the GIL for over 1 ms at a stretch (so no other Python thread
    runs: what a thread pool cannot overlap), seen by a Python thread that keeps asking for the GIL (every
    0.2 ms) and notes every wait over 1 ms; with its ms per call meanwhile. "idle_share": the same while this
    thread sleeps instead, i.e. waits that are other processes taking the core (subtract it)."""
    held, idle, ms = [], [], []
    switch = sys.getswitchinterval()
    sys.setswitchinterval(2e-4)
    try:
        for _ in range(repeats):
            seconds = _watched(lambda: [fn(x) for x in inputs])
            held.append(seconds[0])
            ms.append(seconds[1] * 1e3 / len(inputs))
            idle.append(_watched(lambda: time.sleep(seconds[1]))[0])
    finally:
        sys.setswitchinterval(switch)
    return {"held_share": _stats(held), "idle_share": _stats(idle), "ms_per_call": _stats(ms)}


def _watched(work) -> tuple[float, float]:
    """(share of its wall time a watching Python thread waited over 1 ms at a stretch, wall seconds) of work()."""
    stop, waits = threading.Event(), [0.0]
    watcher = threading.Thread(target=_watch, args=(stop, waits))
    watcher.start()
    time.sleep(0.005)
    t0 = time.perf_counter()
    work()
    wall = time.perf_counter() - t0
    stop.set()
    watcher.join()
    return waits[0] / wall, wall


def _watch(stop: threading.Event, waits: list) -> None:
    last = time.perf_counter()
    while not stop.is_set():
        now = time.perf_counter()
        if now - last > 1e-3:
            waits[0] += now - last
        last = now


# ---------------------------------------------------------------------------------------------- run, report


def measure(cfg: Config, out: Path) -> dict:
    video = out / (f"{CONTENT}-{cfg.width}x{cfg.height}-{cfg.frames}f-{cfg.objects}o-{cfg.bitrate}bps-gop{cfg.gop}-"
                   f"s{cfg.seed}.mp4")
    owners = make_content(cfg, video)
    info = probe_video(str(video))
    cpus = sorted(os.sched_getaffinity(0))
    tune_host_allocator()  # as StreamWorker does
    torch.set_num_threads(1)
    os.sched_setaffinity(0, {cpus[0]})  # threads started from here on (prefetch, decoder) inherit it
    try:
        decode_one = time_decode(info, cfg, threads=1)
        decode_one_auto = time_decode(info, cfg, threads=0)
        masks, rows = time_masks(owners, cfg)
        parquet = time_parquet(rows, cfg, len(owners))
    finally:
        os.sched_setaffinity(0, set(cpus))
    decode_all = time_decode(info, cfg, threads=0)
    stack = [masks_of(o, cfg.objects) for o in owners[:4]] * 4
    bits = [change_bits(torch.from_numpy(m)).numpy() for m in stack] * 4
    gil = {"encode_masks": gil_held(encode_masks, stack, cfg.repeats),
           "encode_change_bits": gil_held(lambda b: encode_change_bits(b, cfg.height, cfg.width), bits,
                                          cfg.repeats)} if len(cpus) > 1 else None
    wp = -(-cfg.width // 8)
    return {"config": asdict(cfg), "content": _mask_facts(stack[:4], bits[:4], cfg), "machine": _machine(len(cpus)),
            "video": _video_facts(video, info), "same_pixels_any_threads": same_pixels(info),
            "decode_one_core": decode_one,
            "decode_one_core_ffmpeg_threads": decode_one_auto, "decode_all_cores": decode_all, "masks": masks,
            "parquet": parquet, "gil": gil,
            "bytes_to_host_per_frame": {"before": cfg.objects * cfg.height * cfg.width,
                                        "after": cfg.objects * cfg.height * wp}}


def _mask_facts(stack: list[np.ndarray], bits: list[np.ndarray], cfg: Config) -> dict:
    """How big the objects are (share of the frame) and how many runs a frame's masks make."""
    share = np.concatenate([m.reshape(cfg.objects, -1).mean(1) for m in stack])
    runs = np.mean([np.unpackbits(b).sum() for b in bits])
    return {"object_area_percent": {"min": float(share.min() * 100), "median": float(np.median(share) * 100),
                                    "max": float(share.max() * 100)}, "run_starts_per_frame": float(runs)}


def _machine(cores: int) -> dict:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    return {"date": time.strftime("%Y-%m-%d %H:%M"), "cpu": model, "cores": cores,
            "python": platform.python_version(), "torch": torch.__version__, "av": av.__version__}


def _video_facts(video: Path, info) -> dict:
    mbps = video.stat().st_size * 8 / (info.num_frames / info.fps) / 1e6
    return {"file": video.name, "frames": info.num_frames, "size": f"{info.width}x{info.height}",
            "codec": info.codec, "mbit_per_s": round(mbps, 2)}


def totals(r: dict) -> dict:
    """Host ms per frame (one core) of a CUDA actor before and after, and of a CPU actor after."""
    m = {k: v["median"] for k, v in r["masks"].items()}
    common = r["decode_one_core"]["cpu"]["median"] + m["to_host"] + m["rows_add"] + r["parquet"]["ms"]["median"]
    after = common + m["encode_change_bits"]
    return {"before": common + m["encode_masks"], "after": after, "after_cpu_actor": after + m["change_bits"]}


def cores_per_gpu(host_ms: float) -> dict:
    """{model: {batch gain: cores}}: host core-ms per frame x the GPU's frames per second."""
    return {model: {g: host_ms * fps * g / 1e3 for g in BATCH_GAIN} for model, fps in GPU_FPS.items()}


def main_thread(r: dict) -> dict:
    """Per batched step: the actor's main thread encodes every stream's frame in turn (_encode_pending), while the
    GPU runs the next step; {model: {B: (main-thread ms before, after, GPU ms)}}. Decoding is off this thread."""
    m = {k: v["median"] for k, v in r["masks"].items()}
    per_frame = m["to_host"] + m["rows_add"] + r["parquet"]["ms"]["median"]
    return {model: {b: (b * (per_frame + m["encode_masks"]), b * (per_frame + m["encode_change_bits"]),
                        b * 1e3 / fps / gain) for b, gain in BATCHES} for model, fps in GPU_FPS.items()}


def _cell(s: dict) -> str:
    return f"{s['median']:.2f} ({s['min']:.2f}-{s['max']:.2f})"


def markdown(r: dict) -> str:
    cfg, a = r["config"], r["content"]["object_area_percent"]
    head = (f"{cfg['width']}x{cfg['height']} H.264 ({r['video']['mbit_per_s']} Mbit/s, {r['video']['frames']} "
            f"frames), {cfg['objects']} objects covering {a['min']:.2f}-{a['max']:.1f}% of the frame each (median "
            f"{a['median']:.1f}%), {r['content']['run_starts_per_frame']:.0f} runs a frame in all. CPU ms per frame "
            f"(this process's CPU time, all its threads), median (min-max) of {cfg['repeats']} runs; pinned to one "
            f"core unless said.")
    return "\n".join([head, "", *_stage_table(r), "", *_cores_tables(r), "", *_facts(r)]) + "\n"


def _stage_table(r: dict) -> list[str]:
    m, t, n = r["masks"], totals(r), r["machine"]["cores"]
    dec1, dec1a, deca = r["decode_one_core"], r["decode_one_core_ffmpeg_threads"], r["decode_all_cores"]
    return [
        "| stage | before | after |", "|---|---|---|",
        f"| decode, 1 decoder thread, pinned to one core | {_cell(dec1['cpu'])} | same |",
        f"| decode, FFmpeg's default threads, pinned to one core | {_cell(dec1a['cpu'])} | same |",
        f"| decode, FFmpeg's default threads on {n} cores: CPU ms | {_cell(deca['cpu'])} | same |",
        f"| decode, FFmpeg's default threads on {n} cores: wall ms | {_cell(deca['wall'])} | same |",
        f"| masks to host (`_to_host`; on CPU the tensor itself) | {_cell(m['to_host'])} | same |",
        f"| change bits (`change_bits`: the GPU's work on CUDA, the host's on a CPU actor) | - | "
        f"{_cell(m['change_bits'])} |",
        f"| RLE (`encode_masks` / `encode_change_bits`) | {_cell(m['encode_masks'])} | "
        f"{_cell(m['encode_change_bits'])} |",
        f"| rows (`ChunkRows.add`) | {_cell(m['rows_add'])} | same |",
        f"| Parquet (`to_table` + part bytes, per frame of a {r['config']['chunk']}-frame chunk) | "
        f"{_cell(r['parquet']['ms'])} | same |",
        f"| **host total, CUDA actor** (decode with 1 thread) | **{t['before']:.2f}** | **{t['after']:.2f}** |",
        f"| host total, CPU actor | {t['before']:.2f} | {t['after_cpu_actor']:.2f} |"]


def _cores_tables(r: dict) -> list[str]:
    t = totals(r)
    before, after = cores_per_gpu(t["before"]), cores_per_gpu(t["after"])
    gains = " / ".join(f"{g}x" for g in BATCH_GAIN)
    lines = [f"| GPU | GPU ms/frame | cores per GPU before, GPU gain {gains} | after |", "|---|---|---|---|"]
    for model, fps in GPU_FPS.items():
        cells = [" / ".join(f"{c[model][g]:.2f}" for g in BATCH_GAIN) for c in (before, after)]
        lines.append(f"| {model} ({fps:.0f} FPS) | {1e3 / fps:.1f} | {cells[0]} | {cells[1]} |")
    lines += ["", "| GPU | B (GPU gain) | GPU ms/step | actor main thread ms/step, before | after |",
              "|---|---|---|---|---|"]
    for model, per_b in main_thread(r).items():
        for (b, gain), (old, new, gpu) in zip(BATCHES, per_b.values()):
            lines.append(f"| {model} | {b} ({gain}x) | {gpu:.1f} | {old:.1f} | {new:.1f} |")
    return lines


def _facts(r: dict) -> list[str]:
    b, tiny = r["bytes_to_host_per_frame"], GPU_FPS["sam2.1-tiny"]
    lines = [f"Device to host per frame on CUDA: {b['before'] / 1e6:.1f} MB of bool masks before, "
             f"{b['after'] / 1e6:.2f} MB of change bits after ({b['before'] / 1e9 * tiny:.2f} vs "
             f"{b['after'] / 1e9 * tiny:.2f} GB/s at {tiny:.0f} FPS). Parquet part: "
             f"{r['parquet']['part_bytes_per_frame'] / 1e3:.1f} kB per frame. Decoded pixels identical with 1 and "
             f"default decoder threads: {r['same_pixels_any_threads']}."]
    if r["gil"]:
        g, e = r["gil"]["encode_masks"], r["gil"]["encode_change_bits"]
        lines.append(f"GIL, beside a busy Python thread on {r['machine']['cores']} cores: share of the time it "
                     f"holds the GIL in stretches over 1 ms (the same measure while sleeping, i.e. other processes' "
                     f"share, in brackets): encode_masks {g['held_share']['median']:.0%} "
                     f"({g['idle_share']['median']:.0%}), {g['ms_per_call']['median']:.1f} ms a frame meanwhile; "
                     f"encode_change_bits {e['held_share']['median']:.0%} ({e['idle_share']['median']:.0%}), "
                     f"{e['ms_per_call']['median']:.1f} ms a frame meanwhile.")
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.host_side", description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=Config.frames)
    ap.add_argument("--objects", type=int, default=Config.objects)
    ap.add_argument("--chunk", type=int, default=Config.chunk)
    ap.add_argument("--repeats", type=int, default=Config.repeats)
    ap.add_argument("--out", default="out/host_side")
    args = ap.parse_args(argv)
    cfg = Config(frames=args.frames, objects=args.objects, chunk=min(args.chunk, args.frames), repeats=args.repeats)
    out = Path(args.out)
    result = measure(cfg, out)
    result["totals"] = totals(result)
    result["cores_per_gpu"] = {k: cores_per_gpu(v) for k, v in result["totals"].items()}
    result["main_thread_ms_per_step"] = main_thread(result)
    (out / "host_side.json").write_text(json.dumps(result, indent=2) + "\n")
    text = markdown(result)
    (out / "host_side.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

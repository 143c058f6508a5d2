"""The benchmark job: samstream against the reference predictor (PyPI `sam2`), frames/s and memory.

    python -m jobs.benchmark --help

One concept per module: config (BenchmarkConfig), cli (arguments -> config, main), reference (building and
running the reference; the tests build their oracle with it too), scene (the generated frames and prompts),
measure (our tracker's runs and stage profiles), memory (peaks), bench (one in-process run), probe (a
measurement in a fresh process), job (the segment job and memory against length; Ray, PyAV and pycocotools
are imported there only), report (Parquet, markdown, plot).
"""


def main(argv=None) -> int:
    """`python -m jobs.benchmark`; imported on call, so `jobs.benchmark.reference` stays a light import."""
    from .cli import main as cli_main

    return cli_main(argv)

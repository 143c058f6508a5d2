"""`python -m jobs.benchmark`: see jobs/benchmark/__init__.py."""

import sys

from .cli import main

if __name__ == "__main__":  # importing the module (tests walk every package) must not run the benchmark
    sys.exit(main())

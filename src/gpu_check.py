"""The GPU path on a real GPU, in one call: `python src/gpu_check.py [--help]` (= make
gpu-check); the stages are in cnnlab_bench/gpu_check.py."""

import sys

from cnnlab_bench.gpu_check import main

if __name__ == "__main__":
    sys.exit(main())

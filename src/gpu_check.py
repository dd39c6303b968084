"""The GPU path on a real GPU, in one call: `python src/gpu_check.py [--help]` (= make
gpu-check); the stages are in cnnlab_bench/gpu_check.py."""

import sys
from pathlib import Path

from cnnlab.process_setup import set_up_process
from cnnlab_bench.gpu_check import main

if __name__ == "__main__":
    set_up_process(Path(__file__).resolve().parents[1])
    sys.exit(main())

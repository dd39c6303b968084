"""Benchmark cnnlab's pipeline against a bare PyTorch loop: `python src/bench.py [--help]`;
the benchmark is the package cnnlab_bench, beside cnnlab."""

from pathlib import Path

from cnnlab.process_setup import set_up_process
from cnnlab_bench.command import main

if __name__ == "__main__":
    set_up_process(Path(__file__).resolve().parents[1])
    main()

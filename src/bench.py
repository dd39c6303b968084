"""Benchmark cnnlab's pipeline against a bare PyTorch loop: `python src/bench.py [--help]`;
the benchmark is the package cnnlab_bench, beside cnnlab."""

from cnnlab_bench.command import main

if __name__ == "__main__":
    main()

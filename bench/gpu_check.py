"""`make gpu-check`: the GPU path's checks and speed targets, on any CUDA machine, in 8 minutes.

What it measures and how it judges: harness/bench/gpu_check.py. Writes
bench/results/gpu-check-<date>.json and prints a one-screen summary; exit 1 when a step failed,
2 without a CUDA device, 0 otherwise (a missed target is a finding, not an error).
"""

import sys

from harness.bench.gpu_check import main

sys.exit(main(sys.argv[1:]))

"""``harness bench``: speed, measured side by side in one run, reported as ratios.

:mod:`harness.bench.throughput` compares the harness's training epoch with the reference's
pipeline and with the bare model step, and each norm's step time with BatchNorm's;
:mod:`harness.bench.overheads` measures what packing, split scoring and the instruments cost.
"""

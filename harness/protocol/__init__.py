"""What a run is, fixed by the reference protocol: the recipe, the architectures, the datasets,
the scoring, the suites and studies that group settings and seeds, and the run spec."""

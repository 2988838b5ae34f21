"""What a run is, fixed by the reference protocol: the recipe, the catalogue of architectures and
datasets (harness.protocol.catalog; the models themselves are in harness.models, the data in
harness.data), the scoring, the suites and studies that group settings and seeds, and the run spec."""

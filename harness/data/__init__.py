"""Datasets: their published files (files), putting them on a machine (install), reading them
(sources), the built-in ones (offline), and a dataset as resident tensors with the batched
pipeline of the protocol (tensors). Nothing here is imported with the package, so that the
torch-free modules stay so."""

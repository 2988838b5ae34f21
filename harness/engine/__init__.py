"""One run in one process: the training loop, speed options, instruments, checkpoints, and the
runner that turns a run spec into a record."""

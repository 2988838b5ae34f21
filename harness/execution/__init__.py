"""Where runs execute: sweeps over suites and studies, local worker processes and Slurm arrays,
and the sandboxes that split an untrusted run from its score."""

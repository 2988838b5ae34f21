"""The cluster executor's options. The smoke suite through submitit's real code path, with a run
killed mid-way and resumed, is tests/test_end_to_end.py."""

import pytest
from click.testing import CliRunner

from harness.cli import EXIT_USAGE, main
from harness.cluster import ClusterError, SlurmExecutor, SlurmOptions

pytest.importorskip("submitit")


def test_options_from_a_file_and_the_command_line(tmp_path):
    config = tmp_path / "slurm.toml"
    config.write_text('partition = "gpu"\ntime_min = 90\ngpus = 2\naccount = "lab"\n')
    options = SlurmOptions.from_sources(str(config), {"gpus": 4, "cpus": None})
    assert (options.partition, options.time_min, options.gpus, options.cpus) == ("gpu", 90, 4, 8)
    params = options.submitit_parameters("entry")
    assert params["slurm_partition"] == "gpu" and params["gpus_per_node"] == 4
    assert params["timeout_min"] == 90 and params["slurm_array_parallelism"] == 64
    assert params["slurm_additional_parameters"] == {"account": "lab"}
    config.write_text("gpu = 1\n")
    with pytest.raises(ClusterError, match="unknown key"):
        SlurmOptions.from_sources(str(config), {})
    with pytest.raises(ClusterError, match="time_min must be at least 1"):
        SlurmOptions(time_min=0)
    # The worker's own limit stays inside the job's, so the harness records a timeout itself.
    executor = SlurmExecutor(SlurmOptions(time_min=10, mem_gb=2), backend="submitit-local")
    assert executor.isolation.timeout_s == 600 - 120
    assert executor.isolation.memory_bytes == int(0.9 * 2 * 2**30)


def test_detach_needs_a_cluster_executor(tmp_path):
    result = CliRunner().invoke(main, ["submit", "batch_norm", "--name", "x", "--detach",
                                       "--results", str(tmp_path)])
    assert result.exit_code == EXIT_USAGE and "--detach needs a cluster executor" in result.output

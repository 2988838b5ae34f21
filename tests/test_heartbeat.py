"""Off a terminal, a run is never silent for long: a heartbeat line at a steady interval."""

from harness.reporting import ConsoleReporter, Heartbeat


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_a_line_per_interval_with_rate_and_eta():
    clock = Clock()
    beat = Heartbeat(steps_per_epoch=100, batch_size=128, epochs=200, every_s=60, clock=clock)
    lines = []
    for _ in range(100):
        clock.t += 1.5  # 1.5 s a step
        lines.append(beat.step())
    said = [ln for ln in lines if ln]
    assert len(said) == 2  # at 60 s and 120 s
    assert said[0] == "  epoch 1/200: step 40/100, 85 images/s, epoch ends in 90s"
    beat.epoch_done()
    clock.t += 61
    assert beat.step().startswith("  epoch 2/200: step 1/100")


def test_the_console_beats_only_off_a_terminal():
    out = []
    console = ConsoleReporter(echo=lambda m, err=False: out.append(m))
    console.run_started({"config": {"epochs": 2, "batch_size": 100}, "data": {"train_size": 1000}})
    assert console.plain  # pytest's output is not a terminal: no bar, so the heartbeat speaks
    clock = Clock()
    console.beat = Heartbeat(10, 100, 2, clock=clock)
    for _ in range(5):
        clock.t += 30
        console.step()
    console.run_ended()
    assert [m for m in out if "images/s" in m] == [
        "  epoch 1/2: step 2/10, 3 images/s, epoch ends in 240s",
        "  epoch 1/2: step 4/10, 3 images/s, epoch ends in 180s"]


def test_a_sweep_says_each_runs_time_and_an_eta():
    from types import SimpleNamespace

    from harness.reporting import SweepClock, duration

    clock = Clock()
    sweep = SweepClock(clock=clock)
    runs = [SimpleNamespace(n=i) for i in range(4)]
    sweep.planned(runs[0], 4, "done")  # skipped: three to run
    sweep.planned(runs[1], 4, "started")
    sweep.planned(runs[2], 4, "started")  # two side by side
    clock.t = 600
    assert sweep.finished(runs[1]) == " (10m 00s; 1/3 done, about 20m 00s left)"
    sweep.planned(runs[3], 4, "started")
    clock.t = 660
    assert sweep.finished(runs[2]) == " (11m 00s; 2/3 done, about 5m 30s left)"
    clock.t = 1200
    assert sweep.finished(runs[3]) == " (10m 00s; 3/3 done)"  # started at 600
    assert duration(7325) == "2h 02m" and duration(42.4) == "42s"


def test_a_sweep_of_several_entries_counts_them_all():
    from types import SimpleNamespace

    from harness.reporting import SweepClock

    clock = Clock()
    sweep = SweepClock(clock=clock)
    a = [SimpleNamespace(label="a") for _ in range(2)]
    b = [SimpleNamespace(label="b") for _ in range(2)]
    for run in a + b:
        sweep.planned(run, 2, "started")
    clock.t = 100
    assert sweep.finished(a[0]) == " (1m 40s; 1/4 done, about 5m 00s left)"

"""The autoscaling policy, rule by rule, with hand-made samples and a fake clock.

Nothing here sleeps or starts a process: `ScalingPolicy.decide` is fed `LoadSample`s,
and `Autoscaler.step()` is driven by hand over a fake executor and a fake probe.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import time
from collections.abc import Sequence

import pytest

from qtasks_mp.autoscale import (
    Autoscaler,
    Decision,
    GiB,
    LoadSample,
    MiB,
    PoolLoad,
    PsutilProbe,
    ScalingPolicy,
    SystemLoad,
    WorkerSample,
)

# ---------------------------------------------------------------------- helpers


def busy(pid: int, rss: int = 100 * MiB) -> WorkerSample:
    return WorkerSample(pid, busy=True, rss=rss)


def idle(pid: int, idle_s: float, rss: int = 100 * MiB) -> WorkerSample:
    return WorkerSample(pid, idle_s=idle_s, rss=rss)


def starting(pid: int) -> WorkerSample:
    return WorkerSample(pid, starting=True)


def sample(
    workers: Sequence[WorkerSample],
    *,
    t: float = 100.0,
    backlog: int = 0,
    cpu: float = 30.0,
    ours: float = 25.0,
    cpus: int = 8,
    free: int = 12 * GiB,
    full: bool = False,
    mean_call_s: float | None = None,
    startup_s: float | None = None,
) -> LoadSample:
    return LoadSample(
        time=t,
        backlog=backlog,
        oldest_wait_s=0.5 if backlog else 0.0,
        workers=tuple(workers),
        cpu_total_percent=cpu,
        cpu_ours_percent=ours,
        cpu_count=cpus,
        available_bytes=free,
        backlog_full=full,
        mean_call_s=mean_call_s,
        startup_s=startup_s,
    )


def policy(**options: object) -> ScalingPolicy:
    defaults: dict[str, object] = {
        "min_workers": 1,
        "max_workers": 8,
        "idle_timeout": 10.0,
        "memory_reserve": GiB,
        "retire_interval_s": 1.0,
    }
    return ScalingPolicy(**{**defaults, **options})  # type: ignore[arg-type]


# ---------------------------------------------------------------------- growing


def test_grows_at_once_in_proportion_to_the_backlog() -> None:
    d = policy().decide(sample([busy(1), busy(2)], backlog=2, cpu=41, ours=38))
    assert (d.action, d.before, d.target, d.rule) == ("grow", 2, 4, "backlog")
    assert d.reason == "2 → 4 workers: 2 waiting, cpu 41% (others 3%), 12.0 GiB free"

    d = policy().decide(sample([busy(1)], backlog=5))
    assert d.target == 6  # one new worker per waiting call by default

    d = policy(backlog_per_worker=2).decide(sample([busy(1)], backlog=5))
    assert d.target == 4  # ceil(5 / 2) new workers


def test_does_not_grow_while_a_ready_worker_is_idle() -> None:
    d = policy().decide(sample([busy(1), idle(2, 0.0)], backlog=3))
    assert d.action == "hold"
    assert d.target == 2


def test_counts_workers_already_starting() -> None:
    p = policy()
    d = p.decide(sample([busy(1), starting(2), starting(3)], backlog=2))
    assert (d.action, d.rule) == ("hold", "starting")
    d = p.decide(sample([busy(1), starting(2), starting(3)], backlog=5))
    assert (d.action, d.target) == ("grow", 6)  # 5 waiting, 2 on their way: 3 more


def test_never_grows_past_max_workers() -> None:
    p = policy(max_workers=4)
    d = p.decide(sample([busy(1), busy(2)], backlog=37))
    assert (d.action, d.target) == ("grow", 4)
    d = p.decide(sample([busy(1), busy(2), busy(3), busy(4)], backlog=37))
    assert (d.action, d.rule, d.target) == ("hold", "max", 4)


def test_grows_to_min_workers_whatever_the_load() -> None:
    d = policy(min_workers=2).decide(sample([], free=GiB // 2))  # even under pressure
    assert (d.action, d.target, d.rule) == ("grow", 2, "min")


def test_bounds_are_checked() -> None:
    with pytest.raises(ValueError, match="min_workers"):
        ScalingPolicy(min_workers=5, max_workers=2)
    with pytest.raises(ValueError, match="backlog_per_worker"):
        ScalingPolicy(backlog_per_worker=0)


def test_worker_of_unknown_size_grows_one_at_a_time() -> None:
    d = policy(min_workers=0).decide(sample([], backlog=10))
    assert (d.action, d.target) == ("grow", 1)


# ---------------------------------------------------------------------- the CPU


def test_other_programs_saturating_the_cpu_stop_growth() -> None:
    # total 97%, of which our one worker uses 2%: other programs use 95%
    d = policy().decide(sample([busy(1)], backlog=10, cpu=97, ours=2))
    assert (d.action, d.rule) == ("hold", "cpu")
    assert "other programs use 95% of the CPU" in d.reason


def test_our_own_cpu_use_does_not_count_as_saturation() -> None:
    d = policy().decide(sample([busy(n) for n in range(1, 5)], backlog=10, cpu=99, ours=98))
    assert (d.action, d.target) == ("grow", 8)


def test_grows_only_into_the_cpus_others_leave() -> None:
    # others use 50% of 8 CPUs: 4 are ours to use, 1 already is.
    d = policy().decide(sample([busy(1)], backlog=10, cpu=62.5, ours=12.5))
    assert (d.action, d.target) == ("grow", 4)
    d = policy().decide(sample([busy(n) for n in range(1, 5)], backlog=10, cpu=100, ours=50))
    assert (d.action, d.rule) == ("hold", "cpu")


def test_cpu_rules_can_be_turned_off() -> None:
    p = policy(cpu_saturated_percent=None, max_workers=16)
    d = p.decide(sample([busy(1)], backlog=20, cpu=100, ours=5))
    assert (d.action, d.target) == ("grow", 16)  # past the 8 CPUs, despite the others


# ---------------------------------------------------------------------- memory


def test_projected_memory_limits_growth() -> None:
    # 1 GiB workers, 3.5 GiB available, 1 GiB reserve: room for 2 more, not 9.
    d = policy().decide(sample([busy(1, GiB)], backlog=9, free=int(3.5 * GiB)))
    assert (d.action, d.target) == ("grow", 3)
    d = policy().decide(sample([busy(1, GiB)], backlog=9, free=int(1.5 * GiB)))
    assert (d.action, d.rule) == ("hold", "memory")
    assert "would leave less than the 1.0 GiB reserve" in d.reason


def test_memory_pressure_stops_growth_and_retires_the_largest_idle_worker() -> None:
    p = policy()
    workers = [busy(1, 3 * GiB), idle(2, 0.1, 200 * MiB), idle(3, 0.1, 900 * MiB)]
    d = p.decide(sample(workers, backlog=4, free=GiB // 2))
    # no idle_timeout wait; the busy worker (larger still) is left alone
    assert (d.action, d.rule, d.retire, d.target) == ("shrink", "memory", (3,), 2)
    assert "memory pressure, 512 MiB free < 1.0 GiB reserve: worker 3 (900 MiB)" in d.reason

    # one at a time: the next retirement waits for retire_interval_s
    d = p.decide(sample([busy(1, 3 * GiB), idle(2, 0.2)], t=100.5, backlog=4, free=GiB // 2))
    assert (d.action, d.rule) == ("hold", "memory")
    d = p.decide(sample([busy(1, 3 * GiB), idle(2, 1.2)], t=101.1, free=GiB // 2))
    assert (d.action, d.retire) == ("shrink", (2,))


def test_memory_pressure_never_retires_busy_workers_nor_goes_below_min() -> None:
    d = policy().decide(sample([busy(1), busy(2)], backlog=3, free=GiB // 4))
    assert (d.action, d.retire) == ("hold", ())
    d = policy(min_workers=2).decide(sample([busy(1), idle(2, 50)], free=GiB // 4))
    assert (d.action, d.retire) == ("hold", ())


# ---------------------------------------------------------------------- start-up cost


def test_no_new_worker_for_a_backlog_that_drains_before_it_starts() -> None:
    d = policy().decide(  # 0.2 s to drain
        sample([busy(1), busy(2)], backlog=40, mean_call_s=0.01, startup_s=0.5)
    )
    assert (d.action, d.rule) == ("hold", "startup")
    assert "40 waiting drain in 0.20 s, a new worker needs 0.50 s to start" in d.reason

    d = policy().decide(  # 0.6 s
        sample([busy(1), busy(2)], backlog=120, mean_call_s=0.01, startup_s=0.5)
    )
    assert d.action == "grow"


def test_a_full_executor_may_hide_more_backlog_so_start_up_cost_does_not_veto() -> None:
    d = policy().decide(
        sample([busy(1), busy(2)], backlog=4, full=True, mean_call_s=0.01, startup_s=0.5)
    )
    assert d.action == "grow"


# ---------------------------------------------------------------------- shrinking


def test_retires_one_idle_worker_after_idle_timeout() -> None:
    p = policy()
    d = p.decide(sample([idle(1, 9.9), idle(2, 9.9), idle(3, 9.9)]))
    assert d.action == "hold"  # not yet
    workers = [idle(1, 12), idle(2, 10.5, 300 * MiB), idle(3, 11)]
    d = p.decide(sample(workers))
    assert (d.action, d.rule, d.retire, d.target) == ("shrink", "idle", (2,), 2)  # largest
    assert d.reason.startswith("3 → 2 workers: worker 2 idle 10.5 s, cpu 30% (others 5%)")
    d = p.decide(sample([idle(1, 12.5), idle(3, 11.5)], t=100.5))
    assert d.action == "hold"  # one at a time
    d = p.decide(sample([idle(1, 13), idle(3, 12)], t=101.0))
    assert (d.action, d.retire) == ("shrink", (1,))  # same size: the longest idle
    d = p.decide(sample([idle(3, 20)], t=110.0))
    assert (d.action, d.target) == ("hold", 1)  # never below min_workers


def test_never_retires_a_busy_or_starting_worker() -> None:
    p = policy(min_workers=0)
    d = p.decide(sample([busy(1), starting(2)]))
    assert (d.action, d.retire) == ("hold", ())
    d = p.decide(sample([busy(1), starting(2), idle(3, 30)]))
    assert d.retire == (3,)


def test_does_not_shrink_while_calls_wait() -> None:
    d = policy().decide(sample([idle(1, 50), idle(2, 50)], backlog=1))
    assert d.action == "hold"


def test_min_workers_zero_lets_the_pool_empty() -> None:
    d = policy(min_workers=0).decide(sample([idle(1, 30)]))
    assert (d.action, d.target) == ("shrink", 0)


# ---------------------------------------------------------------------- hysteresis


def test_a_regretted_retirement_doubles_the_idle_time_needed() -> None:
    p = policy(idle_timeout=10.0)
    assert p.decide(sample([busy(1), idle(2, 10)], t=100)).action == "shrink"
    # load comes back 2 s later: it shrank too early
    assert p.decide(sample([busy(1)], t=102, backlog=1)).action == "grow"
    assert p.idle_factor == 2
    # the next worker must now be idle 20 s, not 10
    assert p.decide(sample([busy(1), idle(2, 15)], t=120)).action == "hold"
    assert p.decide(sample([busy(1), idle(2, 20)], t=125)).action == "shrink"
    # a growth long after the last retirement is not a regret: back to 1x
    assert p.decide(sample([busy(1)], t=200, backlog=1)).action == "grow"
    assert p.idle_factor == 1
    assert p.decide(sample([busy(1), idle(2, 10)], t=300)).action == "shrink"


def test_an_oscillating_load_does_not_flap() -> None:
    """A worker that goes idle for less than idle_timeout between calls stays."""
    p = policy(idle_timeout=5.0)
    actions = []
    for tick in range(100):  # 50 s of 0.5 s samples: 3 s busy, 3 s idle, repeatedly
        t = 100 + tick * 0.5
        phase = (tick // 6) % 2
        workers = [busy(1), busy(2) if phase == 0 else idle(2, (tick % 6) * 0.5)]
        actions.append(p.decide(sample(workers, t=t)).action)
    assert set(actions) == {"hold"}


# ---------------------------------------------------------------------- the autoscaler


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeProbe:
    def __init__(self) -> None:
        self.cpu_total, self.cpu_ours, self.free = 20.0, 15.0, 8 * GiB
        self.asked: list[list[int]] = []

    def measure(self, pids: Sequence[int]) -> SystemLoad:
        self.asked.append(list(pids))
        rss = {pid: 150 * MiB for pid in pids}
        return SystemLoad(self.cpu_total, self.cpu_ours, 4, self.free, rss)


class FakePool:
    """Grows and retires instantly; a worker is busy while `busy` says so."""

    name = "fake"

    def __init__(self, n: int) -> None:
        self.pids = list(range(1, n + 1))
        self.backlog = 0
        self.busy: set[int] = set()
        self.idle_s = 0.0
        self.retired: list[int] = []

    def load(self) -> PoolLoad:
        workers = tuple(
            WorkerSample(
                pid, busy=pid in self.busy, idle_s=0.0 if pid in self.busy else self.idle_s
            )
            for pid in self.pids
        )
        return PoolLoad(self.backlog, 0.1 if self.backlog else 0.0, workers)

    def grow(self, n: int) -> int:
        top = max(self.pids, default=0)
        self.pids += range(top + 1, top + 1 + n)
        return n

    def retire(self, pid: int) -> bool:
        if pid in self.busy or pid not in self.pids:
            return False
        self.pids.remove(pid)
        self.retired.append(pid)
        return True


def autoscaler(pool: FakePool, **options: object) -> tuple[Autoscaler, FakeClock, FakeProbe]:
    clock, probe = FakeClock(), FakeProbe()
    p = ScalingPolicy(min_workers=1, max_workers=4, idle_timeout=2.0, **options)  # type: ignore[arg-type]
    return Autoscaler(pool, p, probe=probe, clock=clock, history=5), clock, probe


def test_autoscaler_applies_logs_and_emits_each_decision(caplog: pytest.LogCaptureFixture) -> None:
    pool = FakePool(1)
    scaler, clock, probe = autoscaler(pool)
    seen: list[Decision] = []
    scaler.on_decision.append(seen.append)
    pool.busy, pool.backlog = {1}, 10
    with caplog.at_level(logging.INFO, logger="qtasks_mp.autoscale"):
        d = scaler.step()
    assert pool.pids == [1, 2, 3, 4]
    assert probe.asked == [[1]]
    assert seen == [d]
    assert caplog.messages == ["fake: 1 → 4 workers: 10 waiting, cpu 20% (others 5%), 8.0 GiB free"]

    # the burst is over: one worker at a time, after idle_timeout, down to min_workers
    pool.busy, pool.backlog, pool.idle_s = set(), 0, 0.5
    assert scaler.step().action == "hold"
    pool.idle_s = 2.0
    sizes = []
    for _ in range(10):
        clock.now += 1.0
        scaler.step()
        sizes.append(len(pool.pids))
    assert sizes == [3, 2, 1, 1, 1, 1, 1, 1, 1, 1]
    assert [d.action for d in seen] == ["grow", "shrink", "shrink", "shrink"]
    stats = scaler.stats()
    assert [h["target"] for h in stats["history"]] == [4, 3, 2, 1]
    assert stats["last"]["live"] == 1


def test_history_is_bounded() -> None:
    pool = FakePool(1)
    scaler, clock, _ = autoscaler(pool)
    for _ in range(6):  # up and down, 12 decisions
        pool.busy, pool.backlog, pool.idle_s = set(pool.pids), 1, 0.0
        clock.now += 100
        scaler.step()
        pool.busy, pool.backlog, pool.idle_s = set(), 0, 50.0
        clock.now += 100
        scaler.step()
    assert len(scaler.history) == 5
    assert len(scaler.stats()["history"]) == 5


def test_a_blocking_hold_is_reported_once(caplog: pytest.LogCaptureFixture) -> None:
    pool = FakePool(1)
    scaler, clock, probe = autoscaler(pool)
    probe.cpu_total, probe.cpu_ours = 98.0, 3.0
    pool.busy, pool.backlog = {1}, 5
    with caplog.at_level(logging.INFO, logger="qtasks_mp.autoscale"):
        for _ in range(5):
            clock.now += 0.1
            assert scaler.step().rule == "cpu"
    assert len(caplog.messages) == 1
    assert "other programs use 95% of the CPU" in caplog.messages[0]
    probe.cpu_total, probe.cpu_ours = 20.0, 15.0  # the other program finished
    assert scaler.step().action == "grow"
    assert len(pool.pids) == 4


def test_a_busy_worker_is_not_retired_even_if_the_policy_asks() -> None:
    class Greedy:
        def decide(self, sample: LoadSample) -> Decision:
            pids = tuple(w.pid for w in sample.workers)
            return Decision(sample.time, "shrink", sample.live, 0, "custom", "all go", pids)

    pool = FakePool(3)
    pool.busy = {2}
    scaler = Autoscaler(pool, Greedy(), probe=FakeProbe(), clock=FakeClock())
    scaler.step()
    assert pool.pids == [2]
    assert pool.retired == [1, 3]


def test_a_custom_policy_and_a_failing_callback() -> None:
    class Fixed:
        def decide(self, sample: LoadSample) -> Decision:
            return Decision(sample.time, "grow", sample.live, 3, "custom", "always 3")

    def broken(decision: Decision) -> None:
        raise RuntimeError("observer bug")

    pool = FakePool(1)
    scaler = Autoscaler(pool, Fixed(), probe=FakeProbe(), clock=FakeClock())
    scaler.on_decision.append(broken)
    scaler.step()  # the callback's error is logged, not raised
    assert len(pool.pids) == 3
    with pytest.raises(TypeError, match="decide"):
        Autoscaler(pool, object(), probe=FakeProbe())  # type: ignore[arg-type]


async def test_runs_in_the_background_until_stopped() -> None:
    pool = FakePool(1)
    pool.busy, pool.backlog = {1}, 2
    scaler, _, _ = autoscaler(pool)
    scaler.interval_s = 0.001
    grown = asyncio.Event()
    scaler.on_decision.append(lambda d: grown.set())
    scaler.start()
    await asyncio.wait_for(grown.wait(), 5)
    await scaler.stop()
    assert len(pool.pids) == 3
    samples = scaler.samples
    await asyncio.sleep(0)  # stopped: no more samples
    assert scaler.samples == samples


async def test_a_nudge_samples_at_once_instead_of_at_the_end_of_the_interval() -> None:
    pool = FakePool(1)
    scaler, _, _ = autoscaler(pool)
    scaler.interval_s = 3600.0  # without the nudge, the second sample is an hour away
    sampled = asyncio.Event()
    scaler.on_decision.append(lambda d: sampled.set())
    scaler.start()
    try:
        for _ in range(5000):  # the first sample (psutil reads in a thread): nothing waits yet
            if scaler.samples:
                break
            await asyncio.sleep(0.001)
        assert scaler.samples == 1 and len(pool.pids) == 1
        pool.busy, pool.backlog = {1}, 3
        scaler.nudge()
        await asyncio.wait_for(sampled.wait(), 5)
        assert len(pool.pids) == 4
    finally:
        await scaler.stop()


def test_psutil_probe_measures_real_processes() -> None:
    probe = PsutilProbe(window_s=0.0)
    sum(i * i for i in range(300_000))  # some CPU for us
    load = probe.measure([os.getpid(), 2**22 + 12345])  # an exited pid is skipped
    assert list(load.rss) == [os.getpid()]
    assert load.rss[os.getpid()] > 10 * MiB
    assert load.available_bytes > 0
    assert load.cpu_count >= 1
    assert 0.0 <= load.cpu_ours_percent <= load.cpu_total_percent <= 100.0


def test_psutil_probe_counts_a_worker_born_during_the_window_from_its_birth() -> None:
    probe = PsutilProbe(window_s=0.0)
    started = time.monotonic()
    burn = (
        "import sys, time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass\n"
    )
    with subprocess.Popen(
        [sys.executable, "-c", burn + "print(flush=True)\nsys.stdin.read()"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    ) as child:
        assert child.stdout is not None
        child.stdout.readline()  # it has burnt its 0.3 s of CPU
        load = probe.measure([child.pid])
        elapsed = time.monotonic() - started
        child.kill()
    # at least 0.3 CPU-seconds of the machine's elapsed x cpu_count
    assert load.cpu_ours_percent >= 0.9 * 100 * 0.3 / (elapsed * load.cpu_count)


def test_psutil_probe_repeats_cpu_figures_within_its_window() -> None:
    probe = PsutilProbe(window_s=3600.0)
    sum(i * i for i in range(300_000))
    a = probe.measure([os.getpid()])
    b = probe.measure([os.getpid()])
    assert (a.cpu_total_percent, a.cpu_ours_percent) == (0.0, 0.0)  # no window completed
    assert (b.cpu_total_percent, b.cpu_ours_percent) == (0.0, 0.0)
    assert b.rss[os.getpid()] > 0  # memory is always fresh

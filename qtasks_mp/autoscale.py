"""Autoscaling of a worker pool: sample the load, decide a size, apply it, say why.

    every interval_s:
      executor.load() ──> PoolLoad ─────────┐  backlog, oldest wait, workers (busy? idle
                                            │  for how long? starting?), mean call time,
      probe.measure(pids) ──> SystemLoad ───┤  measured start-up time
                              (psutil)      │  cpu total / ours, available memory, RSS
                                            v
                                       LoadSample (+ clock())
                                            │
      policy.decide(sample) ──> Decision ───┤  target size, idle pids to retire, reason
                                            v
      executor.grow(n) / executor.retire(pid);  log at INFO;  on_decision callbacks;
      a bounded history for stats()

This module is the only one that reads psutil for scaling decisions, and only through
`PsutilProbe`: tests give the `Autoscaler` a fake probe, a fake clock and a fake
executor, and call `step()` by hand instead of sleeping.

`ScalingPolicy` is the default policy. It is a plain object with one method,
`decide(sample) -> Decision`; pass any object with that method (see `Policy`), or
subclass it and override `wanted_workers` or `pick_retiree`.

Concurrency: `step()` is synchronous and runs in the event loop that owns the
executor, so between `executor.load()` and `executor.retire(pid)` no call can be
handed to that worker. `retire` still refuses a worker that is busy (it returns
False), so a busy worker is never stopped even by a policy that asks for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import statistics
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal, Protocol, runtime_checkable

log = logging.getLogger("qtasks_mp.autoscale")

GiB = 1 << 30
MiB = 1 << 20

Action = Literal["grow", "shrink", "hold"]


# ---------------------------------------------------------------------- what is measured


@dataclass(frozen=True, slots=True)
class WorkerSample:
    """One live worker (starting or ready; retiring workers are not reported).

    `idle_s`: how long it has held no call (0 while busy or starting).
    `rss`: resident memory in bytes, filled in by the probe (None: unknown).
    """

    pid: int
    busy: bool = False
    idle_s: float = 0.0
    starting: bool = False
    rss: int | None = None


@dataclass(frozen=True, slots=True)
class PoolLoad:
    """What the executor knows about itself, from `ScalableExecutor.load()`.

    - `backlog`: calls handed to the executor and waiting for a worker.
    - `oldest_wait_s`: how long the oldest of those has waited.
    - `full`: the executor holds all the calls it can take, so more may wait
      upstream (in the store) than `backlog` shows.
    - `mean_call_s`, `startup_s`: measured (None until measured).
    """

    backlog: int
    oldest_wait_s: float
    workers: tuple[WorkerSample, ...]
    full: bool = False
    mean_call_s: float | None = None
    startup_s: float | None = None


@dataclass(frozen=True, slots=True)
class SystemLoad:
    """What the probe measures. CPU percentages are of the whole machine (0-100)."""

    cpu_total_percent: float
    cpu_ours_percent: float  # the workers and the dispatcher's own process
    cpu_count: int
    available_bytes: int
    rss: Mapping[int, int] = field(default_factory=dict)  # pid -> bytes


@dataclass(frozen=True, slots=True)
class LoadSample:
    """One observation: the pool and the machine at `time` (the autoscaler's clock)."""

    time: float
    backlog: int
    oldest_wait_s: float
    workers: tuple[WorkerSample, ...]
    cpu_total_percent: float
    cpu_ours_percent: float
    cpu_count: int
    available_bytes: int
    backlog_full: bool = False
    mean_call_s: float | None = None
    startup_s: float | None = None

    @classmethod
    def combine(cls, now: float, pool: PoolLoad, system: SystemLoad) -> LoadSample:
        workers = tuple(replace(w, rss=system.rss.get(w.pid, w.rss)) for w in pool.workers)
        return cls(
            time=now,
            backlog=pool.backlog,
            oldest_wait_s=pool.oldest_wait_s,
            workers=workers,
            cpu_total_percent=system.cpu_total_percent,
            cpu_ours_percent=system.cpu_ours_percent,
            cpu_count=system.cpu_count,
            available_bytes=system.available_bytes,
            backlog_full=pool.full,
            mean_call_s=pool.mean_call_s,
            startup_s=pool.startup_s,
        )

    @property
    def live(self) -> int:
        """Workers starting or ready."""
        return len(self.workers)

    @property
    def starting(self) -> int:
        return sum(1 for w in self.workers if w.starting)

    @property
    def busy(self) -> int:
        return sum(1 for w in self.workers if w.busy)

    @property
    def idle(self) -> tuple[WorkerSample, ...]:
        """Ready workers holding no call: the only ones that may be retired."""
        return tuple(w for w in self.workers if not w.busy and not w.starting)

    @property
    def cpu_others_percent(self) -> float:
        """CPU used by every other program."""
        return max(0.0, self.cpu_total_percent - self.cpu_ours_percent)

    @property
    def typical_rss(self) -> int | None:
        """Median RSS of the workers whose RSS is known."""
        known = [w.rss for w in self.workers if w.rss is not None and not w.starting]
        return int(statistics.median(known)) if known else None


# ---------------------------------------------------------------------- the probe


class LoadProbe(Protocol):
    """Measures the machine. `PsutilProbe` is the real one; tests pass a fake."""

    def measure(self, pids: Sequence[int]) -> SystemLoad: ...


class PsutilProbe:
    """System CPU, available memory, and the CPU and RSS of the given worker pids.

    CPU figures come from CPU-time counters (not `psutil.cpu_percent()`, whose
    interval is shared with every other caller in this process), over a window of at
    least `window_s`: the counters tick every 10 ms, so a shorter window is noise, and
    a measure within the window repeats the last CPU figures (memory is always fresh).
    The first window reads 0. "Ours" is this process (the dispatcher) plus the given
    workers, so "others" = total - ours is what other programs use. A worker counts
    from its birth if it was born during the window (its start-up is ours; "during"
    has a slack of `_BIRTH_SLACK_S`), else from when it was first measured. Memory is
    the machine's `available` figure: a cgroup (container) limit is not seen.
    """

    def __init__(self, window_s: float = 0.1) -> None:
        import psutil  # here, so that importing this module costs nothing without it

        self._psutil = psutil
        self.window_s = window_s
        self.cpu_count = psutil.cpu_count() or os.cpu_count() or 1
        self._me = psutil.Process()
        self._times = psutil.cpu_times()
        self._at = time.time()
        self._used: dict[int, float] = {self._me.pid: _cpu_s(self._me)}  # at the window's start
        self._cpu = (0.0, 0.0)  # total, ours: of the last complete window

    def measure(self, pids: Sequence[int]) -> SystemLoad:
        psutil = self._psutil
        procs: dict[int, Any] = {}
        rss: dict[int, int] = {}
        for pid in pids:
            try:
                proc = psutil.Process(pid) if pid != self._me.pid else self._me
                rss[pid] = proc.memory_info().rss
                if pid not in self._used:  # first seen: count its CPU from now, or birth
                    born = proc.create_time() >= self._at - _BIRTH_SLACK_S
                    self._used[pid] = 0.0 if born else _cpu_s(proc)
            except psutil.Error:  # it exited between load() and now
                continue
            procs[pid] = proc
        at = time.time()
        if at - self._at >= self.window_s:
            self._cpu = self._window(procs, at)
        total, ours = self._cpu
        return SystemLoad(
            cpu_total_percent=total,
            cpu_ours_percent=ours,
            cpu_count=self.cpu_count,
            available_bytes=psutil.virtual_memory().available,
            rss=rss,
        )

    def _window(self, procs: dict[int, Any], at: float) -> tuple[float, float]:
        """CPU % (total, ours) since the window's start; a new window starts now."""
        psutil = self._psutil
        times = psutil.cpu_times()
        all_s = _total_s(times) - _total_s(self._times)
        busy_s = all_s - _idle_s(times) + _idle_s(self._times)
        used: dict[int, float] = {}
        ours_s = 0.0
        for pid, proc in {self._me.pid: self._me, **procs}.items():
            try:
                now_s = _cpu_s(proc)
            except psutil.Error:
                continue
            ours_s += now_s - self._used.get(pid, now_s)
            used[pid] = now_s
        self._used, self._times, self._at = used, times, at
        if all_s <= 0:
            return self._cpu
        total = min(100.0, max(0.0, 100.0 * busy_s / all_s))
        return total, min(total, max(0.0, 100.0 * ours_s / all_s))


# psutil's create_time() adds the boot time, which Linux gives in whole seconds: a
# process born just after the window started may seem born up to 1 s before it.
_BIRTH_SLACK_S = 1.0


def _cpu_s(proc: Any) -> float:
    times = proc.cpu_times()
    return float(times.user + times.system)


def _total_s(times: Any) -> float:
    # On Linux, guest time is already counted in user and nice (as psutil does).
    return float(sum(times)) - getattr(times, "guest", 0.0) - getattr(times, "guest_nice", 0.0)


def _idle_s(times: Any) -> float:
    return float(times.idle + getattr(times, "iowait", 0.0))


# ---------------------------------------------------------------------- decisions


@dataclass(frozen=True, slots=True)
class Decision:
    """What a policy wants: `target` live workers, reached by growing or by retiring
    the idle workers in `retire`. `rule` names the rule that decided (stable, for
    code); `reason` says it for people."""

    time: float
    action: Action
    before: int
    target: int
    rule: str
    reason: str
    retire: tuple[int, ...] = ()

    def __str__(self) -> str:
        return self.reason

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@runtime_checkable
class Policy(Protocol):
    """Anything with this method can drive an `Autoscaler`."""

    def decide(self, sample: LoadSample) -> Decision: ...


def _size(n_bytes: float) -> str:
    if abs(n_bytes) >= GiB:
        return f"{n_bytes / GiB:.1f} GiB"
    return f"{n_bytes / MiB:.0f} MiB"


class ScalingPolicy:
    """The default policy. Rules, in order:

    1. Below `min_workers`: grow to it.
    2. Memory pressure (available < `memory_reserve`): never grow; retire the idle
       worker with the largest RSS, one at a time, without waiting for `idle_timeout`.
    3. Calls waiting and no ready worker idle: grow by ceil(backlog /
       `backlog_per_worker`), minus workers already starting, up to `max_workers`,
       unless the backlog drains before a new worker would be ready (backlog x mean call
       time / busy workers < measured start-up time), unless other programs use
       `cpu_saturated_percent` of the CPU or more, and never past the CPUs the others
       leave, nor past what keeps `memory_reserve` free (typical RSS x new workers).
       `cpu_saturated_percent=None` turns both CPU rules off (workers that wait on I/O,
       or a pool meant to be larger than the machine).
    4. Nothing waiting: retire ONE idle worker that has been idle `idle_timeout` (the
       largest first), then wait `retire_interval_s` before the next; never below
       `min_workers`; never a busy or starting worker.

    Hysteresis: a worker must be idle a whole `idle_timeout` before it goes; growth
    counts workers already starting; and when the pool has to grow again within
    `idle_timeout` of a retirement (it shrank too early), the idle time needed doubles
    (up to `max_idle_factor` times), back to 1x after a growth that was not a regret.

    Time comes from `sample.time` only, so the policy is a deterministic function of
    the samples it has seen.
    """

    def __init__(
        self,
        *,
        min_workers: int = 1,
        max_workers: int | None = None,
        idle_timeout: float = 10.0,
        memory_reserve: int = 512 * MiB,
        backlog_per_worker: float = 1.0,
        cpu_saturated_percent: float | None = 90.0,
        retire_interval_s: float | None = None,
        max_idle_factor: float = 8.0,
    ) -> None:
        max_workers = max_workers or os.cpu_count() or 1
        if min_workers < 0 or max_workers < 1 or min_workers > max_workers:
            raise ValueError(
                f"need 0 <= min_workers <= max_workers and max_workers >= 1, got "
                f"min_workers={min_workers}, max_workers={max_workers}"
            )
        if idle_timeout < 0 or memory_reserve < 0 or backlog_per_worker <= 0:
            raise ValueError(
                "idle_timeout and memory_reserve must be >= 0 and backlog_per_worker > 0"
            )
        self.min_workers = min_workers
        self.max_workers = max_workers
        self.idle_timeout = idle_timeout
        self.memory_reserve = memory_reserve
        self.backlog_per_worker = backlog_per_worker
        self.cpu_saturated_percent = cpu_saturated_percent
        self.retire_interval_s = (
            min(1.0, idle_timeout) if retire_interval_s is None else retire_interval_s
        )
        self.max_idle_factor = max_idle_factor
        self.idle_factor = 1.0  # grows when a retirement is regretted
        self.last_grow: float | None = None
        self.last_retire: float | None = None
        self._typical_rss: int | None = None

    # -------------------------------------------------------------- the decision

    def decide(self, sample: LoadSample) -> Decision:
        s = sample
        rss = s.typical_rss
        if rss is not None:
            self._typical_rss = rss
        if s.live < self.min_workers:
            return self._grow(
                s, self.min_workers - s.live, "min", f"below min_workers={self.min_workers}"
            )
        if s.available_bytes < self.memory_reserve:
            return self._relieve_memory(s)
        if s.backlog > 0 and not s.idle:
            return self._scale_up(s)
        if s.backlog == 0:
            return self._scale_down(s)
        return self._hold(s, "steady", f"{s.backlog} waiting, {len(s.idle)} idle worker(s)")

    def wanted_workers(self, sample: LoadSample) -> int:
        """How many workers to add for this backlog, before any limit (override me)."""
        return math.ceil(sample.backlog / self.backlog_per_worker) - sample.starting

    def pick_retiree(self, candidates: Sequence[WorkerSample]) -> WorkerSample:
        """Which of these idle workers goes first: the largest, then the longest idle."""
        return max(candidates, key=lambda w: (w.rss or 0, w.idle_s))

    # -------------------------------------------------------------- the rules

    def _scale_up(self, s: LoadSample) -> Decision:
        wanted = self.wanted_workers(s)
        if wanted <= 0:
            return self._hold(s, "starting", f"{s.backlog} waiting, {s.starting} starting")
        room = self.max_workers - s.live
        if room <= 0:
            return self._hold(s, "max", f"{s.backlog} waiting, at max_workers")
        n = min(wanted, room)
        if s.mean_call_s is not None and s.startup_s is not None and s.busy and not s.backlog_full:
            drain_s = s.backlog * s.mean_call_s / s.busy
            if drain_s < s.startup_s:
                return self._hold(
                    s,
                    "startup",
                    f"{s.backlog} waiting drain in {drain_s:.2f} s, "
                    f"a new worker needs {s.startup_s:.2f} s to start",
                )
        others = s.cpu_others_percent
        if self.cpu_saturated_percent is None:  # CPU rules off: I/O-bound workers
            pass
        elif others >= self.cpu_saturated_percent:
            return self._hold(
                s, "cpu", f"{s.backlog} waiting, but other programs use {others:.0f}% of the CPU"
            )
        else:
            cpu_room = math.floor(s.cpu_count * (100.0 - others) / 100.0 + 0.5) - s.live
            if cpu_room <= 0:
                return self._hold(
                    s, "cpu", f"{s.backlog} waiting, but other programs leave no CPU for more"
                )
            n = min(n, cpu_room)
        rss = self._typical_rss
        if rss is None:
            n = min(n, 1)  # a worker's size is unknown: one at a time
        else:
            fit = (s.available_bytes - self.memory_reserve) // max(rss, 1)
            if fit <= 0:
                return self._hold(
                    s,
                    "memory",
                    f"{s.backlog} waiting, but a worker ({_size(rss)}) would leave less than "
                    f"the {_size(self.memory_reserve)} reserve",
                )
            n = min(n, fit)
        return self._grow(s, n, "backlog", f"{s.backlog} waiting")

    def _scale_down(self, s: LoadSample) -> Decision:
        if s.live <= self.min_workers:
            return self._hold(s, "steady", "idle at min_workers")
        if self.last_retire is not None and s.time - self.last_retire < self.retire_interval_s:
            return self._hold(s, "steady", "retired one recently")
        idle_needed = self.idle_timeout * self.idle_factor
        eligible = [w for w in s.idle if w.idle_s >= idle_needed]
        if not eligible:
            return self._hold(s, "steady", "no worker idle long enough")
        w = self.pick_retiree(eligible)
        return self._retire(s, w, "idle", f"worker {w.pid} idle {w.idle_s:.1f} s")

    def _relieve_memory(self, s: LoadSample) -> Decision:
        free = f"{_size(s.available_bytes)} free < {_size(self.memory_reserve)} reserve"
        if (
            s.live > self.min_workers
            and s.idle
            and (self.last_retire is None or s.time - self.last_retire >= self.retire_interval_s)
        ):
            w = self.pick_retiree(s.idle)
            rss = "" if w.rss is None else f" ({_size(w.rss)})"
            return self._retire(s, w, "memory", f"memory pressure, {free}: worker {w.pid}{rss}")
        if s.backlog:
            return self._hold(s, "memory", f"{s.backlog} waiting, but memory pressure: {free}")
        return self._hold(s, "steady", f"memory pressure: {free}")

    # -------------------------------------------------------------- building decisions

    def _grow(self, s: LoadSample, n: int, rule: str, why: str) -> Decision:
        if rule != "min":
            regret = self.last_retire is not None and s.time - self.last_retire < self.idle_timeout
            self.idle_factor = min(self.idle_factor * 2, self.max_idle_factor) if regret else 1.0
        self.last_grow = s.time
        target = s.live + n
        return Decision(
            s.time, "grow", s.live, target, rule, f"{s.live} → {target} workers: {why}, {_load(s)}"
        )

    def _retire(self, s: LoadSample, w: WorkerSample, rule: str, why: str) -> Decision:
        self.last_retire = s.time
        target = s.live - 1
        reason = f"{s.live} → {target} workers: {why}, {_load(s)}"
        return Decision(s.time, "shrink", s.live, target, rule, reason, (w.pid,))

    def _hold(self, s: LoadSample, rule: str, why: str) -> Decision:
        reason = f"held at {s.live} workers: {why}, {_load(s)}"
        return Decision(s.time, "hold", s.live, s.live, rule, reason)

    def describe(self) -> dict[str, Any]:
        return {
            "min_workers": self.min_workers,
            "max_workers": self.max_workers,
            "idle_timeout": self.idle_timeout,
            "idle_factor": self.idle_factor,
            "memory_reserve": self.memory_reserve,
            "cpu_saturated_percent": self.cpu_saturated_percent,
        }


def _pids(pool: PoolLoad) -> list[int]:
    return [w.pid for w in pool.workers if w.pid > 0]  # pid <= 0: still being launched


def _load(s: LoadSample) -> str:
    return (
        f"cpu {s.cpu_total_percent:.0f}% (others {s.cpu_others_percent:.0f}%), "
        f"{_size(s.available_bytes)} free"
    )


# ---------------------------------------------------------------------- the autoscaler


class ScalableExecutor(Protocol):
    """What an executor offers to be autoscaled. All three run in its event loop."""

    name: str

    def load(self) -> PoolLoad:
        """Backlog and workers now (retiring workers left out)."""
        ...

    def grow(self, n: int) -> int:
        """Start `n` more workers (in the background); return how many it will start."""
        ...

    def retire(self, pid: int) -> bool:
        """Stop an idle worker for good (no replacement). False, and nothing done, if it
        is busy, starting, or gone."""
        ...


class Autoscaler:
    """Samples `executor` through `probe` every `interval_s`, asks `policy`, applies.

    Every decision that changes the pool is logged at INFO with its reason, passed to
    each callback in `on_decision`, and kept in a history of the last `history`
    decisions (`stats()`). A "hold" that blocks growth (memory, CPU, start-up cost,
    max_workers) is reported once when it starts, not at every sample.

    `step()` does one round synchronously: tests call it by hand with a fake clock.
    `nudge()` (the executor calls it when calls start to wait) samples at once.
    """

    def __init__(
        self,
        executor: ScalableExecutor,
        policy: Policy,
        *,
        probe: LoadProbe | None = None,
        clock: Callable[[], float] = time.monotonic,
        interval_s: float = 0.1,
        history: int = 100,
    ) -> None:
        if not isinstance(policy, Policy):
            raise TypeError(f"policy must have a decide(sample) method, got {policy!r}")
        self.executor = executor
        self.policy = policy
        self.probe: LoadProbe = probe if probe is not None else PsutilProbe()
        self.clock = clock
        self.interval_s = interval_s
        self.min_gap_s = 0.01  # between two samples, however often nudged
        self.on_decision: list[Callable[[Decision], None]] = []
        self.history: deque[Decision] = deque(maxlen=history)
        self.last_sample: LoadSample | None = None
        self.samples = 0
        self.loop_s = 0.0  # time the background sampling spent on the event loop
        self._held: str | None = None  # rule of the hold last reported
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None

    def sample(self, system: SystemLoad | None = None) -> LoadSample:
        """The pool's load now, with `system` (measured now through the probe if None)."""
        pool = self.executor.load()
        if system is None:
            system = self.probe.measure(_pids(pool))
        self.samples += 1
        self.last_sample = LoadSample.combine(self.clock(), pool, system)
        return self.last_sample

    def step(self, system: SystemLoad | None = None) -> Decision:
        """Sample, decide, apply; return the decision."""
        decision = self.policy.decide(self.sample(system))
        if decision.action == "hold":
            if decision.rule in ("steady", "starting"):
                self._held = None
            elif decision.rule != self._held:
                self._held = decision.rule
                self._report(decision)
            return decision
        self._held = None
        live = decision.before
        if decision.target > live:
            self.executor.grow(decision.target - live)
        for pid in decision.retire:
            if not self.executor.retire(pid):  # it took a call after all: keep it
                log.debug("autoscaler %r: worker %d is busy, not retired", self.name, pid)
        self._report(decision)
        return decision

    @property
    def name(self) -> str:
        return self.executor.name

    def _report(self, decision: Decision) -> None:
        self.history.append(decision)
        log.info("%s: %s", self.name, decision.reason)
        for callback in list(self.on_decision):
            try:
                callback(decision)
            except Exception:
                log.exception("autoscaler %r: an on_decision callback failed", self.name)

    # -------------------------------------------------------------- in the background

    def nudge(self) -> None:
        """Sample now rather than at the end of the interval (calls started waiting).
        However often nudged, it samples at most once per `min_gap_s`."""
        if self._wake is not None:
            self._wake.set()

    def start(self) -> None:
        """Start sampling in the running event loop."""
        if self._task is None or self._task.done():
            self._wake = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"qtasks_mp-autoscale-{self.name}"
            )

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        wake = self._wake
        assert wake is not None
        while True:
            wake.clear()
            try:
                # psutil's reads (a /proc file per worker) run in a thread: on the loop
                # they took 0.6% of its time at rest and 3.4% when nudged in a burst.
                pids = _pids(self.executor.load())
                system = await asyncio.to_thread(self.probe.measure, pids)
                began = time.perf_counter()
                self.step(system)
                self.loop_s += time.perf_counter() - began
            except Exception:  # a failed sample must not stop the scaling for good
                log.exception("autoscaler %r: sampling failed", self.name)
            gap_s = min(self.min_gap_s, self.interval_s)
            await asyncio.sleep(gap_s)  # however often nudged
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(wake.wait(), self.interval_s - gap_s)

    def stats(self) -> dict[str, Any]:
        last = self.last_sample
        return {
            "interval_s": self.interval_s,
            "samples": self.samples,
            "loop_s": round(self.loop_s, 6),
            "policy": getattr(self.policy, "describe", dict)(),
            "last": None
            if last is None
            else {
                "backlog": last.backlog,
                "live": last.live,
                "busy": last.busy,
                "cpu_total_percent": last.cpu_total_percent,
                "cpu_others_percent": last.cpu_others_percent,
                "available_bytes": last.available_bytes,
            },
            "history": [d.as_dict() for d in self.history],
        }

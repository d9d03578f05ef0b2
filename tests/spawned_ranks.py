"""Distributed scenarios on gloo ranks (CPU processes), one process group per world size for the
whole test session: starting the ranks and forming a group costs seconds, so each world size pays
it once, and every scenario registered for it runs there in turn (the ranks are forks of a fork
server that has imported torch). Selecting one scenario's test still runs every scenario of its
world size that pytest collected.

Each scenario still passes or fails on its own: every rank reports each scenario it finishes (or
its traceback) to the test process, and the test of a scenario asserts that scenario's outcome. A
scenario that fails (or hangs, or kills a rank) may leave the ranks disagreeing on the collectives
to come, so its ranks are stopped and the scenarios after it run on fresh ones.

A scenario is a module-level function ``fn(rank, world)`` of a test module, registered with
``@scenario(world, ...)``; its test asks the session fixture ``gloo_ranks`` (conftest.py) for
its outcome: ``outcome = gloo_ranks.run(fn, world); assert outcome.passed, outcome.report``.
"""

import dataclasses
import importlib
import multiprocessing
import multiprocessing.connection
import socket
import time
import traceback
from datetime import timedelta

SCENARIOS = {}  # world size -> {name: function}, in registration order
COLLECTIVE_TIMEOUT_S = 300  # a rank waiting on a peer that hangs or went elsewhere raises after this
SCENARIO_TIMEOUT_S = 600  # a scenario that no rank finishes in this time counts as hung
GRACE_S = 15  # after a rank fails, how long the other ranks get to report the same scenario


def scenario(*worlds):
    """Registers a module-level function ``fn(rank, world)`` to run on each world size in ``worlds``."""

    def register(fn):
        for world in worlds:
            SCENARIOS.setdefault(world, {})[name_of(fn)] = fn
        return fn

    return register


def name_of(fn):
    return f"{fn.__module__}.{fn.__name__}"


@dataclasses.dataclass
class Outcome:
    passed: bool
    report: str  # what happened, with every failing rank's traceback


class Session:
    """The outcomes of the registered scenarios, each world size run once, when first asked for."""

    def __init__(self):
        self._outcomes = {}

    def run(self, fn, world):
        names = SCENARIOS.get(world, {})
        if name_of(fn) not in names:
            raise LookupError(f"{name_of(fn)} is not registered with @scenario({world})")
        if world not in self._outcomes:
            self._outcomes[world] = run_scenarios(world, list(names))
        return self._outcomes[world][name_of(fn)]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world, port, names, reports):
    """One rank: joins the group, runs the scenarios in turn, sends each one's outcome up
    ``reports`` (a pipe: a report sent is never lost, even if the rank dies right after)."""
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world,
        timeout=timedelta(seconds=COLLECTIVE_TIMEOUT_S),
    )
    for name in names:
        module, _, function = name.rpartition(".")
        start = time.perf_counter()
        try:
            getattr(importlib.import_module(module), function)(rank, world)
            dist.barrier()  # every rank is done with the scenario's collectives
        except BaseException:
            reports.send((name, traceback.format_exc(), time.perf_counter() - start))
            return  # the ranks may now disagree on the collectives to come: the test process starts fresh ones
        reports.send((name, None, time.perf_counter() - start))
    dist.destroy_process_group()


def run_scenarios(world, names):
    """Runs the scenarios ``names`` in turn on ``world`` ranks; returns {name: Outcome}."""
    outcomes = {}
    while names:
        failed = _run_on_fresh_ranks(world, names, outcomes)
        names = names[names.index(failed) + 1 :] if failed else []
    return outcomes


def _run_on_fresh_ranks(world, names, outcomes):
    """Runs ``names`` on new ranks until all pass (returns None) or one fails (returns its name)."""
    # The fork server imports torch once; each rank is a fork of it, not a fresh interpreter.
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["torch", "torch.distributed", "fastclip"])
    port = _free_port()
    ranks, pipes = [], []
    for rank in range(world):
        receiver, sender = context.Pipe(duplex=False)
        ranks.append(context.Process(target=_worker, args=(rank, world, port, names, sender), daemon=True))
        ranks[-1].start()
        sender.close()  # the rank holds the only sending end: its death ends the pipe
        pipes.append(receiver)
    reports = [{} for _ in range(world)]  # per rank: scenario name -> (traceback or None, seconds)
    failed = None
    try:
        for name in names:
            outcomes[name] = _wait_for(name, ranks, pipes, reports)
            if not outcomes[name].passed:
                failed = name
                break
    finally:
        for process in ranks:
            process.join(timeout=30 if failed is None else 0)
            if process.is_alive():
                process.kill()
                process.join()
        for receiver in pipes:
            receiver.close()
    return failed


def _wait_for(name, ranks, pipes, reports):
    """The outcome of scenario ``name``, from every rank's report, or a failure's tracebacks and
    what the other ranks did meanwhile."""
    world = len(ranks)
    deadline = time.monotonic() + SCENARIO_TIMEOUT_S
    waiting = {r for r in range(world) if name not in reports[r]}
    while waiting and time.monotonic() < deadline:
        ready = multiprocessing.connection.wait([pipes[r] for r in waiting], timeout=deadline - time.monotonic())
        for r in [r for r in waiting if pipes[r] in ready]:
            try:
                reported, error, seconds = pipes[r].recv()
            except EOFError:  # the rank exited, and everything it sent has been read
                waiting.discard(r)
                continue
            reports[r][reported] = (error, seconds)
            if reported == name:
                waiting.discard(r)
                if error is not None:
                    deadline = min(deadline, time.monotonic() + GRACE_S)
    where = f"scenario {name} on {world} ranks"
    problems = {r: reports[r][name][0] for r in range(world) if name in reports[r] and reports[r][name][0]}
    silent = (
        "did not report before the ranks were stopped (see the failing rank)"
        if problems
        else f"did not finish within {SCENARIO_TIMEOUT_S} s (a hang?)"
    )
    for r in range(world):
        if name not in reports[r]:
            ranks[r].join(timeout=1)
            code = ranks[r].exitcode
            problems[r] = silent if code is None else f"exited with code {code} without a report"
    if problems:
        # The rank that failed first (the cause; the others' errors often follow from it) comes first.
        first = sorted(problems, key=lambda r: (0, reports[r][name][1]) if name in reports[r] else (1, r))
        details = "\n".join(f"--- rank {r} ---\n{problems[r]}" for r in first)
        return Outcome(False, f"{where} failed:\n{details}")
    return Outcome(
        True, f"{where} passed in {max(seconds for _, seconds in (reports[r][name] for r in range(world))):.1f} s"
    )

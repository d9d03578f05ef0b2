"""The benchmark harness of ``fastclip bench`` and of the scripts in ``bench/``: one way to time.

* Grads: :func:`make_grads` (normal values, one tensor per shape) and :class:`GradHolder`, the
  parameters whose ``.grad`` they are, for APIs that take parameters or a module.
* Timing: :func:`time_methods` warms every method up (leaving out, with the reason, one that
  fails) and times the methods in interleaved rounds: each round runs every method once, in an
  order rotated by one each round, with an untimed ``setup`` (such as restoring the grads)
  before every call, so the host's drift touches all methods alike. :func:`clip_case` does it
  for clipping calls on one grad list, every timed call really clipping.
* Memory ceilings: :func:`ceiling_probes` (a large read-only reduction and a large in-place
  multiply), timed in the same rounds as a case's methods; :func:`add_floors` turns each case's
  ceilings into its memory floor, ``B / read_ceiling + 2 B / in_place_ceiling`` for B bytes of
  grads (one read pass for the norm, one read-write pass for the scale), and each method's
  fraction of it.
* Output: :func:`method_rows` (one flat record per case and method), :func:`format_table` and
  :func:`markdown_table` (lists of :class:`Column`), :func:`write_json`, :func:`write_csv`.
"""

import csv
import glob
import json
import platform
import shutil
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import torch

import fastclip

from ._command import UsageError
from ._outputs import write_atomically

__all__ = [
    "CEILING_BYTES",
    "NORM_ONLY_PREFIX",
    "Column",
    "GradHolder",
    "Probe",
    "Progress",
    "Timer",
    "add_floor",
    "add_floors",
    "add_speedups",
    "available_memory_bytes",
    "baseline_methods",
    "ceiling_probes",
    "ceilings_from",
    "clip_case",
    "cpu_model",
    "device_name",
    "format_table",
    "kernel_launches",
    "last_level_cache_bytes",
    "machine_info",
    "make_grads",
    "markdown_table",
    "method_rows",
    "parse_device",
    "report_title",
    "tensor_dtypes",
    "time_methods",
    "write_csv",
    "write_json",
]

CEILING_BYTES = 1 << 30  # large enough to stream from memory, not from cache
NORM_ONLY_PREFIX = "norm only: "  # methods that compute the norm and do not clip: floor = 1 read pass

Call = Callable[[], Any]
Shape = Sequence[int]


# -- grads ------------------------------------------------------------------------------------


def tensor_dtypes(shapes: Sequence[Shape], dtypes: torch.dtype | Iterable[torch.dtype]) -> list[torch.dtype]:
    """One dtype per shape, cycling through ``dtypes`` (or all of one dtype)."""
    dtypes = (dtypes,) if isinstance(dtypes, torch.dtype) else tuple(dtypes)
    return [dtypes[i % len(dtypes)] for i in range(len(shapes))]


def make_grads(
    shapes: Sequence[Shape],
    dtypes: torch.dtype | Iterable[torch.dtype],
    device: torch.device,
    generator: torch.Generator,
) -> list[torch.Tensor]:
    """Fresh normal grads, one per shape, cycling through ``dtypes`` (or all of one dtype)."""
    grads = []
    for shape, dtype in zip(shapes, tensor_dtypes(shapes, dtypes)):
        g = torch.empty(shape, dtype=torch.float32).normal_(generator=generator)
        grads.append(g.to(device=device, dtype=dtype))
    return grads


class GradHolder(torch.nn.Module):
    """Parameters whose ``.grad`` are ``grads`` (clippers take parameters, zclip a module).

    The weights are zero-stride views of one zero, costing no memory, when only ``.grad`` is
    read; ``weights=True`` gives real zero weights (AGC reads them, an optimizer writes them).
    """

    def __init__(self, grads: Sequence[torch.Tensor], weights: bool = False):
        super().__init__()
        self.grads = list(grads)
        self.params = torch.nn.ParameterList()
        for g in self.grads:
            zero = torch.zeros_like(g) if weights else torch.zeros((), device=g.device, dtype=g.dtype).expand(g.shape)
            p = torch.nn.Parameter(zero)
            p.grad = g
            self.params.append(p)

    def norm(self) -> float:
        """The grads' total 2-norm (reading it syncs)."""
        return float(fastclip.get_total_norm(self.grads))

    def scaler(self, factor: float = 4.0) -> Call:
        """A call that multiplies every grad by ``factor`` in place: the setup that makes grads
        clipped to ``max_norm`` need clipping again (a power of 2 is exact in every dtype)."""
        return lambda: torch._foreach_mul_(self.grads, factor)

    def restorer(self) -> Call:
        """Keeps a copy of the grads as they are now; the returned call puts it back (the setup
        for stateful methods, which must see the same grads at every call)."""
        saved = [g.clone() for g in self.grads]

        def restore():
            for g, s in zip(self.grads, saved):
                g.copy_(s)

        return restore


def baseline_methods(params: Sequence[torch.Tensor], max_norm: float) -> dict[str, Call]:
    """fastclip's ``clip_grad_norm_`` and torch's (foreach, and per-tensor loop) on ``params``."""
    params = list(params)
    return {
        "fastclip": lambda: fastclip.clip_grad_norm_(params, max_norm),
        "torch_foreach": lambda: torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=True),
        "torch_loop": lambda: torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=False),
    }


# -- timing -----------------------------------------------------------------------------------


class Timer:
    """Seconds per call: wall time on the CPU, CUDA events on the GPU."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def __call__(self, fn: Call, repeat: int, warmup: int = 2, setup: Call | None = None) -> list[float]:
        """Calls ``fn`` ``warmup`` times, then ``repeat`` timed times; ``setup`` runs, untimed,
        before every call. Returns the timed calls' seconds."""
        for _ in range(warmup):
            if setup:
                setup()
            fn()
        samples = []
        for _ in range(repeat):
            if setup:
                setup()  # untimed
            if self.cuda:
                start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                stop.record()
                stop.synchronize()
                samples.append(start.elapsed_time(stop) / 1e3)
            else:
                t0 = time.perf_counter()
                fn()
                samples.append(time.perf_counter() - t0)
        return samples


class Progress:
    """One progress bar over a whole run, on stderr: one step per :meth:`__call__`.

    A run made of stages (the suites of ``fastclip bench``, the runs of ``fastclip demo``) gives
    their names as ``stages`` and starts each with :meth:`stage`: each stage fills an equal share
    of the bar, so the bar only moves forward, although a stage learns its own number of steps
    only when it starts (:meth:`add` grows the current stage's total, e.g. once a case knows how
    many methods it warms up). The line shows the percentage, the time since the start, which
    stage of how many, and the message: ``[#########.....]  45%  0:12  suite 2/3 many-small:
    round 3/5``. On a terminal the line is redrawn in place; elsewhere (a log, a pipe) a line is
    written when a stage starts or ends and at most every ``interval`` seconds in between.
    :meth:`note` writes a line that stays, above the bar.
    """

    def __init__(
        self,
        total: int = 0,
        stages: Sequence[str] | None = None,
        noun: str = "stage",
        interval: float = 2.0,
        stream=None,
    ):
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.stages, self.noun, self.interval = list(stages or []), noun, interval
        self.index = -1 if self.stages else 0  # the current stage
        self.done, self.total = 0, total  # steps of the current stage
        self.shown = 0.0  # the fraction drawn last: never drawn smaller
        self.start = self._last_line = time.monotonic()
        self._line = ""

    def stage(self, name: str | None = None, steps: int = 0) -> None:
        """Starts the next stage (``name`` defaults to the next of ``stages``), of ``steps`` steps."""
        self.index += 1
        if name is not None and self.index < len(self.stages):
            self.stages[self.index] = name
        self.done, self.total = 0, steps
        self._draw(f"{self.stages[self.index]}: starting" if self.index < len(self.stages) else "starting", force=True)

    def add(self, steps: int) -> None:
        """Adds ``steps`` to the current stage's total."""
        self.total += steps

    def __call__(self, message: str) -> None:
        """One step done, shown with ``message``."""
        self.done += 1
        self._draw(message, force=self.done == 1 or self.done >= self.total)

    def note(self, text: str) -> None:
        """A line that stays (above the bar, on a terminal)."""
        if self.tty and self._line:
            print("\r" + " " * len(self._line) + "\r" + text, file=self.stream)
            print(self._line, end="", file=self.stream, flush=True)
        else:
            print(text, file=self.stream, flush=True)

    def fraction(self) -> float:
        """How much of the run is done, 0 to 1 (never less than what was shown before)."""
        within = min(self.done / self.total, 1.0) if self.total else 0.0
        if self.stages:
            self.shown = max(self.shown, (max(self.index, 0) + within) / len(self.stages))
        else:
            self.shown = max(self.shown, within)
        return min(self.shown, 1.0)

    def _draw(self, message, force=False):
        now = time.monotonic()
        fraction = self.fraction()
        filled = int(30 * fraction)
        elapsed = int(now - self.start)
        where = f"{self.noun} {self.index + 1}/{len(self.stages)} " if self.stages and self.index >= 0 else ""
        line = (
            f"[{'#' * filled}{'.' * (30 - filled)}] {fraction:4.0%}  {elapsed // 60}:{elapsed % 60:02d}  "
            f"{where}{message}"
        )
        if self.tty:
            width = max(40, shutil.get_terminal_size().columns - 1)
            line = line[:width]
            print("\r" + line.ljust(len(self._line)), end="", file=self.stream, flush=True)
            self._line = line
        elif force or now - self._last_line >= self.interval:
            print(line, file=self.stream, flush=True)
            self._last_line = now

    def close(self) -> None:
        """Ends the bar's line (on a terminal)."""
        if self.tty and self._line:
            print(file=self.stream, flush=True)
            self._line = ""


class Probe(NamedTuple):
    """One memory-ceiling measurement: a call, the ceiling it measures, the bytes it moves."""

    call: Call
    ceiling: str
    bytes_moved: int


def ceiling_probes(device: torch.device) -> dict[str, Probe]:
    """The ceiling measurements as calls on one buffer of :data:`CEILING_BYTES`, warmed up, to
    pass to :func:`time_methods`. The read ceiling is the faster of torch's sum and a BLAS dot
    product: on some CPUs torch's sum streams measurably slower than the memory allows."""
    buf = torch.empty(CEILING_BYTES // 4, dtype=torch.float32, device=device).normal_()
    probes = {
        "read_sum": Probe(lambda: buf.sum(), "read_bytes_per_s", CEILING_BYTES),
        "read_dot": Probe(lambda: torch.dot(buf, buf), "read_bytes_per_s", CEILING_BYTES),
        "in_place_mul": Probe(lambda: buf.mul_(0.999), "in_place_bytes_per_s", 2 * CEILING_BYTES),
    }
    for probe in probes.values():
        probe.call()
        probe.call()
    return probes


def ceilings_from(probes: Mapping[str, Probe], samples: Mapping[str, list[float]]) -> dict[str, float]:
    """Bytes/s per ceiling: the best median over the probes that measure it."""
    ceilings = {}
    for name, (_, ceiling, moved) in probes.items():
        ceilings[ceiling] = max(ceilings.get(ceiling, 0.0), moved / statistics.median(samples[name]))
    return ceilings


def time_methods(
    methods: dict[str, Call],
    timer: Timer,
    repeat: int,
    *,
    setup: Call | None = None,
    norm: Callable[[], float] | None = None,
    probes: Mapping[str, Probe] | None = None,
    warmup: int = 2,
    progress: Progress | None = None,
    label: str = "",
) -> dict[str, Any]:
    """Times ``methods`` (name -> call) in ``repeat`` interleaved rounds.

    Each method is first called ``warmup`` times, untimed, ``setup`` before each call; given
    ``norm`` (a call returning the grads' norm), each warm-up call is checked to reduce it, and
    the method's ``clips`` says whether all did. A method that raises in its warm-up (a peer or
    ``torch.compile`` failing) is removed from ``methods`` and listed under ``skipped`` with the
    reason. Then each round times every method once (after an untimed ``setup``) and every probe
    of ``probes`` (:func:`ceiling_probes`), in an order rotated by one each round.

    Returns ``{"methods": {name: {"median_s", "min_s", "max_s"[, "clips"]}}, "skipped": {name:
    why}}``, and with probes ``"ceilings"`` (:func:`ceilings_from`) measured in those rounds.
    """
    if progress:
        progress.add(len(methods))
    clips, skipped = {}, {}
    for name, fn in list(methods.items()):
        if progress:
            progress(f"{label}: warm-up {name}")
        clips[name] = True
        try:
            for _ in range(warmup):
                if setup:
                    setup()
                before = norm() if norm else 0.0
                fn()
                clips[name] = clips[name] and (norm is None or norm() < 0.99 * before)
        except Exception as e:  # a peer or torch.compile failing here must not end the whole run
            del methods[name]
            skipped[name] = f"failed in warm-up: {type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}"
    probes = probes or {}
    samples = {name: [] for name in [*methods, *probes]}
    names = list(samples)
    for r in range(repeat):
        if progress:
            progress(f"{label}: round {r + 1}/{repeat}")
        for k in range(len(names)):
            name = names[(r + k) % len(names)]
            if name in probes:
                samples[name] += timer(probes[name].call, 1, warmup=0)
            else:
                samples[name] += timer(methods[name], 1, warmup=0, setup=setup)
    results = {}
    for name in methods:
        results[name] = {
            "median_s": statistics.median(samples[name]),
            "min_s": min(samples[name]),
            "max_s": max(samples[name]),
        }
        if norm:
            results[name]["clips"] = clips[name]
    timed = {"methods": results, "skipped": skipped}
    if probes:
        timed["ceilings"] = ceilings_from(probes, samples)
    return timed


def add_speedups(results: dict[str, dict], reference: str, key: str) -> None:
    """Adds ``key``, the reference method's median time over each method's, to every result."""
    for r in results.values():
        r[key] = results[reference]["median_s"] / r["median_s"]


def kernel_launches(fn: Call, device: torch.device) -> int | None:
    """Kernels one call launches (CUDA only, else None; copies and memsets not counted)."""
    if device.type != "cuda":
        return None
    from torch.profiler import ProfilerActivity, profile

    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    return sum(
        1
        for e in prof.events()
        if e.device_type == torch.autograd.DeviceType.CUDA and "emcpy" not in e.name and "emset" not in e.name
    )


def clip_case(
    grads: list[torch.Tensor],
    methods_for: Callable[[GradHolder, float], tuple[dict, dict]],
    timer: Timer,
    repeat: int,
    *,
    clips: bool = True,
    probes: Mapping[str, Probe] | None = None,
    progress: Progress | None = None,
    label: str = "",
) -> dict[str, Any]:
    """Times clipping calls on one grad list with :func:`time_methods`.

    ``methods_for(holder, max_norm)`` returns ``(methods, skipped)``: name -> a call clipping the
    grads of ``holder`` (a :class:`GradHolder`) to ``max_norm``, and name -> why a method is left
    out. With ``clips`` every timed call really clips: the grads are clipped to norm
    ``max_norm = 0.5`` first, then scaled up by 4, untimed, before every call (clipping clipped
    grads again would change nothing). With ``clips=False`` max_norm is far above the norm and
    nothing needs scaling. A method named with :data:`NORM_ONLY_PREFIX` computes the norm only.

    Returns the case: ``tensors``, ``grad_bytes``, ``float32_bytes``, ``methods`` (name ->
    ``median_s``, ``min_s``, ``max_s``, ``gb_per_s`` (the bytes of its passes: three over the
    grads, or one read of the float32 grads for norm-only methods), ``kernel_launches`` (CUDA),
    ``clips``, ``norm_only``, ``speedup_vs_torch_foreach``), ``skipped``, and with ``probes``
    the ``ceilings`` timed in the same rounds (:func:`add_floors` adds the floors).
    """
    holder = GradHolder(grads)
    max_norm = 0.5 if clips else 1e30
    fastclip.clip_grad_norm_(list(holder.parameters()), max_norm)
    grad_bytes = sum(g.numel() * g.element_size() for g in grads)
    fp32_bytes = sum(g.numel() * g.element_size() for g in grads if g.dtype == torch.float32)
    methods, skipped = methods_for(holder, max_norm)
    timed = time_methods(
        methods,
        timer,
        repeat,
        setup=holder.scaler(4.0) if clips else None,
        norm=holder.norm,
        probes=probes,
        progress=progress,
        label=label,
    )
    results = {}
    for name, r in timed["methods"].items():
        norm_only = name.startswith(NORM_ONLY_PREFIX)
        moved = fp32_bytes if norm_only else 3 * grad_bytes
        results[name] = {
            "median_s": r["median_s"],
            "min_s": r["min_s"],
            "max_s": r["max_s"],
            "gb_per_s": moved / r["median_s"] / 1e9,
            "kernel_launches": kernel_launches(methods[name], grads[0].device),
            "clips": False if norm_only else r["clips"],
            "norm_only": norm_only,
        }
    add_speedups(results, "torch_foreach", "speedup_vs_torch_foreach")
    case = {
        "tensors": len(grads),
        "grad_bytes": grad_bytes,
        "float32_bytes": fp32_bytes,
        "methods": results,
        "skipped": {**skipped, **timed["skipped"]},
    }
    if "ceilings" in timed:
        case["ceilings"] = timed["ceilings"]
    return case


# -- floors -----------------------------------------------------------------------------------


def add_floor(case: dict, ceilings: Mapping[str, float]) -> None:
    """Adds the memory floor of a case (``floor_s``) and each method's ``fraction_of_floor``."""
    b = case["grad_bytes"]
    case["floor_s"] = b / ceilings["read_bytes_per_s"] + 2 * b / ceilings["in_place_bytes_per_s"]
    for r in case["methods"].values():
        # A norm-only method's floor is one read pass over what it reads.
        floor = case.get("float32_bytes", b) / ceilings["read_bytes_per_s"] if r.get("norm_only") else case["floor_s"]
        r["fraction_of_floor"] = floor / r["median_s"]


def add_floors(cases: list[dict]) -> dict[str, float]:
    """Adds each case's floor from the ceilings timed in its own rounds; returns the best of
    each ceiling over the cases."""
    for case in cases:
        add_floor(case, case["ceilings"])
    return {key: max(case["ceilings"][key] for case in cases) for key in cases[0]["ceilings"]}


def report_title(report: Mapping[str, Any]) -> str:
    """A report's first line: the device, torch, the rounds, and the ceilings timed in them
    (each a range over the cases, when they measured any)."""
    title = f"{report['device']}, torch {report['torch']}, median of {report['repeat']} rounds"
    cases = [case for case in report["cases"] if "ceilings" in case]
    if not cases:
        return title

    def spread(key):
        values = [case["ceilings"][key] for case in cases]
        low, high = f"{min(values) / 1e9:.1f}", f"{max(values) / 1e9:.1f}"
        return low if low == high else f"{low}-{high}"

    return (
        f"{title}; memory ceilings timed in the same rounds: read {spread('read_bytes_per_s')} GB/s, "
        f"in-place {spread('in_place_bytes_per_s')} GB/s"
    )


# -- the machine ------------------------------------------------------------------------------


def parse_device(text: str | None, prog: str) -> torch.device:
    """A ``--device`` option's device: cuda when available for None, else cpu, cuda or cuda:N
    checked against this machine (a :class:`~fastclip._command.UsageError` for ``prog`` otherwise)."""
    if text is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(text)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise UsageError(prog, f"--device must be cpu, cuda or cuda:N, got {text!r}")
    if device.type == "cpu":
        return torch.device("cpu")  # torch accepts cpu:N; there is one CPU device
    if not torch.cuda.is_available():
        raise UsageError(prog, f"--device {text} but no CUDA GPU is available")
    if device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    if device.index >= torch.cuda.device_count():
        raise UsageError(prog, f"--device {text} but this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's model with its thread count and last-level cache (a grad list
    that fits in a large L3 can beat the DRAM floor)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    name = cpu_model()
    cache = last_level_cache_bytes()
    cache_text = f", {cache >> 20} MiB last-level cache" if cache else ""
    # The CPU kernels' instruction set (FASTCLIP_CPU_ISA=generic|avx2 caps it): runs on one
    # machine with different caps are then told apart.
    isa = fastclip.build_info().get("cpu_isa_in_use")
    isa_text = f", {isa} kernels" if isa else ""
    return f"{name} ({torch.get_num_threads()} threads{cache_text}{isa_text})"


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), or what ``platform`` says when that is unknown."""
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            name = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return name


def last_level_cache_bytes() -> int:
    """The largest CPU cache Linux reports, in bytes (0 when unknown)."""
    sizes = []
    for index in glob.glob("/sys/devices/system/cpu/cpu0/cache/index*/size"):
        try:
            with open(index) as f:
                text = f.read().strip()
        except OSError:
            continue
        units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
        if text and text[-1] in units and text[:-1].isdigit():
            sizes.append(int(text[:-1]) * units[text[-1]])
        elif text.isdigit():
            sizes.append(int(text))
    return max(sizes, default=0)


def available_memory_bytes(device: torch.device) -> int | None:
    """Free memory on the device (MemAvailable on the host for the CPU); None when unknown."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def machine_info(device: torch.device) -> dict[str, Any]:
    """What a report starts with: ``device`` (its name), ``device_type``, the torch and fastclip
    versions, and torch's CPU threads."""
    return {
        "device": device_name(device),
        "device_type": device.type,
        "torch": torch.__version__,
        "fastclip": fastclip.__version__,
        "threads": torch.get_num_threads(),
    }


# -- output -----------------------------------------------------------------------------------


def method_rows(
    cases: Iterable[dict], case_fields: Mapping[str, Callable[[dict], Any]], method_fields: Iterable[str]
) -> Iterator[dict[str, Any]]:
    """One flat record per case and method (the rows of tables and CSV files): each of
    ``case_fields`` (name -> its value for a case), ``method`` (the method's name), then each of
    ``method_fields`` from the method's results, a name ending in ``_ms`` giving the result
    ``..._s`` in milliseconds."""
    method_fields = list(method_fields)
    for case in cases:
        for method, r in case["methods"].items():
            row = {name: value(case) for name, value in case_fields.items()}
            row["method"] = method
            for key in method_fields:
                row[key] = r[key[:-3] + "_s"] * 1e3 if key.endswith("_ms") else r[key]
            yield row


class Column(NamedTuple):
    """A column of :func:`format_table` and :func:`markdown_table`: its ``header``, its ``cell``
    text for a row, the ``width`` its text (and header) is padded to, left-aligned if ``left``
    (text) or else right-aligned (numbers)."""

    header: str
    cell: Callable[[dict], str]
    width: int = 0
    left: bool = False


def format_table(rows: Iterable[dict], columns: Sequence[Column], sep: str = " ") -> str:
    """A text table: the headers, then one line per row, each column padded to its width."""

    def line(texts):
        return sep.join(t.ljust(c.width) if c.left else t.rjust(c.width) for t, c in zip(texts, columns)).rstrip()

    return "\n".join([line([c.header for c in columns])] + [line([c.cell(row) for c in columns]) for row in rows])


def markdown_table(rows: Iterable[dict], columns: Sequence[Column]) -> str:
    """The same rows and columns as a markdown table (widths ignored)."""
    lines = [
        "| " + " | ".join(c.header for c in columns) + " |",
        "| " + " | ".join("---" if c.left else "---:" for c in columns) + " |",
    ]
    lines += ["| " + " | ".join(c.cell(row) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def write_json(data: Any, path: str) -> None:
    """Writes ``data`` as JSON (indented), whole or not at all."""

    def write(tmp):
        with open(tmp, "w") as f:
            json.dump(data, f, indent=1)

    write_atomically(path, write)


def write_csv(rows: Iterable[dict], path: str) -> None:
    """Writes records with the same keys (e.g. :func:`method_rows`) as CSV, whole or not at all."""
    rows = list(rows)

    def write(tmp):
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)

    write_atomically(path, write)

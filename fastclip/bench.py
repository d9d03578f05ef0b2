"""``fastclip bench``: clipping throughput on this machine, fastclip against torch and the peers.

Suites of realistic gradient shapes (see :data:`SUITES`); every method of a case runs on the same
grads, timed in interleaved rounds, each timed call really clipping (the grads are scaled back
up, untimed, before every call). The machine's memory ceilings (a large read-only sum and a large
in-place multiply) are timed in the same interleaved rounds as the methods of each case, so the
host's drift touches them alike, and each method is reported as median time,
spread (min-max), speedup over torch's foreach path, and fraction of the memory floor
``B / read_ceiling + 2 B / in_place_ceiling`` (B = grad bytes; one read pass for the norm, one
read-write pass for the scale), plus kernel launches per call on CUDA.
"""

import argparse
import csv
import glob
import json
import math
import platform
import statistics
import sys
import time

import torch

import fastclip
from fastclip._outputs import check_matplotlib, check_output, write_atomically

__all__ = ["SUITES", "add_arguments", "main", "run", "shard_shapes"]

GPT2_LAYER = [(768,), (768,), (768, 2304), (2304,), (768, 768), (768,), (768,), (768,), (768, 3072), (3072,),
              (3072, 768), (768,)]
GPT2_124M = [(50257, 768), (1024, 768)] + GPT2_LAYER * 12 + [(768,), (768,)]
LLAMA_LAYER = [(4096, 4096)] * 4 + [(11008, 4096), (11008, 4096), (4096, 11008), (4096,), (4096,)]
LLAMA_7B = [(32000, 4096)] + LLAMA_LAYER * 32 + [(4096,), (32000, 4096)]

# bf16 training that keeps its biases and norms in float32: a list torch splits into two dtype
# groups, and whose bytes are mostly bf16 (alternating tensor by tensor would leave every big
# GPT-2 matrix in float32)
GPT2_124M_BF16_MATRICES = tuple(torch.bfloat16 if len(s) > 1 else torch.float32 for s in GPT2_124M)

# name -> (shapes, dtypes cycled over the tensors or None for --dtype, what it is)
SUITES = {
    "gpt2-124m": (GPT2_124M, None, "GPT-2 124M, 148 tensors"),
    "llama-7b": (LLAMA_7B, None, "Llama 7B, 291 tensors (use --shard N: one rank of an N-way FSDP shard)"),
    "many-small": ([(4096,)] * 10000, None, "10,000 tensors of 4,096 elements"),
    "one-huge": ([(2**28,)], None, "one tensor of 2^28 elements"),
    "mixed": (GPT2_124M, GPT2_124M_BF16_MATRICES,
              "GPT-2 124M, matrices in bfloat16, vectors (biases, norms) in float32"),
}
QUICK_SUITES = ["gpt2-124m", "many-small", "mixed"]
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "float64": torch.float64}
CEILING_BYTES = 1 << 30  # large enough to stream from memory, not from cache
COMPILE_MAX_TENSORS = 1000
NORM_ONLY_PREFIX = "norm only: "  # methods that compute the norm and do not clip: floor = 1 read pass


def shard_shapes(shapes, shards):
    """One rank's shapes under an N-way FSDP shard: dim 0 split into N (the first, largest piece)."""
    if shards == 1:
        return list(shapes)
    return [((-(-s[0] // shards),) + tuple(s[1:])) for s in shapes]


def tensor_dtypes(shapes, dtypes):
    """One dtype per shape, cycling through ``dtypes`` (or all of one dtype)."""
    dtypes = (dtypes,) if isinstance(dtypes, torch.dtype) else tuple(dtypes)
    return [dtypes[i % len(dtypes)] for i in range(len(shapes))]


def make_grads(shapes, dtypes, device, generator):
    """Fresh normal grads, one per shape, cycling through dtypes (or all of one dtype)."""
    grads = []
    for shape, dtype in zip(shapes, tensor_dtypes(shapes, dtypes)):
        g = torch.empty(shape, dtype=torch.float32).normal_(generator=generator)
        grads.append(g.to(device=device, dtype=dtype))
    return grads


class Timer:
    """Wall time per call on the CPU, CUDA events on the GPU."""

    def __init__(self, device):
        self.cuda = device.type == "cuda"

    def __call__(self, fn, repeat, warmup=2, setup=None):
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


def ceiling_probes(device):
    """The ceiling measurements as calls on one buffer of CEILING_BYTES: (call, ceiling it measures,
    bytes it moves). The read ceiling is the faster of torch's sum and a BLAS dot product: on some
    CPUs torch's sum streams measurably slower than the memory allows."""
    buf = torch.empty(CEILING_BYTES // 4, dtype=torch.float32, device=device).normal_()
    return {"read_sum": (lambda: buf.sum(), "read_bytes_per_s", CEILING_BYTES),
            "read_dot": (lambda: torch.dot(buf, buf), "read_bytes_per_s", CEILING_BYTES),
            "in_place_mul": (lambda: buf.mul_(0.999), "in_place_bytes_per_s", 2 * CEILING_BYTES)}


def ceilings_from(probes, samples):
    """Bytes/s per ceiling: the best median over the probes that measure it."""
    ceilings = {}
    for name, (_, ceiling, moved) in probes.items():
        ceilings[ceiling] = max(ceilings.get(ceiling, 0.0), moved / statistics.median(samples[name]))
    return ceilings


def measure_ceilings(device, timer, repeat):
    """Read-only and in-place bandwidth in bytes/s, each the median of `repeat` runs."""
    probes = ceiling_probes(device)
    return ceilings_from(probes, {name: timer(fn, repeat) for name, (fn, _, _) in probes.items()})


def kernel_launches(fn, device):
    """Kernels one call launches (CUDA only; copies and memsets not counted)."""
    if device.type != "cuda":
        return None
    from torch.profiler import ProfilerActivity, profile

    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    return sum(1 for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA
               and "emcpy" not in e.name and "emset" not in e.name)


def device_name(device):
    """The GPU's name, or the CPU's model with its thread count and last-level cache (a grad list
    that fits in a large L3 can beat the DRAM floor)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            name = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    cache = last_level_cache_bytes()
    cache_text = f", {cache >> 20} MiB last-level cache" if cache else ""
    return f"{name} ({torch.get_num_threads()} threads{cache_text})"


def last_level_cache_bytes():
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


class _Holder(torch.nn.Module):
    """Parameters whose grads are the benchmark's grads (zclip takes a module). The weights are
    zero-stride views: only .grad is read, so they cost no memory."""

    def __init__(self, grads):
        super().__init__()
        self.params = torch.nn.ParameterList()
        for g in grads:
            p = torch.nn.Parameter(torch.zeros((), device=g.device, dtype=g.dtype).expand(g.shape))
            p.grad = g
            self.params.append(p)


def _methods(holder, max_norm, quick, device, timed_calls):
    """The methods available here: (name -> step function, name -> why it was left out)."""
    params = list(holder.parameters())
    methods = {
        "fastclip": lambda: fastclip.clip_grad_norm_(params, max_norm),
        "torch_foreach": lambda: torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=True),
        "torch_loop": lambda: torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=False),
    }
    skipped = {}
    # torch.compile traces every tensor: on thousands of them compiling takes minutes, so the
    # compiled method runs on lists of up to COMPILE_MAX_TENSORS (and not with --quick).
    if quick:
        skipped["torch_compile"] = "not with --quick (compiling takes a while)"
    elif len(params) > COMPILE_MAX_TENSORS:
        skipped["torch_compile"] = f"over {COMPILE_MAX_TENSORS} tensors (compiling would take minutes)"
    else:
        methods["torch_compile"] = torch.compile(
            lambda: torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=True))
    try:
        import zclip
    except ImportError:
        skipped["zclip"] = "not installed (pip install zclip)"
    else:
        peer = zclip.ZClip(warmup_steps=1, max_grad_norm=max_norm)
        ours = fastclip.ZClip(params, warmup_steps=1, max_grad_norm=max_norm)
        methods["zclip"] = lambda: peer.step(holder)
        methods["fastclip.ZClip"] = ours.step
    try:
        import autoclip.torch as autoclip_torch
    except ImportError:
        skipped["autoclip"] = "not installed (pip install autoclip)"
    else:
        peer_auto = autoclip_torch.QuantileClip(params, quantile=0.1, history_length=1000, global_threshold=True)
        ours_auto = fastclip.AutoClip(params, percentile=10.0, history_size=1000, lag=1)
        # A history of norms at max_norm (the grads' norm now), long enough that its 10th
        # percentile stays there through every timed call: each timed call, at 4 x max_norm, clips.
        for _ in range(min(1000, 10 + timed_calls // 4)):
            peer_auto.step()
            ours_auto.step()
        methods["autoclip"] = peer_auto.step
        methods["fastclip.AutoClip"] = ours_auto.step
    if device.type == "cuda":
        vendor, why = _vendor_l2norm(params)
        methods.update(vendor)
        if why:
            skipped["vendor_l2norm"] = why
    return methods, skipped


def _vendor_l2norm(params):
    """Transformer Engine's or apex's multi-tensor L2 norm of the float32 grads (norm only), when
    importable: ({name: call}, None), or ({}, why not)."""
    grads = [p.grad for p in params if p.grad.dtype == torch.float32]
    if not grads:
        return {}, "its multi-tensor L2 norm takes float32 grads only"
    try:
        from transformer_engine.pytorch.optimizers import multi_tensor_applier, multi_tensor_l2norm
    except ImportError:
        try:
            import amp_C
            from apex.multi_tensor_apply import multi_tensor_applier
            multi_tensor_l2norm = amp_C.multi_tensor_l2norm
        except ImportError:
            return {}, "neither Transformer Engine nor apex is importable"
    flag = torch.zeros(1, dtype=torch.int, device=grads[0].device)
    return {NORM_ONLY_PREFIX + "vendor_l2norm": lambda: multi_tensor_applier(multi_tensor_l2norm, flag, [grads], False)}, None


def run_case(suite, shapes, dtypes, device, timer, repeat, generator, quick, progress=None, probes=None):
    """Times every available method on one set of grads, in interleaved rounds; with ``probes``
    (:func:`ceiling_probes`) the memory ceilings join the same rounds, and the case gets its own
    ``ceilings`` measured alongside it. A method that fails its warm-up (e.g. torch.compile without
    a working compiler) is left out and listed under ``skipped`` with the reason."""
    grads = make_grads(shapes, dtypes, device, generator)
    holder = _Holder(grads)
    max_norm = 0.5
    fastclip.clip_grad_norm_(list(holder.parameters()), max_norm)
    grad_bytes = sum(g.numel() * g.element_size() for g in grads)

    # Clipped grads have norm max_norm and clipping them again changes nothing; so before every
    # timed call, untimed, the grads are scaled up by 4 (exact in every dtype): every call clips.
    def restore():
        torch._foreach_mul_(grads, 4.0)

    def total_norm():
        return float(fastclip.get_total_norm(grads))

    methods, skipped = _methods(holder, max_norm, quick, device, timed_calls=repeat + 2)
    if progress:
        progress.add(len(methods))
    clips = {}
    for name, fn in list(methods.items()):
        if progress:
            progress(f"{suite}: warm-up {name}")
        clips[name] = True
        try:
            for _ in range(2):  # each warm-up call is checked: did it really clip?
                restore()
                before = total_norm()
                fn()
                clips[name] = clips[name] and total_norm() < 0.99 * before
        except Exception as e:  # a peer or torch.compile failing here must not end the whole run
            del methods[name]
            skipped[name] = f"failed in warm-up: {type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}"
    probes = probes or {}
    samples = {m: [] for m in [*methods, *probes]}
    names = list(samples)
    for r in range(repeat):
        if progress:
            progress(f"{suite}: round {r + 1}/{repeat}")
        for k in range(len(names)):
            name = names[(r + k) % len(names)]
            if name in probes:
                samples[name] += timer(probes[name][0], 1, warmup=0)
            else:
                samples[name] += timer(methods[name], 1, warmup=0, setup=restore)
    fp32_bytes = sum(g.numel() * g.element_size() for g in grads if g.dtype == torch.float32)
    results = {}
    for method, fn in methods.items():
        median = statistics.median(samples[method])
        norm_only = method.startswith(NORM_ONLY_PREFIX)
        moved = fp32_bytes if norm_only else 3 * grad_bytes
        results[method] = {"median_s": median, "min_s": min(samples[method]), "max_s": max(samples[method]),
                           "gb_per_s": moved / median / 1e9, "kernel_launches": kernel_launches(fn, device),
                           "clips": False if norm_only else clips[method], "norm_only": norm_only}
    for r in results.values():
        r["speedup_vs_torch_foreach"] = results["torch_foreach"]["median_s"] / r["median_s"]
    case = {"suite": suite, "dtypes": sorted({str(d).replace("torch.", "") for d in dtypes}), "tensors": len(grads),
            "grad_bytes": grad_bytes, "float32_bytes": fp32_bytes, "methods": results, "skipped": skipped}
    if probes:
        case["ceilings"] = ceilings_from(probes, samples)
    return case


def add_floor(case, ceilings):
    """Adds the memory floor of a case and each method's fraction of it."""
    b = case["grad_bytes"]
    case["floor_s"] = b / ceilings["read_bytes_per_s"] + 2 * b / ceilings["in_place_bytes_per_s"]
    for r in case["methods"].values():
        # A norm-only method's floor is one read pass over what it reads.
        floor = case.get("float32_bytes", b) / ceilings["read_bytes_per_s"] if r.get("norm_only") else case["floor_s"]
        r["fraction_of_floor"] = floor / r["median_s"]


def rows(report):
    """One flat record per case and method (the CSV rows)."""
    for case in report["cases"]:
        for method, r in case["methods"].items():
            yield {"suite": case["suite"], "shard": report.get("shard", 1), "dtypes": "+".join(case["dtypes"]),
                   "tensors": case["tensors"], "method": method, "median_ms": r["median_s"] * 1e3,
                   "min_ms": r["min_s"] * 1e3, "max_ms": r["max_s"] * 1e3,
                   "speedup_vs_torch_foreach": r["speedup_vs_torch_foreach"],
                   "fraction_of_floor": r["fraction_of_floor"], "kernel_launches": r["kernel_launches"],
                   "clips": r.get("clips", True)}


def print_table(report, out=sys.stdout):
    """The terminal table."""
    def spread(key):
        values = [case["ceilings"][key] for case in report["cases"]]
        low, high = f"{min(values) / 1e9:.1f}", f"{max(values) / 1e9:.1f}"
        return low if low == high else f"{low}-{high}"

    print(f"\n{report['device']}, torch {report['torch']}, median of {report['repeat']} rounds; memory ceilings "
          f"timed in the same rounds: read {spread('read_bytes_per_s')} GB/s, in-place {spread('in_place_bytes_per_s')} "
          f"GB/s", file=out)
    header = f"{'suite':12s} {'dtype':16s} {'method':26s} {'median ms':>10s} {'min-max ms':>17s} {'vs torch':>9s} {'of floor':>9s}"
    cuda = report["device_type"] == "cuda"
    print(header + (f" {'launches':>8s}" if cuda else ""), file=out)
    unclipped = False
    for r in rows(report):
        suite = r["suite"] if r["shard"] == 1 else f"{r['suite']}/{r['shard']}"
        method = r["method"]
        if not r["clips"] and not method.startswith(NORM_ONLY_PREFIX):
            method, unclipped = method + " (*)", True
        line = (f"{suite:12s} {r['dtypes']:16s} {method:26s} {r['median_ms']:10.2f} "
                f"{r['min_ms']:8.2f}-{r['max_ms']:<8.2f} {r['speedup_vs_torch_foreach']:8.2f}x "
                f"{r['fraction_of_floor']:8.0%}")
        print(line + (f" {r['kernel_launches']:8d}" if cuda else ""), file=out)
    if report.get("shard", 1) > 1:
        print(f"/{report['shard']}: one rank's share of the grads, sharded {report['shard']} ways as FSDP does "
              "(--shard)", file=out)
    if unclipped:
        print("(*) did not reduce the norm in a checked warm-up call: its time is not a clipping call's", file=out)
    skipped = {}
    for case in report["cases"]:
        for method, why in case.get("skipped", {}).items():
            skipped.setdefault((method, why), []).append(case["suite"])
    for (method, why), suites in skipped.items():
        where = "" if len(suites) == len(report["cases"]) else f" ({', '.join(suites)})"
        print(f"left out: {method}{where}: {why}", file=out)


def _dump_json(data, path, **kwargs):
    with open(path, "w") as f:
        json.dump(data, f, **kwargs)


def write_csv(report, path):
    """Writes :func:`rows` as CSV."""
    data = list(rows(report))

    def write(tmp):
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(data[0]))
            writer.writeheader()
            writer.writerows(data)

    write_atomically(path, write)


def write_plot(report, path, metric="fraction_of_floor"):
    """A grouped bar chart: one group per suite, one bar per method."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit("fastclip bench: --plot needs matplotlib (pip install matplotlib)") from None
    cases = report["cases"]
    methods = list(dict.fromkeys(m for case in cases for m in case["methods"]))
    width = 0.8 / len(methods)
    fig, ax = plt.subplots(figsize=(max(6, 2.2 * len(cases)), 4.2))
    for k, method in enumerate(methods):
        xs = [i + (k - (len(methods) - 1) / 2) * width for i, case in enumerate(cases) if method in case["methods"]]
        ys = [case["methods"][method][metric] * (100 if metric == "fraction_of_floor" else 1e3)
              for case in cases if method in case["methods"]]
        # fastclip's bars solid, torch's and the peers' hatched: ours against theirs at a glance
        ax.bar(xs, ys, width, label=method, hatch=None if method.startswith("fastclip") else "//",
               edgecolor="white", linewidth=0.3)
    if metric == "fraction_of_floor":
        ax.axhline(100, color="black", linewidth=0.8, linestyle="--")  # the DRAM floor
    ax.set_xticks(range(len(cases)), [f"{c['suite']}\n{'+'.join(c['dtypes'])}" for c in cases])
    ax.set_ylabel("% of the memory floor (higher is faster)" if metric == "fraction_of_floor" else "median ms")
    shard = f", one rank's share (sharded {report['shard']} ways)" if report.get("shard", 1) > 1 else ""
    ax.set_title(f"clip_grad_norm_ and clippers{shard}\n{report['device']}", fontsize=10)
    ax.legend(fontsize=8, ncol=min(4, len(methods)), loc="upper center", bbox_to_anchor=(0.5, -0.16), frameon=False)
    write_atomically(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png", bbox_inches="tight"))
    plt.close(fig)


def _progress_printer(total):
    """A progress bar on stderr; ``progress.add(n)`` grows the total once a case knows its methods."""
    done, total = [0], [total]
    tty = sys.stderr.isatty()

    def progress(message):
        done[0] += 1
        filled = min(30, 30 * done[0] // max(total[0], 1))
        line = f"[{'#' * filled}{'.' * (30 - filled)}] {message}"
        if tty:
            print("\r" + line.ljust(100)[:100], end="", file=sys.stderr, flush=True)
        else:
            print(line, file=sys.stderr, flush=True)

    progress.add = lambda n: total.__setitem__(0, total[0] + n)
    return progress


def add_arguments(parser):
    """Adds the bench options, a description and the list of suites to an argparse parser."""
    parser.description = __doc__.split("\n")[0].replace("``", "")
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = "suites:\n" + "\n".join(f"  {name:11s} {what}" for name, (_, _, what) in SUITES.items())
    parser.add_argument("--suite", action="append", choices=list(SUITES), metavar="NAME",
                        help=f"a suite to run (repeatable): {', '.join(SUITES)}. Default: all but llama-7b, "
                             f"or {', '.join(QUICK_SUITES)} with --quick")
    parser.add_argument("--dtype", choices=list(DTYPES), default="float32",
                        help="grad dtype (the mixed suite always has bfloat16 matrices and float32 vectors)")
    parser.add_argument("--device", default=None, help="cuda when available, else cpu")
    parser.add_argument("--repeat", type=int, default=None, help="timed rounds per case (default 15; 5 with --quick)")
    parser.add_argument("--shard", type=int, default=1, help="divide every tensor's dim 0 as an N-way FSDP shard would")
    parser.add_argument("--quick", action="store_true", help="a short run (under a minute on 2 CPU cores)")
    parser.add_argument("--json", help="write the results as JSON to this file")
    parser.add_argument("--csv", help="write one row per case and method to this CSV file")
    parser.add_argument("--plot", help="write a PNG bar chart (fraction of the memory floor) to this file")


def run(args):
    """Runs the benchmark for parsed options; prints the table, writes the files, returns the report."""
    if args.repeat is not None and args.repeat < 1:
        raise SystemExit(f"fastclip bench: --repeat must be >= 1, got {args.repeat}")
    if args.shard < 1:
        raise SystemExit(f"fastclip bench: --shard must be >= 1, got {args.shard}")
    device = _parse_device(args.device)
    check_output("fastclip bench", "--json", args.json)
    check_output("fastclip bench", "--csv", args.csv)
    check_output("fastclip bench", "--plot", args.plot, suffix=".png")
    if args.plot:
        check_matplotlib("fastclip bench", "--plot")
    suites = args.suite or (QUICK_SUITES if args.quick else [s for s in SUITES if s != "llama-7b"])
    repeat = args.repeat or (5 if args.quick else 15)
    for suite in suites:
        _check_memory(suite, shard_shapes(SUITES[suite][0], args.shard), SUITES[suite][1] or (DTYPES[args.dtype],),
                      device)
    try:
        report = _run_suites(args, device, suites, repeat)
    except torch.OutOfMemoryError as e:
        raise SystemExit(f"fastclip bench: out of memory on {device} ({str(e).splitlines()[0]}); "
                         "try fewer suites or --shard N") from None
    print_table(report)
    if args.json:
        write_atomically(args.json, lambda tmp: _dump_json(report, tmp, indent=1))
    if args.csv:
        write_csv(report, args.csv)
    if args.plot:
        write_plot(report, args.plot)
    return report


def _parse_device(text):
    if text is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(text)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise SystemExit(f"fastclip bench: --device must be cpu, cuda or cuda:N, got {text!r}")
    if device.type == "cpu":
        return torch.device("cpu")  # torch accepts cpu:N; there is one CPU device
    if not torch.cuda.is_available():
        raise SystemExit(f"fastclip bench: --device {text} but no CUDA GPU is available")
    if device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    if device.index >= torch.cuda.device_count():
        raise SystemExit(f"fastclip bench: --device {text} but this machine has "
                         f"{torch.cuda.device_count()} CUDA device(s)")
    return device


def available_memory_bytes(device):
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


def _check_memory(suite, shapes, dtypes, device):
    need = CEILING_BYTES + sum(math.prod(shape) * dtype.itemsize
                               for shape, dtype in zip(shapes, tensor_dtypes(shapes, dtypes)))
    free = available_memory_bytes(device)
    if free is not None and need * 1.1 > free:
        hint = " (use --shard N)" if suite == "llama-7b" else ""
        raise SystemExit(f"fastclip bench: suite {suite} needs about {need / 2**30:.1f} GiB on {device} "
                         f"and {free / 2**30:.1f} GiB is free{hint}")


def _run_suites(args, device, suites, repeat):
    timer = Timer(device)
    generator = torch.Generator().manual_seed(0)
    progress = _progress_printer(len(suites) * repeat)
    probes = ceiling_probes(device)
    for fn, _, _ in probes.values():
        timer(fn, 0, warmup=2)
    report = {"device": device_name(device), "device_type": device.type, "torch": torch.__version__,
              "fastclip": fastclip.__version__, "threads": torch.get_num_threads(), "repeat": repeat,
              "quick": args.quick, "shard": args.shard, "cases": []}
    for suite in suites:
        shapes, dtypes, _ = SUITES[suite]
        report["cases"].append(run_case(suite, shard_shapes(shapes, args.shard), dtypes or (DTYPES[args.dtype],),
                                        device, timer, repeat, generator, args.quick, progress, probes))
    del probes
    for case in report["cases"]:
        add_floor(case, case["ceilings"])
    report["ceilings"] = {k: max(case["ceilings"][k] for case in report["cases"]) for k in report["cases"][0]["ceilings"]}
    if sys.stderr.isatty():
        print(file=sys.stderr)
    return report


def main(argv=None):
    """``fastclip bench`` with its own argument parser."""
    parser = argparse.ArgumentParser(prog="fastclip bench")
    add_arguments(parser)
    run(parser.parse_args(argv))


if __name__ == "__main__":
    main()

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
import math
import sys

import torch

import fastclip

# The timing, ceilings, floors and output are the harness's, shared with the scripts in bench/
# (Timer, add_floor and ceiling_probes are imported for run_case's callers, e.g. the tests).
from .ceilings import CEILING_BYTES, add_floor, add_floors, ceiling_probes  # noqa: F401
from .command import UsageError, parse_device, run_parsed
from .grads import baseline_methods, make_grads, tensor_dtypes
from .machine import available_memory_bytes, machine_info
from .outputs import check_matplotlib, check_output, write_atomically
from .overhead import many_tiny
from .overhead import table_rows as overhead_rows
from .progress import Progress
from .reports import Column, format_table, method_rows, report_title, write_csv, write_json
from .timing import NORM_ONLY_PREFIX, Timer, clip_case

__all__ = ["GPT2_124M", "LLAMA_7B", "SUITES", "add_arguments", "main", "run", "shard_shapes"]

GPT2_LAYER = [
    (768,),
    (768,),
    (768, 2304),
    (2304,),
    (768, 768),
    (768,),
    (768,),
    (768,),
    (768, 3072),
    (3072,),
    (3072, 768),
    (768,),
]
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
    "mixed": (
        GPT2_124M,
        GPT2_124M_BF16_MATRICES,
        "GPT-2 124M, matrices in bfloat16, vectors (biases, norms) in float32",
    ),
    # The same list in half precision, beside gpt2-124m in the same run: half the bytes should
    # cost about half the time (HALF_PRECISION_NOTE).
    "gpt2-124m-bf16": (GPT2_124M, (torch.bfloat16,), "GPT-2 124M in bfloat16"),
    "gpt2-124m-fp16": (GPT2_124M, (torch.float16,), "GPT-2 124M in float16"),
}
QUICK_SUITES = ["gpt2-124m", "many-small", "mixed"]
# Host overhead rather than memory traffic: its own measurement (fastclip.cli.overhead).
MANY_TINY = "many-tiny"
MANY_TINY_WHAT = (
    "10,000 and 50,000 one-element grads (plain, and DTensor on the CPU): host time as a ratio to the "
    "Python walk over the grads, one thread"
)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "float64": torch.float64}
COMPILE_MAX_TENSORS = 1000


def shard_shapes(shapes, shards):
    """One rank's shapes under an N-way FSDP shard: dim 0 split into N (the first, largest piece)."""
    if shards == 1:
        return list(shapes)
    return [((-(-s[0] // shards),) + tuple(s[1:])) for s in shapes]


def _methods(holder, max_norm, quick, device, timed_calls):
    """The methods available here: (name -> step function, name -> why it was left out)."""
    params = list(holder.parameters())
    methods = baseline_methods(params, max_norm)
    skipped = {}
    # torch.compile traces every tensor: on thousands of them compiling takes minutes, so the
    # compiled method runs on lists of up to COMPILE_MAX_TENSORS (and not with --quick).
    if quick:
        skipped["torch_compile"] = "not with --quick (compiling takes a while)"
    elif len(params) > COMPILE_MAX_TENSORS:
        skipped["torch_compile"] = f"over {COMPILE_MAX_TENSORS} tensors (compiling would take minutes)"
    else:
        methods["torch_compile"] = torch.compile(lambda: torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=True))
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
    return {
        NORM_ONLY_PREFIX + "vendor_l2norm": lambda: multi_tensor_applier(multi_tensor_l2norm, flag, [grads], False)
    }, None


def run_case(suite, shapes, dtypes, device, timer, repeat, generator, quick, progress=None, probes=None):
    """Times every available method on one set of grads (:func:`fastclip.cli.timing.clip_case`,
    every timed call clipping); with ``probes`` (:func:`ceiling_probes`) the memory ceilings join
    the same rounds, and the case gets its own ``ceilings`` measured alongside it. A method that
    fails its warm-up (e.g. torch.compile without a working compiler) is left out and listed
    under ``skipped`` with the reason."""
    grads = make_grads(shapes, dtypes, device, generator)
    case = clip_case(
        grads,
        lambda holder, max_norm: _methods(holder, max_norm, quick, device, timed_calls=repeat + 2),
        timer,
        repeat,
        probes=probes,
        progress=progress,
        label=suite,
    )
    return {"suite": suite, "dtypes": sorted({str(d).replace("torch.", "") for d in dtypes}), **case}


def rows(report):
    """One flat record per case and method (the CSV rows)."""
    shard = report.get("shard", 1)
    return method_rows(
        report["cases"],
        {
            "suite": lambda c: c["suite"],
            "shard": lambda c: shard,
            "dtypes": lambda c: "+".join(c["dtypes"]),
            "tensors": lambda c: c["tensors"],
        },
        ["median_ms", "min_ms", "max_ms", "speedup_vs_torch_foreach", "fraction_of_floor", "kernel_launches", "clips"],
    )


def _method_label(row):
    unclipped = not row["clips"] and not row["method"].startswith(NORM_ONLY_PREFIX)
    return row["method"] + (" (*)" if unclipped else "")


TABLE = [
    Column("suite", lambda r: r["suite"] if r["shard"] == 1 else f"{r['suite']}/{r['shard']}", 12, left=True),
    Column("dtype", lambda r: r["dtypes"], 16, left=True),
    Column("method", _method_label, 26, left=True),
    Column("median ms", lambda r: f"{r['median_ms']:.2f}", 10),
    Column("min-max ms", lambda r: f"{r['min_ms']:8.2f}-{r['max_ms']:<8.2f}", 17),
    Column("vs torch", lambda r: f"{r['speedup_vs_torch_foreach']:.2f}x", 9),
    Column("of floor", lambda r: f"{r['fraction_of_floor']:.0%}", 9),
]
LAUNCHES = Column("launches", lambda r: f"{r['kernel_launches']}", 8)


def half_precision_ratios(report):
    """{suite: fastclip's clip_grad_norm_ time on it / on gpt2-124m} for the half-precision
    suites run beside a float32 gpt2-124m (same run, same rounds' machine)."""

    def fastclip_ms(suite, dtype=None):
        for case in report["cases"]:
            if case["suite"] == suite and (dtype is None or case["dtypes"] == [dtype]):
                return case["methods"].get("fastclip", {}).get("median_s")
        return None

    base = fastclip_ms("gpt2-124m", "float32")
    ratios = {}
    for suite in ("gpt2-124m-bf16", "gpt2-124m-fp16"):
        ms = fastclip_ms(suite)
        if base and ms:
            ratios[suite] = ms / base
    return ratios


def print_table(report, out=None):
    """The terminal table, on ``out`` (the current ``sys.stdout`` by default)."""
    out = out or sys.stdout
    print("\n" + report_title(report), file=out)
    table_rows = list(rows(report))
    print(format_table(table_rows, TABLE + ([LAUNCHES] if report["device_type"] == "cuda" else [])), file=out)
    if report.get("shard", 1) > 1:
        print(
            f"/{report['shard']}: one rank's share of the grads, sharded {report['shard']} ways as FSDP does (--shard)",
            file=out,
        )
    if any(_method_label(r).endswith(" (*)") for r in table_rows):
        print("(*) did not reduce the norm in a checked warm-up call: its time is not a clipping call's", file=out)
    skipped = {}
    for case in report["cases"]:
        for method, why in case.get("skipped", {}).items():
            skipped.setdefault((method, why), []).append(case["suite"])
    for (method, why), suites in skipped.items():
        where = "" if len(suites) == len(report["cases"]) else f" ({', '.join(suites)})"
        print(f"left out: {method}{where}: {why}", file=out)
    ratios = half_precision_ratios(report)
    if ratios:
        print(
            "half precision: fastclip's clip_grad_norm_ at "
            + ", ".join(f"{r:.2f}x ({suite.rsplit('-', 1)[1]})" for suite, r in ratios.items())
            + " of its float32 time on gpt2-124m",
            file=out,
        )


OVERHEAD_TABLE = [
    Column("grads", lambda r: f"{r['tensors']:,} {r['grads']}", 16, left=True),
    Column("method", lambda r: r["method"], 32, left=True),
    Column("median ms", lambda r: f"{r['median_ms']:.2f}", 10),
    Column("vs walk", lambda r: f"{r['vs_walk']:.2f}x", 8),
]


def print_overhead_table(report, out=None):
    out = out or sys.stdout
    print(
        f"\nmany-tiny: host time per call, one thread, as a ratio to the walk over the grads ({report['device']})",
        file=out,
    )
    print(format_table(list(overhead_rows(report["overhead"])), OVERHEAD_TABLE), file=out)
    for case in report["overhead"]:  # a method that failed in its warm-up
        for method, why in case.get("skipped", {}).items():
            print(f"left out: {method} ({case['tensors']:,} {case['grads']}): {why}", file=out)


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
        ys = [
            case["methods"][method][metric] * (100 if metric == "fraction_of_floor" else 1e3)
            for case in cases
            if method in case["methods"]
        ]
        # fastclip's bars solid, torch's and the peers' hatched: ours against theirs at a glance
        ax.bar(
            xs,
            ys,
            width,
            label=method,
            hatch=None if method.startswith("fastclip") else "//",
            edgecolor="white",
            linewidth=0.3,
        )
    if metric == "fraction_of_floor":
        ax.axhline(100, color="black", linewidth=0.8, linestyle="--")  # the DRAM floor
    ax.set_xticks(range(len(cases)), [f"{c['suite']}\n{'+'.join(c['dtypes'])}" for c in cases])
    ax.set_ylabel("% of the memory floor (higher is faster)" if metric == "fraction_of_floor" else "median ms")
    shard = f", one rank's share (sharded {report['shard']} ways)" if report.get("shard", 1) > 1 else ""
    ax.set_title(f"clip_grad_norm_ and clippers{shard}\n{report['device']}", fontsize=10)
    ax.legend(fontsize=8, ncol=min(4, len(methods)), loc="upper center", bbox_to_anchor=(0.5, -0.16), frameon=False)
    write_atomically(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png", bbox_inches="tight"))
    plt.close(fig)


def add_arguments(parser):
    """Adds the bench options, a description and the list of suites to an argparse parser."""
    parser.description = __doc__.split("\n")[0].replace("``", "")
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = "suites:\n" + "\n".join(f"  {name:11s} {what}" for name, (_, _, what) in SUITES.items())
    parser.epilog += f"\n  {MANY_TINY:11s} {MANY_TINY_WHAT}"
    parser.add_argument(
        "--suite",
        action="append",
        choices=[*SUITES, MANY_TINY],
        metavar="NAME",
        help=f"a suite to run (repeatable): {', '.join([*SUITES, MANY_TINY])}. Default: all but "
        f"llama-7b, or {', '.join(QUICK_SUITES)} with --quick",
    )
    parser.add_argument(
        "--dtype",
        choices=list(DTYPES),
        default="float32",
        help="grad dtype (the mixed suite always has bfloat16 matrices and float32 vectors)",
    )
    parser.add_argument("--device", default=None, help="cuda when available, else cpu")
    parser.add_argument("--repeat", type=int, default=None, help="timed rounds per case (default 15; 5 with --quick)")
    parser.add_argument("--shard", type=int, default=1, help="divide every tensor's dim 0 as an N-way FSDP shard would")
    parser.add_argument("--quick", action="store_true", help="a short run (about 14 s on 2 idle CPU cores)")
    parser.add_argument("--json", help="write the results as JSON to this file")
    parser.add_argument("--csv", help="write one row per case and method to this CSV file")
    parser.add_argument("--plot", help="write a PNG bar chart (fraction of the memory floor) to this file")


def run(args):
    """Runs the benchmark for parsed options; prints the table, writes the files, returns the report."""
    if args.repeat is not None and args.repeat < 1:
        raise UsageError("fastclip bench", f"--repeat must be >= 1, got {args.repeat}")
    if args.shard < 1:
        raise UsageError("fastclip bench", f"--shard must be >= 1, got {args.shard}")
    device = _parse_device(args.device)
    check_output("fastclip bench", "--json", args.json)
    check_output("fastclip bench", "--csv", args.csv)
    check_output("fastclip bench", "--plot", args.plot, suffix=".png")
    if args.plot:
        check_matplotlib("fastclip bench", "--plot")
    suites = args.suite or (QUICK_SUITES if args.quick else [s for s in [*SUITES, MANY_TINY] if s != "llama-7b"])
    repeat = args.repeat or (5 if args.quick else 15)
    for suite in suites:
        if suite == MANY_TINY:
            continue
        _check_memory(
            suite, shard_shapes(SUITES[suite][0], args.shard), SUITES[suite][1] or (DTYPES[args.dtype],), device
        )
    try:
        report = _run_suites(args, device, suites, repeat)
    except torch.OutOfMemoryError as e:
        raise SystemExit(
            f"fastclip bench: out of memory on {device} ({str(e).splitlines()[0]}); try fewer suites or --shard N"
        ) from None
    if report["cases"]:
        print_table(report)
    if "overhead" in report:
        print_overhead_table(report)
    if args.json:
        write_json(report, args.json)
    if args.csv:
        write_csv(rows(report), args.csv)
    if args.plot:
        write_plot(report, args.plot)
    return report


def _parse_device(text):
    return parse_device(text, "fastclip bench")


def _check_memory(suite, shapes, dtypes, device):
    need = CEILING_BYTES + sum(
        math.prod(shape) * dtype.itemsize for shape, dtype in zip(shapes, tensor_dtypes(shapes, dtypes))
    )
    free = available_memory_bytes(device)
    if free is not None and need * 1.1 > free:
        hint = " (use --shard N)" if suite == "llama-7b" else ""
        raise SystemExit(
            f"fastclip bench: suite {suite} needs about {need / 2**30:.1f} GiB on {device} "
            f"and {free / 2**30:.1f} GiB is free{hint}"
        )


def _run_suites(args, device, suites, repeat):
    timer = Timer(device)
    generator = torch.Generator().manual_seed(0)
    clip_suites = [s for s in suites if s != MANY_TINY]
    # One bar over every suite, in the order they run; each suite's share fills as it goes.
    progress = Progress(stages=([MANY_TINY] if MANY_TINY in suites else []) + clip_suites, noun="suite")
    probes = ceiling_probes(device) if clip_suites else {}
    report = {**machine_info(device), "repeat": repeat, "quick": args.quick, "shard": args.shard, "cases": []}
    if MANY_TINY in suites:
        progress.stage(MANY_TINY, 4 if device.type == "cpu" else 2)
        report["overhead"] = many_tiny(device, repeat, progress)
    for suite in clip_suites:
        progress.stage(suite, repeat)  # time_methods adds the warm-ups once it knows the methods
        shapes, dtypes, _ = SUITES[suite]
        report["cases"].append(
            run_case(
                suite,
                shard_shapes(shapes, args.shard),
                dtypes or (DTYPES[args.dtype],),
                device,
                timer,
                repeat,
                generator,
                args.quick,
                progress,
                probes,
            )
        )
    del probes
    report["ceilings"] = add_floors(report["cases"]) if report["cases"] else {}
    progress.close()
    return report


def main(argv=None):
    """``fastclip bench`` with its own argument parser; returns the report."""
    parser = argparse.ArgumentParser(prog="fastclip bench")
    add_arguments(parser)
    return run_parsed(parser, run, parser.parse_args(argv))


if __name__ == "__main__":
    main()

"""fastclip.clip_grad_norm_ against torch.nn.utils.clip_grad_norm_ (foreach and per-tensor loop).

Cases: the grads of GPT-2 124M (148 tensors) in float32 and bfloat16, and 10,000 tensors of 4,096
elements. The machine's memory ceilings are measured in the same run (a large read-only sum and
a large in-place multiply, before and after the cases; the higher of each counts). The methods
are timed in interleaved rounds (each round runs every method once, in rotating order) so that
the host's drift touches them alike. Each method is reported as median time, speedup over torch's
foreach path, achieved bandwidth, and the fraction of the memory floor reached:

    floor = grad_bytes / read_ceiling + 2 * grad_bytes / in_place_ceiling

(one read pass for the norm, one read-write pass for the scale; the in-place ceiling counts the
bytes read plus the bytes written). Every timed call really clips: the grads are scaled back up,
untimed, before each call. A last case keeps the norm below max_norm, where nothing needs
scaling (its floor is still the three-pass one, so fastclip's single read exceeds 100%).
Results are printed and written as JSON.

    python bench/bench_clip.py                 # CPU, or CUDA when present
    python bench/bench_clip.py --device cpu --repeat 20 --json bench/results/cpu.json
"""

import argparse
import json
import os
import statistics
import sys

import torch

import fastclip

# Shapes, timing and ceilings are shared with `fastclip bench` (fastclip/bench.py).
from fastclip.bench import GPT2_124M, Timer, device_name, kernel_launches, make_grads, measure_ceilings


def run_case(name, shapes, dtype, device, timer, repeat, generator, include_loop, clips=True):
    """Times every method on one set of grads. With clips=False, max_norm is far above the norm:
    nothing needs scaling (fastclip then reads the grads once; torch still scales by 1)."""
    grads = make_grads(shapes, dtype, device, generator)
    params = []
    for g in grads:
        # Only .grad is read: a zero-stride view stands in for the weights without their memory.
        p = torch.nn.Parameter(torch.zeros((), device=device, dtype=dtype).expand(g.shape))
        p.grad = g
        params.append(p)
    max_norm = 0.5 if clips else 1e30
    fastclip.clip_grad_norm_(params, max_norm)  # start at norm max_norm; see restore_norm below
    grad_bytes = sum(g.numel() * g.element_size() for g in grads)
    # Clipped grads have norm max_norm, and clipping them again gives a coefficient of exactly 1
    # (fastclip then writes nothing). So before every timed call, untimed, the grads are scaled
    # up by 4 (exact in every dtype): each call really clips, with coefficient ~0.25.
    def restore_norm():
        torch._foreach_mul_(grads, 4.0)

    methods = {
        "fastclip": lambda: fastclip.clip_grad_norm_(params, max_norm),
        "torch_foreach": lambda: torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=True),
    }
    if include_loop:
        methods["torch_loop"] = lambda: torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=False)
    setup = restore_norm if clips else None
    for fn in methods.values():
        timer(fn, 0, warmup=2, setup=setup)
    samples = {method: [] for method in methods}
    names = list(methods)
    for round_index in range(repeat):
        for k in range(len(names)):
            method = names[(round_index + k) % len(names)]
            samples[method] += timer(methods[method], 1, warmup=0, setup=setup)
    results = {}
    for method, fn in methods.items():
        median = statistics.median(samples[method])
        results[method] = {
            "median_s": median,
            "min_s": min(samples[method]),
            "max_s": max(samples[method]),
            "gb_per_s": 3 * grad_bytes / median / 1e9,
            "kernel_launches": kernel_launches(fn, device),
        }
    for method in results:
        results[method]["speedup_vs_torch_foreach"] = results["torch_foreach"]["median_s"] / results[method]["median_s"]
    return {"case": name if clips else f"{name} (no clip needed)", "dtype": str(dtype).replace("torch.", ""),
            "tensors": len(grads), "grad_bytes": grad_bytes, "clips": clips, "methods": results}


def add_floor(case, ceilings):
    grad_bytes = case["grad_bytes"]
    case["floor_s"] = grad_bytes / ceilings["read_bytes_per_s"] + 2 * grad_bytes / ceilings["in_place_bytes_per_s"]
    for r in case["methods"].values():
        r["fraction_of_floor"] = case["floor_s"] / r["median_s"]


def print_table(report):
    print(f"\n{report['device_name']}: read {report['ceilings']['read_bytes_per_s'] / 1e9:.1f} GB/s, "
          f"in-place {report['ceilings']['in_place_bytes_per_s'] / 1e9:.1f} GB/s (bytes moved)")
    header = f"{'case':<44}{'method':<15}{'median ms':>11}{'GB/s':>8}{'vs torch':>10}{'of floor':>10}"
    print(header + ("" if report["device"] == "cpu" else f"{'launches':>10}"))
    for case in report["cases"]:
        label = f"{case['case']} {case['dtype']}"
        for method, r in case["methods"].items():
            row = (f"{label:<44}{method:<15}{r['median_s'] * 1e3:>11.2f}{r['gb_per_s']:>8.1f}"
                   f"{r['speedup_vs_torch_foreach']:>9.2f}x{r['fraction_of_floor'] * 100:>9.0f}%")
            print(row + ("" if r["kernel_launches"] is None else f"{r['kernel_launches']:>10}"))
            label = ""


def markdown_table(report):
    """The README's results table for one report."""
    ceil = report["ceilings"]
    lines = [f"{report['device_name']}, torch {report['torch']}, median of {report['repeat']} runs; "
             f"ceilings measured in the same run: read {ceil['read_bytes_per_s'] / 1e9:.1f} GB/s, "
             f"in-place {ceil['in_place_bytes_per_s'] / 1e9:.1f} GB/s.", "",
             "| case | tensors | method | median ms | speedup vs torch foreach | fraction of floor |",
             "| --- | ---: | --- | ---: | ---: | ---: |"]
    for case in report["cases"]:
        for method, r in case["methods"].items():
            lines.append(f"| {case['case']} {case['dtype']} | {case['tensors']} | {method} | {r['median_s'] * 1e3:.2f} | "
                         f"{r['speedup_vs_torch_foreach']:.2f}x | {r['fraction_of_floor'] * 100:.0f}% |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeat", type=int, default=15, help="timed runs per method (median reported)")
    parser.add_argument("--json", default=None, help="output file (default bench/results/clip_grad_norm_<device>.json)")
    parser.add_argument("--no-loop", action="store_true", help="skip torch's slow per-tensor loop")
    parser.add_argument("--markdown", action="store_true", help="also print the results as a markdown table")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be >= 1")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but no GPU is available")
    generator = torch.Generator().manual_seed(int.from_bytes(os.urandom(4), "little"))
    timer = Timer(device)
    ceilings_before = measure_ceilings(device, timer, args.repeat)
    cases = [
        ("gpt2-124m", GPT2_124M, torch.float32, True),
        ("gpt2-124m", GPT2_124M, torch.bfloat16, True),
        ("10000x4096", [(4096,)] * 10_000, torch.float32, True),
        ("gpt2-124m", GPT2_124M, torch.float32, False),
    ]
    report = {
        "benchmark": "clip_grad_norm_",
        "device": device.type,
        "device_name": device_name(device),
        "torch": torch.__version__,
        "fastclip": fastclip.__version__,
        "repeat": args.repeat,
        "cases": [],
    }
    for name, shapes, dtype, clips in cases:
        print(f"running {name} {dtype}{'' if clips else ' (no clip needed)'} ...", file=sys.stderr, flush=True)
        report["cases"].append(run_case(name, shapes, dtype, device, timer, args.repeat, generator,
                                        include_loop=not args.no_loop, clips=clips))
    # The host's bandwidth drifts: the ceilings are measured before and after the cases, and the
    # higher of each is used, so the floor is never flattering.
    ceilings_after = measure_ceilings(device, timer, args.repeat)
    report["ceilings_before"], report["ceilings_after"] = ceilings_before, ceilings_after
    report["ceilings"] = {k: max(ceilings_before[k], ceilings_after[k]) for k in ceilings_before}
    for case in report["cases"]:
        add_floor(case, report["ceilings"])
    print_table(report)
    if args.markdown:
        print("\n" + markdown_table(report))
    path = args.json or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                     f"clip_grad_norm_{device.type}.json")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(report, f, indent=2)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()

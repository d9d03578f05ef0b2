"""fastclip.clip_grad_norm_ against torch.nn.utils.clip_grad_norm_ (foreach and per-tensor loop).

Cases: the grads of GPT-2 124M (148 tensors) in float32 and bfloat16, and 10,000 tensors of 4,096
elements. The methods of a case are timed in interleaved rounds (each round runs every method
once, in rotating order), and so are the machine's memory ceilings (a large read-only reduction
and a large in-place multiply), so the host's drift touches them alike. Each method is reported
as median time, achieved bandwidth, speedup over torch's foreach path, and the fraction of the
memory floor reached at the ceilings timed with it:

    floor = grad_bytes / read_ceiling + 2 * grad_bytes / in_place_ceiling

(one read pass for the norm, one read-write pass for the scale; the in-place ceiling counts the
bytes read plus the bytes written). Every timed call really clips: the grads are scaled back up,
untimed, before each call. A last case keeps the norm below max_norm, where nothing needs
scaling (its floor is still the three-pass one, so fastclip's single read exceeds 100%).
The timing, ceilings, floors and output are fastclip.cli's harness, as for `fastclip bench`.
Results are printed and written as JSON (and CSV with --csv).

    python bench/bench_clip.py                 # CPU, or CUDA when present
    python bench/bench_clip.py --device cpu --repeat 20 --json bench/results/cpu.json
"""

import argparse
import os

import torch

from fastclip.cli.bench import GPT2_124M
from fastclip.cli.ceilings import add_floors, ceiling_probes
from fastclip.cli.command import UsageError, parse_device
from fastclip.cli.grads import baseline_methods, make_grads
from fastclip.cli.machine import machine_info
from fastclip.cli.progress import Progress
from fastclip.cli.reports import Column, format_table, markdown_table, method_rows, report_title, write_csv, write_json
from fastclip.cli.timing import Timer, clip_case

# (name, shapes, dtype, whether every call clips)
CASES = [
    ("gpt2-124m", GPT2_124M, torch.float32, True),
    ("gpt2-124m", GPT2_124M, torch.bfloat16, True),
    ("10000x4096", [(4096,)] * 10_000, torch.float32, True),
    ("gpt2-124m", GPT2_124M, torch.float32, False),
]

TABLE = [
    Column("case", lambda r: f"{r['case']} {r['dtype']}", 43, left=True),
    Column("method", lambda r: r["method"], 14, left=True),
    Column("median ms", lambda r: f"{r['median_ms']:.2f}", 10),
    Column("GB/s", lambda r: f"{r['gb_per_s']:.1f}", 7),
    Column("vs torch", lambda r: f"{r['speedup_vs_torch_foreach']:.2f}x", 9),
    Column("of floor", lambda r: f"{r['fraction_of_floor']:.0%}", 9),
]
LAUNCHES = Column("launches", lambda r: f"{r['kernel_launches']}", 9)
MARKDOWN = [
    Column("case", lambda r: f"{r['case']} {r['dtype']}", left=True),
    Column("tensors", lambda r: f"{r['tensors']}"),
    Column("method", lambda r: r["method"], left=True),
    Column("median ms", lambda r: f"{r['median_ms']:.2f}"),
    Column("speedup vs torch foreach", lambda r: f"{r['speedup_vs_torch_foreach']:.2f}x"),
    Column("fraction of floor", lambda r: f"{r['fraction_of_floor']:.0%}"),
]


def rows(report):
    """One flat record per case and method (the table's, the markdown's and the CSV's rows)."""
    return list(
        method_rows(
            report["cases"],
            {"case": lambda c: c["case"], "dtype": lambda c: c["dtype"], "tensors": lambda c: c["tensors"]},
            [
                "median_ms",
                "min_ms",
                "max_ms",
                "gb_per_s",
                "speedup_vs_torch_foreach",
                "fraction_of_floor",
                "kernel_launches",
            ],
        )
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when available)")
    parser.add_argument("--repeat", type=int, default=15, help="timed rounds per case (median reported)")
    parser.add_argument("--json", default=None, help="output file (default bench/results/clip_grad_norm_<device>.json)")
    parser.add_argument("--csv", default=None, help="also write one row per case and method to this CSV file")
    parser.add_argument("--no-loop", action="store_true", help="skip torch's slow per-tensor loop")
    parser.add_argument("--markdown", action="store_true", help="also print the results as a markdown table")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be >= 1")
    try:
        device = parse_device(args.device, parser.prog)
    except UsageError as e:  # a bad --device: usage, message, exit status 2
        parser.error(e.message)

    def methods_for(holder, max_norm):
        methods = baseline_methods(holder.parameters(), max_norm)
        if args.no_loop:
            del methods["torch_loop"]
        return methods, {}

    timer, generator = Timer(device), torch.Generator().manual_seed(int.from_bytes(os.urandom(4), "little"))
    progress = Progress(stages=[f"{name} {dtype}" for name, _, dtype, _ in CASES], noun="case")
    probes = ceiling_probes(device)
    report = {"benchmark": "clip_grad_norm_", **machine_info(device), "repeat": args.repeat, "cases": []}
    for name, shapes, dtype, clips in CASES:
        progress.stage(steps=args.repeat)
        name = name if clips else f"{name} (no clip needed)"
        case = clip_case(
            make_grads(shapes, dtype, device, generator),
            methods_for,
            timer,
            args.repeat,
            clips=clips,
            probes=probes,
            progress=progress,
            label=f"{name} {dtype}",
        )
        report["cases"].append({"case": name, "dtype": str(dtype).replace("torch.", ""), "clips": clips, **case})
    del probes
    report["ceilings"] = add_floors(report["cases"])
    progress.close()

    print("\n" + report_title(report))
    print(format_table(rows(report), TABLE + ([LAUNCHES] if device.type == "cuda" else [])))
    if args.markdown:
        print(f"\n{report_title(report)}.\n\n{markdown_table(rows(report), MARKDOWN)}")
    path = args.json or os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "results", f"clip_grad_norm_{device.type}.json"
    )
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    write_json(report, path)
    if args.csv:
        write_csv(rows(report), args.csv)
    print(f"\nwrote {path}" + (f" and {args.csv}" if args.csv else ""))


if __name__ == "__main__":
    main()

"""The stateful clippers against their reference packages, per step, on the same gradients.

Cases (CPU now; CUDA when present):
* ZClip vs ``zclip.ZClip`` on GPT-2 124M grads (float32), every step clipping (max_grad_norm
  below the norm, so both really scale).
* AutoClip (``scope="tensor"``, ``history_size=1000``, ``lag=1``) vs ``autoclip``'s per-tensor
  ``QuantileClip`` on 10,000 tensors of 4,096 elements, histories already 50 steps long.
* AutoClip (whole history, the paper) vs the paper's algorithm (numpy percentile) on GPT-2, with
  histories of 1,000 and 1,000,000 steps (``AutoClip.load_history``), and against
  clip_grad_norm_ (the same passes, no statistics).
* AGC vs ``timm.utils.adaptive_clip_grad`` on GPT-2, on many short rows (one [65536, 256]
  weight) and on one huge row (a 1-d tensor of 2^25 elements on the CPU, 2^28 on a GPU: an FSDP
  flat shard, which one row per block would stream through a single SM).
* StableSPAM vs the Stable-SPAM reference code's AdaClip and AdaGN (ported here, host syncs and
  all) on GPT-2, every tensor rescaled by AdaClip; clip_grad_norm_ for the cost of two passes.
* Clip plus fused AdamW on GPT-2: the optimizer step alone, ZClip scaling the grads then the
  step, and ZClip attached to the optimizer (the coefficient folded into the step).

Methods of a case are timed in interleaved rounds (each round runs every method once, in
rotating order); grads are restored, untimed, before every call, so every timed call clips the
same data. Reported: the median time and the ratio to the reference. The timing and output are
fastclip.cli's harness, as for `fastclip bench`. Results are printed, and written as JSON
(--json) and CSV (--csv).

    python bench/bench_clippers.py --repeat 7 --json bench/results/clippers_cpu.json
"""

import argparse
import platform
from collections.abc import Callable
from importlib.metadata import version
from typing import NamedTuple

import numpy as np
import torch

import fastclip
from fastclip.cli.bench import GPT2_124M
from fastclip.cli.command import UsageError, parse_device
from fastclip.cli.grads import GradHolder, make_grads
from fastclip.cli.machine import machine_info
from fastclip.cli.progress import Progress
from fastclip.cli.reports import Column, format_table, method_rows, report_title, write_csv, write_json
from fastclip.cli.timing import Timer, add_speedups, time_methods

HISTORY_STEPS = (1_000, 1_000_000)


class Case(NamedTuple):
    """What a case times: ``methods`` (name -> one step), ``setup`` before every call (restores
    the grads), ``warmup`` untimed calls first, and the ``reference`` the others are compared to."""

    title: str
    methods: dict[str, Callable]
    reference: str
    setup: Callable
    warmup: int = 2


def gpt2(device, gen, weights=False):
    """GPT-2 124M's float32 grads, held as parameters' grads, and a call restoring them."""
    holder = GradHolder(make_grads(GPT2_124M, torch.float32, device, gen), weights=weights)
    return holder, list(holder.parameters()), holder.restorer()


def paper_autoclip(params, percentile, history):
    """The paper's AutoClip step: the norm into a Python list, numpy's percentile of it, a clip."""

    def step():
        norm = float(torch.nn.utils.get_total_norm([p.grad for p in params]))
        history.append(norm)
        torch.nn.utils.clip_grad_norm_(params, float(np.percentile(history, percentile)))

    return step


def case_zclip(device, gen):
    import zclip

    holder, params, restore = gpt2(device, gen)
    # The norm of these grads is ~5,500: a cap of 1,000 makes every step scale.
    peer = zclip.ZClip(warmup_steps=3, max_grad_norm=1000.0)
    ours = fastclip.ZClip(params, warmup_steps=3, max_grad_norm=1000.0)
    reference = f"zclip {version('zclip')}"
    return Case(
        "ZClip, GPT-2 124M fp32",
        {reference: lambda: peer.step(holder), "fastclip.ZClip": ours.step},
        reference,
        restore,
        warmup=5,
    )  # both past their warm-up of 3 steps


def case_autoclip_tensor(device, gen):
    import autoclip.torch as ac

    holder = GradHolder(make_grads([(4096,)] * 10000, torch.float32, device, gen))
    restore = holder.restorer()
    peer = ac.QuantileClip(list(holder.parameters()), quantile=0.9, history_length=1000, global_threshold=False)
    ours = fastclip.AutoClip(holder.parameters(), percentile=90.0, history_size=1000, scope="tensor", lag=1)
    for _ in range(50):
        for g in holder.grads:
            g.mul_(1.01)  # a drifting history
        peer.step()
        ours.step()
    reference = f"autoclip {version('autoclip')} QuantileClip"
    return Case(
        "AutoClip per tensor, 10,000 x 4,096 fp32",
        {reference: peer.step, "fastclip.AutoClip": ours.step},
        reference,
        restore,
    )


def case_autoclip_history(device, gen):
    holder, params, restore = gpt2(device, gen)
    norm = holder.norm()
    methods = {}
    for steps in HISTORY_STEPS:
        # Past norms spread over [0.5 norm, 1.5 norm], sorted: the 10th percentile sits below the
        # current norm, so every timed step clips.
        history = torch.sort(torch.rand(steps, generator=gen) * norm + 0.5 * norm).values
        methods[f"paper (numpy percentile), {steps:,} steps"] = paper_autoclip(params, 10.0, history.tolist())
        ours = fastclip.AutoClip(params, percentile=10.0)
        ours.load_history(history)
        methods[f"fastclip.AutoClip, {steps:,} steps"] = ours.step
    # The same passes with no statistics at all: a fixed threshold below the norm.
    methods["fastclip.clip_grad_norm_ (norm + scale)"] = lambda: fastclip.clip_grad_norm_(params, 0.5 * norm)
    return Case(
        "AutoClip whole history (paper), GPT-2 124M fp32, every step clipping",
        methods,
        f"paper (numpy percentile), {HISTORY_STEPS[-1]:,} steps",
        restore,
    )


def agc_case(title, holder):
    import timm.utils

    params = list(holder.parameters())
    for p in params:
        p.data.normal_(generator=torch.Generator().manual_seed(1))
    ours = fastclip.AGC(params, clip_factor=0.01)
    return Case(
        title,
        {"timm adaptive_clip_grad": lambda: timm.utils.adaptive_clip_grad(params, 0.01), "fastclip.AGC": ours.step},
        "timm adaptive_clip_grad",
        holder.restorer(),
    )


def case_agc(device, gen):
    return agc_case("AGC, GPT-2 124M fp32", gpt2(device, gen, weights=True)[0])


def case_agc_many_rows(device, gen):
    grads = make_grads([(65536, 256)], torch.float32, device, gen)
    return agc_case("AGC, 65,536 rows of 256 fp32", GradHolder(grads, weights=True))


def case_agc_huge_row(device, gen):
    numel = 2**28 if device.type == "cuda" else 2**25
    grads = make_grads([(numel,)], torch.float32, device, gen)
    return agc_case(f"AGC, one 1-d tensor of {numel:,} fp32 (one row)", GradHolder(grads, weights=True))


def reference_stable_spam(params, gamma1=0.7, gamma2=0.9, theta=0.999, eps=1e-8):
    """The reference code's AdaClip and AdaGN (TianjinYellow/StableSPAM galore_torch/stablespam.py),
    one tensor at a time with its host syncs (``mask.sum() > 0``, boolean indexing, ``if
    grad_norm > 0``); the AdaGN output is written back into the grad here, as fastclip does."""
    state = {}

    def step():
        for p in params:
            grad = p.grad
            st = state.setdefault(p, {"step": 0, "m_max_t": 0, "m_norm_t": 0, "v_norm_t": 0})
            max_gradient = torch.max(grad.abs())
            st["step"] += 1
            m_max_t = theta * st["m_max_t"] + (1 - theta) * max_gradient
            m_max_hat = m_max_t / (1 - theta ** st["step"])
            mask = grad.abs() > m_max_hat
            if mask.sum() > 0:
                grad[mask] = grad[mask] / max_gradient * m_max_hat
            st["m_max_t"] = m_max_t
            grad_norm = torch.norm(grad)
            m_norm_t = gamma1 * st["m_norm_t"] + (1 - gamma1) * grad_norm
            v_norm_t = gamma2 * st["v_norm_t"] + (1 - gamma2) * grad_norm**2
            m_norm_hat = m_norm_t / (1 - gamma1 ** st["step"])
            v_norm_hat = v_norm_t / (1 - gamma2 ** st["step"])
            c_norm_t = m_norm_hat / (torch.sqrt(v_norm_hat) + eps)
            if grad_norm > 0:
                grad.copy_(grad / grad_norm * c_norm_t)
            st["m_norm_t"], st["v_norm_t"] = m_norm_t, v_norm_t

    return step


def case_stable_spam(device, gen):
    holder, params, restore = gpt2(device, gen)
    reference, ours = reference_stable_spam(params), fastclip.StableSPAM(params)
    # Three steps on grads a quarter the size: the timed ones (the grads restored) are then a spike
    # above every tensor's AdaClip threshold, so each step rescales as well as scales.
    for _ in range(3):
        torch._foreach_mul_(holder.grads, 0.25)
        reference()
        ours.step()
        restore()
    norm = holder.norm()
    return Case(
        "Stable-SPAM AdaClip + AdaGN, GPT-2 124M fp32",
        {
            "reference code (stablespam.py)": reference,
            "fastclip.StableSPAM": ours.step,
            "fastclip.clip_grad_norm_ (norm + scale)": lambda: fastclip.clip_grad_norm_(params, 0.5 * norm),
        },
        "reference code (stablespam.py)",
        restore,
    )


def case_attach(device, gen):
    holder, params, restore = gpt2(device, gen, weights=True)
    opt = torch.optim.AdamW(params, lr=1e-4, fused=True)
    scaling = fastclip.ZClip(params, warmup_steps=3, max_grad_norm=1000.0)
    attached = fastclip.ZClip(params, warmup_steps=3, max_grad_norm=1000.0)

    def clip_then_step():
        scaling.step()
        opt.step()

    # attach() hooks the optimizer for every step; the other methods run with it detached.
    def attached_step():
        attached.attach(opt)
        try:
            attached.step()
            opt.step()
        finally:
            attached.detach()

    return Case(
        "ZClip + fused AdamW, GPT-2 124M fp32",
        {
            "fused AdamW step alone": opt.step,
            "ZClip.step() then AdamW step": clip_then_step,
            "ZClip attached + AdamW step": attached_step,
        },
        "ZClip.step() then AdamW step",
        restore,
        warmup=5,
    )


CASES = {
    "zclip": case_zclip,
    "autoclip-tensor": case_autoclip_tensor,
    "autoclip-history": case_autoclip_history,
    "agc": case_agc,
    "agc-many-rows": case_agc_many_rows,
    "agc-huge-row": case_agc_huge_row,
    "stable-spam": case_stable_spam,
    "attach": case_attach,
}
TABLE = [
    Column("method", lambda r: r["method"], 42, left=True),
    Column("median ms", lambda r: f"{r['median_ms']:.2f}", 10),
    Column("min-max ms", lambda r: f"{r['min_ms']:.2f}-{r['max_ms']:.2f}", 17),
    Column("vs reference", lambda r: f"{r['speedup_vs_reference']:.2f}x", 14),
]
ROW_FIELDS = ["median_ms", "min_ms", "max_ms", "speedup_vs_reference"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when available)")
    parser.add_argument("--repeat", type=int, default=7, help="timed rounds per case (median reported)")
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated subset of " + ", ".join(CASES))
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--csv", help="write one row per case and method to this CSV file")
    args = parser.parse_args(argv)
    names = args.cases.split(",")
    if args.repeat < 1 or not set(names) <= set(CASES):
        parser.error(f"--repeat must be >= 1 and --cases a subset of {', '.join(CASES)}")
    try:
        device = parse_device(args.device, parser.prog)
    except UsageError as e:  # a bad --device: usage, message, exit status 2
        parser.error(e.message)
    timer, gen = Timer(device), torch.Generator().manual_seed(0)
    progress = Progress(stages=names, noun="case")
    report = {**machine_info(device), "python": platform.python_version(), "repeat": args.repeat, "cases": []}
    for name in names:
        progress.stage(steps=args.repeat)
        case = CASES[name](device, gen)
        timed = time_methods(
            case.methods, timer, args.repeat, setup=case.setup, warmup=case.warmup, progress=progress, label=name
        )
        add_speedups(timed["methods"], case.reference, "speedup_vs_reference")
        report["cases"].append({"case": case.title, "reference": case.reference, **timed})
        del case, timed  # frees this case's grads and clippers before the next one's
    progress.close()
    print("# " + report_title(report))
    for case in report["cases"]:
        print(f"\n## {case['case']} (reference: {case['reference']})")
        print(format_table(method_rows([case], {}, ROW_FIELDS), TABLE))
    if args.json:
        write_json(report, args.json)
    if args.csv:
        write_csv(
            method_rows(
                report["cases"], {"case": lambda c: c["case"], "reference": lambda c: c["reference"]}, ROW_FIELDS
            ),
            args.csv,
        )


if __name__ == "__main__":
    main()

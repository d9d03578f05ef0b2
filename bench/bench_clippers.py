"""The stateful clippers against their reference packages, per step, on the same gradients.

Cases (CPU now; CUDA when present):
* ZClip vs ``zclip.ZClip`` on GPT-2 124M grads (float32), every step clipping (max_grad_norm
  below the norm, so both really scale).
* AutoClip (``scope="tensor"``, ``history_size=1000``, ``lag=1``) vs ``autoclip``'s per-tensor
  ``QuantileClip`` on 10,000 tensors of 4,096 elements, histories already 50 steps long.
* AutoClip (whole history, the paper) vs the paper's algorithm (numpy percentile) on GPT-2, with
  histories of 1,000 and 1,000,000 steps, and against clip_grad_norm_ (the same passes, no statistics).
* AGC vs ``timm.utils.adaptive_clip_grad`` on GPT-2.
* Clip plus fused AdamW on GPT-2: the optimizer step alone, ZClip scaling the grads then the
  step, and ZClip attached to the optimizer (the coefficient folded into the step).

Methods of a case are timed in interleaved rounds (each round runs every method once); grads are
restored, untimed, before every call, so every timed call clips the same data. Reported: the
median time and the ratio to the reference. Results are printed and written as JSON.

    python bench/bench_clippers.py --repeat 7 --json bench/results/clippers_cpu.json
"""

import argparse
import json
import os
import platform
import statistics
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_clip import GPT2_124M, Timer, device_name, make_grads  # noqa: E402

import fastclip  # noqa: E402


class Holder(torch.nn.Module):
    """Parameters whose grads are the benchmark's grads (zclip takes a module)."""

    def __init__(self, grads):
        super().__init__()
        self.params = torch.nn.ParameterList([torch.nn.Parameter(torch.zeros_like(g)) for g in grads])
        for p, g in zip(self.params, grads):
            p.grad = g


def interleaved(timer, methods, repeat, restore):
    samples = {name: [] for name in methods}
    for name, fn in methods.items():  # warm-up
        restore()
        fn()
    for _ in range(repeat):
        for name, fn in methods.items():
            samples[name] += timer(fn, 1, warmup=0, setup=restore)
    return {name: statistics.median(s) for name, s in samples.items()}


def restorer(holder, saved):
    def restore():
        for p, s in zip(holder.params, saved):
            p.grad.copy_(s)
    return restore


def paper_autoclip(params, percentile, history):
    def step():
        norm = float(torch.nn.utils.get_total_norm([p.grad for p in params]))
        history.append(norm)
        torch.nn.utils.clip_grad_norm_(params, float(np.percentile(history, percentile)))
    return step


def synthetic_history(norm, steps, gen):
    """`steps` past norms spread over [0.5 norm, 1.5 norm]: the 10th percentile sits below the
    current norm, so every timed step clips."""
    return torch.sort(torch.rand(steps, generator=gen) * norm + 0.5 * norm)[0]


def autoclip_with_history(params, norms, percentile):
    """An AutoClip whose whole history already holds `norms` (sorted): the state is built
    directly, a descending array being a max-heap and an ascending one a min-heap."""
    clipper = fastclip.AutoClip(params, percentile=percentile)
    steps = norms.numel()
    lower_size = clipper._lower_size(steps)
    state = {"lower": norms[:lower_size].flip(0).reshape(1, -1).clone(),
             "upper": norms[lower_size:].reshape(1, -1).clone(), "window": torch.zeros(1, 0),
             "counters": torch.tensor([[lower_size, steps - lower_size, 0, 0, 0]])}
    clipper.load_state_dict({"config": clipper._config(), "host": {"steps": steps}, "state": state})
    return clipper


def case_zclip(device, timer, repeat, gen):
    import zclip

    grads = make_grads(GPT2_124M, torch.float32, device, gen)
    saved = [g.clone() for g in grads]
    holder = Holder(grads)
    # The norm of these grads is ~5,500: a cap of 1,000 makes every step scale.
    peer = zclip.ZClip(warmup_steps=3, max_grad_norm=1000.0)
    ours = fastclip.ZClip(holder.parameters(), warmup_steps=3, max_grad_norm=1000.0)
    restore = restorer(holder, saved)
    for _ in range(4):  # both past warm-up
        restore()
        peer.step(holder)
        restore()
        ours.step()
    t = interleaved(timer, {"zclip 1.0.0": lambda: peer.step(holder), "fastclip.ZClip": ours.step}, repeat, restore)
    return {"case": "ZClip, GPT-2 124M fp32", "times": t, "reference": "zclip 1.0.0"}


def case_autoclip_tensor(device, timer, repeat, gen):
    import autoclip.torch as ac

    grads = make_grads([(4096,)] * 10000, torch.float32, device, gen)
    saved = [g.clone() for g in grads]
    holder = Holder(grads)
    peer = ac.QuantileClip(list(holder.parameters()), quantile=0.9, history_length=1000, global_threshold=False)
    ours = fastclip.AutoClip(holder.parameters(), percentile=90.0, history_size=1000, scope="tensor", lag=1)
    restore = restorer(holder, saved)
    for _ in range(50):
        for g in holder.params:
            g.grad.mul_(1.01)  # a drifting history
        peer.step()
        ours.step()
    t = interleaved(timer, {"autoclip 0.2.1 QuantileClip": peer.step, "fastclip.AutoClip": ours.step}, repeat,
                    restore)
    return {"case": "AutoClip per tensor, 10,000 x 4,096 fp32", "times": t, "reference": "autoclip 0.2.1 QuantileClip"}


def case_autoclip_history(device, timer, repeat, gen):
    grads = make_grads(GPT2_124M, torch.float32, device, gen)
    saved = [g.clone() for g in grads]
    holder = Holder(grads)
    params = list(holder.parameters())
    norm = float(torch.nn.utils.get_total_norm(saved))
    methods = {}
    for steps in (1_000, 1_000_000):
        history = synthetic_history(norm, steps, gen)
        methods[f"paper (numpy percentile), {steps:,} steps"] = paper_autoclip(params, 10.0, history.tolist())
        methods[f"fastclip.AutoClip, {steps:,} steps"] = autoclip_with_history(params, history.to(device), 10.0).step
    # The same passes with no statistics at all: a fixed threshold below the norm.
    methods["fastclip.clip_grad_norm_ (norm + scale)"] = lambda: fastclip.clip_grad_norm_(params, 0.5 * norm)
    t = interleaved(timer, methods, repeat, restorer(holder, saved))
    return {"case": "AutoClip whole history (paper), GPT-2 124M fp32, every step clipping", "times": t,
            "reference": "paper (numpy percentile), 1,000,000 steps"}


def case_agc(device, timer, repeat, gen):
    import timm.utils

    grads = make_grads(GPT2_124M, torch.float32, device, gen)
    saved = [g.clone() for g in grads]
    holder = Holder(grads)
    for p in holder.params:
        p.data.normal_(generator=gen)
    params = list(holder.parameters())
    ours = fastclip.AGC(params, clip_factor=0.01)
    t = interleaved(timer, {"timm adaptive_clip_grad": lambda: timm.utils.adaptive_clip_grad(params, 0.01),
                            "fastclip.AGC": ours.step}, repeat, restorer(holder, saved))
    return {"case": "AGC, GPT-2 124M fp32", "times": t, "reference": "timm adaptive_clip_grad"}


def case_attach(device, timer, repeat, gen):
    grads = make_grads(GPT2_124M, torch.float32, device, gen)
    saved = [g.clone() for g in grads]
    holder = Holder(grads)
    params = list(holder.parameters())
    opt = torch.optim.AdamW(params, lr=1e-4, fused=True)
    scaling = fastclip.ZClip(params, warmup_steps=3, max_grad_norm=1000.0)
    attached_clipper = fastclip.ZClip(params, warmup_steps=3, max_grad_norm=1000.0)
    restore = restorer(holder, saved)

    def clip_then_step():
        scaling.step()
        opt.step()

    def attached():
        attached_clipper.step()
        opt.step()

    # attach() hooks the optimizer for every step; the other methods run with it detached.
    def attached_step():
        attached_clipper.attach(opt)
        try:
            attached()
        finally:
            attached_clipper.detach()

    for _ in range(4):
        restore()
        clip_then_step()
        restore()
        attached_step()
    t = interleaved(timer, {"fused AdamW step alone": opt.step, "ZClip.step() then AdamW step": clip_then_step,
                            "ZClip attached + AdamW step": attached_step}, repeat, restore)
    return {"case": "ZClip + fused AdamW, GPT-2 124M fp32", "times": t, "reference": "ZClip.step() then AdamW step"}


CASES = {"zclip": case_zclip, "autoclip-tensor": case_autoclip_tensor, "autoclip-history": case_autoclip_history,
         "agc": case_agc, "attach": case_attach}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated subset of " + ", ".join(CASES))
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    timer = Timer(device)
    gen = torch.Generator().manual_seed(0)
    report = {"device": device_name(device), "torch": torch.__version__, "threads": torch.get_num_threads(),
              "python": platform.python_version(), "repeat": args.repeat, "cases": []}
    print(f"# {report['device']}, torch {report['torch']}, {report['threads']} threads, median of {args.repeat}")
    for name in args.cases.split(","):
        case = CASES[name](device, timer, args.repeat, gen)
        ref = case["times"][case["reference"]]
        print(f"\n## {case['case']}")
        for method, t in case["times"].items():
            print(f"  {method:42s} {t * 1e3:10.2f} ms   {ref / t:7.2f}x vs {case['reference']}")
        report["cases"].append(case)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()

"""``fastclip demo``: why adaptive clipping exists, in one small training run.

A small causal transformer language model learns a synthetic language (a fixed random bigram
chain, generated here: nothing is downloaded). At known steps a corrupted batch arrives whose
loss is scaled up by ``--spike-scale`` (as a broken loss scale or a bad shard would do): a
gradient spike. The same run, from the same seed, is trained with no clipping, a fixed
threshold (``NormClip``), ZClip, AutoClip, Stable-SPAM (AdaClip and AdaGN, attached to the
optimizer) and ZClip with step skipping (a :class:`fastclip.StepSkipper` watching the loss and
ZClip's norm, so a spike's step is not taken at all); the demo prints the final losses, how many
steps each run clipped or skipped and the worst loss after a spike, and writes a PNG of the loss
curves and, for ZClip and AutoClip, the gradient norm against the threshold.
"""

import argparse
import json
import math
import time

import torch

import fastclip
from fastclip._command import UsageError, run_parsed
from fastclip._outputs import check_matplotlib, check_output, write_atomically

__all__ = ["CLIPPERS", "SKIPPERS", "add_arguments", "main", "run", "train"]

VOCAB, SEQ, BATCH = 48, 32, 16
DEFAULT_STEPS, QUICK_STEPS = 300, 160


def bigram_chain(generator):
    """Transition probabilities: each token has a few likely successors (a learnable language)."""
    logits = torch.randn(VOCAB, VOCAB, generator=generator) * 4.0
    return torch.softmax(logits, dim=-1)


def sample_batch(chain, generator):
    """A batch of sequences from the chain: (inputs, next-token targets)."""
    tokens = torch.empty(BATCH, SEQ + 1, dtype=torch.long)
    tokens[:, 0] = torch.randint(0, VOCAB, (BATCH,), generator=generator)
    for t in range(SEQ):
        tokens[:, t + 1] = torch.multinomial(chain[tokens[:, t]], 1, generator=generator).squeeze(1)
    return tokens[:, :-1], tokens[:, 1:]


class TinyLM(torch.nn.Module):
    def __init__(self, width=64, layers=2, heads=4):
        super().__init__()
        self.embed = torch.nn.Embedding(VOCAB, width)
        self.position = torch.nn.Parameter(torch.randn(SEQ, width) * 0.02)
        layer = torch.nn.TransformerEncoderLayer(width, heads, 4 * width, dropout=0.0, batch_first=True,
                                                 norm_first=True)
        self.blocks = torch.nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = torch.nn.Linear(width, VOCAB)
        self.register_buffer("mask", torch.nn.Transformer.generate_square_subsequent_mask(SEQ), persistent=False)

    def forward(self, tokens):
        x = self.embed(tokens) + self.position
        return self.head(self.blocks(x, mask=self.mask, is_causal=True))


# Each run's clipper, made from the model's parameters and the run's length.
CLIPPERS = {
    "no clipping": None,
    "fixed (NormClip, 1.0)": lambda p, steps: fastclip.NormClip(p, max_norm=1.0),
    "ZClip": lambda p, steps: fastclip.ZClip(p, warmup_steps=20, max_grad_norm=None),
    "AutoClip (p10)": lambda p, steps: fastclip.AutoClip(p, percentile=10.0),
    "Stable-SPAM": lambda p, steps: fastclip.StableSPAM(p, total_steps=steps),  # beta1's decay over the run
    "ZClip + step skipping": lambda p, steps: fastclip.ZClip(p, warmup_steps=20, max_grad_norm=None),
}
# The runs that also skip steps, and their skipper: a window of 20 steps decides from the 11th
# (OLMo-core's 128 would decide from the 65th, past the short runs' first spikes).
SKIPPERS = {"ZClip + step skipping": lambda: fastclip.StepSkipper(window=20, sigma=6.0)}


def train(name, steps, spikes, spike_scale, seed, lr):
    """One run with the clipper `name` (a key of CLIPPERS): per-step losses, norms, thresholds."""
    torch.manual_seed(seed)
    data_gen = torch.Generator().manual_seed(seed)
    chain = bigram_chain(torch.Generator().manual_seed(1))
    model = TinyLM()
    # fused: the step reads found_inf, so a skipper can skip it without a host sync.
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0, fused=True)
    clipper = CLIPPERS[name](model.parameters(), steps) if CLIPPERS[name] else None
    if isinstance(clipper, fastclip.StableSPAM):
        clipper.attach(optimizer)  # the rest of Stable-SPAM: beta1's cosine decay
    skipper = SKIPPERS[name]().attach(optimizer) if name in SKIPPERS else None
    losses, norms, thresholds, clipped, skipped = [], [], [], 0, 0
    for step in range(steps):
        inputs, targets = sample_batch(chain, data_gen)
        if step in spikes:  # a corrupted batch: random targets, and the loss blown up
            targets = torch.randint(0, VOCAB, targets.shape, generator=data_gen)
        logits = model(inputs)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB), targets.reshape(-1))
        optimizer.zero_grad()
        (loss * (spike_scale if step in spikes else 1.0)).backward()
        if clipper is None:
            norms.append(float(fastclip.get_total_norm([p.grad for p in model.parameters()])))
            thresholds.append(float("nan"))
        else:
            result = clipper.step()
            norms.append(float(result.norm))
            if isinstance(clipper, fastclip.ZClip):  # the bound a norm must exceed to count as a spike
                thresholds.append(float(result.mean + clipper.z_thresh * result.std))
            elif result.threshold.dim() == 0:
                thresholds.append(float(result.threshold))
            else:  # one per tensor
                thresholds.append(float("nan"))
            clipped += bool(result.clipped)
            if skipper is not None:
                skipped += bool(skipper.step(loss.detach(), result.norm).skip)
        optimizer.step()
        losses.append(float(loss.detach()))
    return {"losses": losses, "norms": norms, "thresholds": thresholds, "steps_clipped": clipped,
            "steps_skipped": skipped}


def summarize(runs, spikes, tail):
    """Final loss (mean of the last `tail` clean steps), worst loss after a spike, steps clipped."""
    summary = {}
    for name, run in runs.items():
        losses = run["losses"]
        clean = [l for i, l in enumerate(losses) if i not in spikes]
        after = [losses[i] for s in spikes for i in range(s + 1, min(s + 11, len(losses))) if i not in spikes]
        summary[name] = {"final_loss": sum(clean[-tail:]) / len(clean[-tail:]),
                         "worst_loss_after_a_spike": max(after) if after else float("nan"),
                         "steps_clipped": run["steps_clipped"], "steps_skipped": run["steps_skipped"],
                         "largest_grad_norm": max(run["norms"])}
    return summary


def write_plot(runs, spikes, path):
    """Loss curves, and norm against threshold for the adaptive clippers, as a PNG."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit("fastclip demo: the plot needs matplotlib (pip install matplotlib), or pass --no-plot") from None
    adaptive = [n for n in runs if n in ("ZClip", "AutoClip (p10)")]
    fig, axes = plt.subplots(1, 1 + len(adaptive), figsize=(5 * (1 + len(adaptive)), 4))
    for name, run in runs.items():
        axes[0].plot(run["losses"], label=name, linewidth=1)
    for s in spikes:
        axes[0].axvline(s, color="grey", alpha=0.3, linewidth=0.8)
    axes[0].set(title="training loss (grey: injected spikes)", xlabel="step", ylabel="loss", yscale="log")
    axes[0].legend(fontsize=8)
    for ax, name in zip(axes[1:], adaptive):
        ax.plot(runs[name]["norms"], label="gradient norm (pre-clip)", linewidth=1)
        label = "spike bound: mean + z_thresh * std" if name == "ZClip" else "threshold (10th percentile)"
        ax.plot(runs[name]["thresholds"], label=label, linewidth=1)
        ax.set(title=name, xlabel="step", yscale="log")
        ax.legend(fontsize=8)
    fig.tight_layout()
    write_atomically(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    plt.close(fig)


def default_spikes(steps):
    """Two spikes in a row, then two lone ones, spread over the run: 120, 121, 200, 250 for 300 steps."""
    return {steps * 2 // 5, steps * 2 // 5 + 1, steps * 2 // 3, steps * 5 // 6}


def add_arguments(parser):
    """Adds the demo options and a description to an argparse parser."""
    parser.description = __doc__.split("\n")[0].replace("``", "")
    parser.add_argument("--steps", type=int, default=None,
                        help=f"training steps per run (default {DEFAULT_STEPS}; {QUICK_STEPS} with --quick)")
    parser.add_argument("--quick", action="store_true",
                        help=f"a shorter run: {QUICK_STEPS} steps unless --steps says otherwise (about 10 s on 2 cores)")
    parser.add_argument("--spikes", default=None,
                        help="comma-separated steps that get a corrupted, blown-up batch (default: at 40%%, "
                             "40%% + 1 step, 67%% and 83%% of --steps: 120,121,200,250 for 300)")
    parser.add_argument("--spike-scale", type=float, default=1e4, help="how much a spike scales the loss (default 1e4)")
    parser.add_argument("--lr", type=float, default=3e-3, help="AdamW's learning rate (default 3e-3)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seeds the model's initial weights and the batches, the same for every run (default 0)")
    parser.add_argument("--plot", default="fastclip-demo.png", help="where to write the PNG")
    parser.add_argument("--no-plot", action="store_true", help="do not write the PNG")
    parser.add_argument("--json", help="write the curves and the summary as JSON to this file")


def run(args):
    """Trains every run for parsed options, prints the summary, writes the files; returns the summary."""
    if args.steps is None:
        args.steps = QUICK_STEPS if args.quick else DEFAULT_STEPS
    if args.steps < 10:
        raise UsageError("fastclip demo", f"--steps must be >= 10, got {args.steps}")
    try:
        spikes = (default_spikes(args.steps) if args.spikes is None
                  else {int(s) for s in args.spikes.split(",") if s.strip()})
    except ValueError:
        raise UsageError("fastclip demo", f"--spikes must be comma-separated step numbers, got {args.spikes!r}") from None
    outside = sorted(s for s in spikes if not 0 <= s < args.steps)
    if outside:
        raise UsageError("fastclip demo", f"--spikes must be steps in [0, {args.steps}) (--steps {args.steps}), "
                         f"got {', '.join(map(str, outside))}")
    if len(spikes) > args.steps // 2:
        raise UsageError("fastclip demo", f"--spikes must leave most steps clean, got {len(spikes)} spikes "
                         f"in {args.steps} steps")
    if not math.isfinite(args.spike_scale) or args.spike_scale <= 0:
        raise UsageError("fastclip demo", f"--spike-scale must be finite and > 0, got {args.spike_scale}")
    if not math.isfinite(args.lr) or args.lr <= 0:
        raise UsageError("fastclip demo", f"--lr must be finite and > 0, got {args.lr}")
    if not 0 <= args.seed < 2**63:
        raise UsageError("fastclip demo", f"--seed must be in [0, 2**63), got {args.seed}")
    if not args.no_plot:
        check_output("fastclip demo", "--plot", args.plot, suffix=".png")
        check_matplotlib("fastclip demo", "--plot (or pass --no-plot)")
    check_output("fastclip demo", "--json", args.json)
    runs = {}
    for name in CLIPPERS:
        start = time.perf_counter()
        runs[name] = train(name, args.steps, spikes, args.spike_scale, args.seed, args.lr)
        print(f"  trained with {name:24s} in {time.perf_counter() - start:5.1f} s")
    summary = summarize(runs, spikes, tail=max(5, args.steps // 10))
    print(f"\n{'run':24s} {'final loss':>10s} {'worst loss after a spike':>25s} {'steps clipped':>14s} "
          f"{'steps skipped':>14s}")
    for name, s in summary.items():
        print(f"{name:24s} {s['final_loss']:10.3f} {s['worst_loss_after_a_spike']:25.3f} {s['steps_clipped']:14d} "
              f"{s['steps_skipped']:14d}")
    if not args.no_plot:
        write_plot(runs, spikes, args.plot)
        print(f"\nplot: {args.plot}")
    if args.json:
        def write_json(tmp):
            with open(tmp, "w") as f:
                # NaN (no threshold without a clipper) and inf (a norm that overflowed) are not JSON: null.
                json.dump(_nan_to_none({"spikes": sorted(spikes), "summary": summary, "runs": runs}), f,
                          allow_nan=False)

        write_atomically(args.json, write_json)
    return summary


def _nan_to_none(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_nan_to_none(v) for v in value]
    return value


def main(argv=None):
    """``fastclip demo`` with its own argument parser."""
    parser = argparse.ArgumentParser(prog="fastclip demo")
    add_arguments(parser)
    run_parsed(parser, run, parser.parse_args(argv))


if __name__ == "__main__":
    main()

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

from .command import UsageError, run_parsed
from .outputs import check_matplotlib, check_output, write_atomically
from .progress import Progress

__all__ = ["CLIPPERS", "SKIPPERS", "add_arguments", "main", "run", "train"]

VOCAB, SEQ, BATCH, LAYERS = 48, 32, 16, 2
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
    def __init__(self, width=64, layers=LAYERS, heads=4):
        super().__init__()
        self.embed = torch.nn.Embedding(VOCAB, width)
        self.position = torch.nn.Parameter(torch.randn(SEQ, width) * 0.02)
        layer = torch.nn.TransformerEncoderLayer(
            width, heads, 4 * width, dropout=0.0, batch_first=True, norm_first=True
        )
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


def train(name, steps, spikes, spike_scale, seed, lr, progress=None):
    """One run with the clipper `name` (a key of CLIPPERS): per-step losses, norms, thresholds,
    the steps clipped and skipped; ``progress(message)`` (a :class:`~fastclip.cli.progress.Progress`)
    is called after every step."""
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
    losses, norms, thresholds, clipped, skipped = [], [], [], 0, []
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
            if skipper is not None and bool(skipper.step(loss.detach(), result.norm).skip):
                skipped.append(step)
        optimizer.step()
        losses.append(float(loss.detach()))
        if progress:
            progress(f"{name}: step {step + 1}/{steps}")
    return {
        "losses": losses,
        "norms": norms,
        "thresholds": thresholds,
        "steps_clipped": clipped,
        "steps_skipped": len(skipped),
        "skipped_steps": skipped,
    }


def summarize(runs, spikes, tail):
    """Final loss (mean of the last `tail` clean steps), worst loss after a spike, steps clipped."""
    summary = {}
    for name, run in runs.items():
        losses = run["losses"]
        clean = [loss for i, loss in enumerate(losses) if i not in spikes]
        after = [losses[i] for s in spikes for i in range(s + 1, min(s + 11, len(losses))) if i not in spikes]
        summary[name] = {
            "final_loss": sum(clean[-tail:]) / len(clean[-tail:]),
            "worst_loss_after_a_spike": max(after) if after else float("nan"),
            "steps_clipped": run["steps_clipped"],
            "steps_skipped": run["steps_skipped"],
            "largest_grad_norm": max(run["norms"]),
        }
    return summary


# One color per run, the same in every panel; the spikes are red, so no run is.
COLORS = {
    "no clipping": "#555555",
    "fixed (NormClip, 1.0)": "#1f77b4",
    "ZClip": "#ff7f0e",
    "AutoClip (p10)": "#2ca02c",
    "Stable-SPAM": "#9467bd",
    "ZClip + step skipping": "#17becf",
}
SPIKE_COLOR = "#d62728"
SHORT_NAMES = {
    "no clipping": "none",
    "fixed (NormClip, 1.0)": "fixed",
    "AutoClip (p10)": "AutoClip",
    "Stable-SPAM": "Stable-\nSPAM",
    "ZClip + step skipping": "ZClip +\nskipping",
}


def _spike_bands(ax, spikes, lines=True):
    """Each spike as a shaded band, with a bold dashed line at its step."""
    for s in sorted(spikes):
        ax.axvspan(s - 2.5, s + 2.5, color=SPIKE_COLOR, alpha=0.15, linewidth=0, zorder=0)
        if lines:
            ax.axvline(s, color=SPIKE_COLOR, linestyle="--", linewidth=1.3, alpha=0.9, zorder=1)


def write_plot(runs, spikes, path, summary=None, spike_scale=None):
    """The runs as a PNG: one loss panel per run (every run visible, the unclipped one in grey behind
    the others for contrast, the spikes as red bands, the skipped steps marked), gradient norm
    against threshold for ZClip and AutoClip, and the final losses side by side."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit(
            "fastclip demo: the plot needs matplotlib (pip install matplotlib), or pass --no-plot"
        ) from None
    steps = len(next(iter(runs.values()))["losses"])
    summary = summary or summarize(runs, spikes, tail=max(5, steps // 10))
    names = list(runs)
    fig = plt.figure(figsize=(15, 11.5))
    grid = fig.add_gridspec(3, 3, hspace=0.45, wspace=0.22, top=0.875)
    # The loss on a corrupted batch measures the batch, not the model: it is left out of the curves.
    clean = {
        name: [float("nan") if i in spikes else v for i, v in enumerate(run["losses"])] for name, run in runs.items()
    }
    top = max(max(v for v in curve if v == v) for curve in clean.values())
    loss_axes = []
    for k, name in enumerate(names):
        ax = fig.add_subplot(grid[k // 3, k % 3], sharey=loss_axes[0] if loss_axes else None)
        loss_axes.append(ax)
        _spike_bands(ax, spikes)
        if name != "no clipping" and "no clipping" in clean:
            ax.plot(clean["no clipping"], color="#bbbbbb", linewidth=1.0)
        ax.plot(clean[name], color=COLORS.get(name), linewidth=1.4)
        skipped = runs[name].get("skipped_steps") or []
        if skipped:
            ax.plot(skipped, [top * 0.98] * len(skipped), linestyle="none", marker="v", markersize=10, color="black")
        s = summary[name]
        detail = f"final loss {s['final_loss']:.3f}, {s['steps_clipped']} steps clipped"
        if s.get("steps_skipped"):
            detail += f", {s['steps_skipped']} skipped"
        ax.set_title(f"{name}\n{detail}", fontsize=10, color=COLORS.get(name, "black"), fontweight="bold")
        ax.set(xlim=(0, steps - 1), ylim=(1.0, top * 1.05))
        if k % 3 == 0:
            ax.set_ylabel("training loss (clean batches)")
        ax.grid(alpha=0.3)
    adaptive = [
        ("ZClip", "spike bound: mean + z_thresh * std"),
        ("AutoClip (p10)", "threshold: 10th percentile of norms"),
    ]
    for k, (name, label) in enumerate((n, lb) for n, lb in adaptive if n in runs):
        ax = fig.add_subplot(grid[2, k])
        _spike_bands(ax, spikes, lines=False)
        ax.plot(runs[name]["norms"], color=COLORS.get(name), linewidth=1.2, label="gradient norm (before clipping)")
        ax.plot(runs[name]["thresholds"], color="black", linestyle="--", linewidth=1.2, label=label)
        ax.set(yscale="log", xlim=(0, steps - 1), xlabel="step")
        ax.set_title(
            f"{name}: gradient norm against its threshold", fontsize=10, color=COLORS.get(name), fontweight="bold"
        )
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7.5, loc="upper left", framealpha=0.9)
    ax = fig.add_subplot(grid[2, 2])
    finals = [summary[n]["final_loss"] for n in names]
    bars = ax.bar(range(len(names)), finals, color=[COLORS.get(n, "grey") for n in names], width=0.7)
    ax.bar_label(bars, fmt="%.3f", padding=2, fontsize=8.5)
    ax.axhline(math.log(VOCAB), color="black", linestyle=":", linewidth=1.2, label=f"chance: ln {VOCAB}")
    ax.set_xticks(range(len(names)), [SHORT_NAMES.get(n, n) for n in names], fontsize=8.5)
    ax.set_ylim(0, max(finals + [math.log(VOCAB)]) * 1.18)
    ax.set_title("final loss (mean of the last clean steps)", fontsize=10, fontweight="bold")
    ax.legend(fontsize=8, loc="upper right")
    for ax in loss_axes[3:]:
        ax.set_xlabel("step")
    fig.suptitle(
        f"fastclip demo: the same model, data and seed, {len(runs)} ways; at the red bands a "
        "corrupted batch blows the gradient up",
        fontsize=13,
        fontweight="bold",
        y=0.97,
    )
    from matplotlib.lines import Line2D

    key = [
        Line2D(
            [],
            [],
            color=SPIKE_COLOR,
            linestyle="--",
            linewidth=1.3,
            label="injected spike" + (f": the batch's loss x {spike_scale:g}" if spike_scale else ""),
        ),
        Line2D([], [], color="#bbbbbb", linewidth=1.2, label="no clipping, behind each other run for comparison"),
    ]
    if any(run.get("skipped_steps") for run in runs.values()):
        key.append(
            Line2D(
                [],
                [],
                color="black",
                marker="v",
                linestyle="none",
                markersize=9,
                label="step skipped: the optimizer changed no weight",
            )
        )
    fig.legend(handles=key, loc="upper center", bbox_to_anchor=(0.5, 0.95), ncol=len(key), fontsize=9.5, frameon=False)
    write_atomically(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png", bbox_inches="tight"))
    plt.close(fig)


def default_spikes(steps):
    """Two spikes in a row, then two lone ones, spread over the run: 120, 121, 200, 250 for 300 steps."""
    return {steps * 2 // 5, steps * 2 // 5 + 1, steps * 2 // 3, steps * 5 // 6}


def add_arguments(parser):
    """Adds the demo options and a description to an argparse parser."""
    parser.description = __doc__.split("\n")[0].replace("``", "")
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help=f"training steps per run (default {DEFAULT_STEPS}; {QUICK_STEPS} with --quick)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"a shorter run: {QUICK_STEPS} steps unless --steps says otherwise (about 11 s on 2 idle CPU cores)",
    )
    parser.add_argument(
        "--spikes",
        default=None,
        help="comma-separated steps that get a corrupted, blown-up batch (default: at 40%%, "
        "40%% + 1 step, 67%% and 83%% of --steps: 120,121,200,250 for 300)",
    )
    parser.add_argument("--spike-scale", type=float, default=1e4, help="how much a spike scales the loss (default 1e4)")
    parser.add_argument("--lr", type=float, default=3e-3, help="AdamW's learning rate (default 3e-3)")
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seeds the model's initial weights and the batches, the same for every run (default 0)",
    )
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
        spikes = (
            default_spikes(args.steps) if args.spikes is None else {int(s) for s in args.spikes.split(",") if s.strip()}
        )
    except ValueError:
        raise UsageError(
            "fastclip demo", f"--spikes must be comma-separated step numbers, got {args.spikes!r}"
        ) from None
    outside = sorted(s for s in spikes if not 0 <= s < args.steps)
    if outside:
        raise UsageError(
            "fastclip demo",
            f"--spikes must be steps in [0, {args.steps}) (--steps {args.steps}), got {', '.join(map(str, outside))}",
        )
    if len(spikes) > args.steps // 2:
        raise UsageError(
            "fastclip demo", f"--spikes must leave most steps clean, got {len(spikes)} spikes in {args.steps} steps"
        )
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
    # What it is doing, as it goes, on stderr (stdout holds the results): what is trained, a bar
    # over every run, and a line per run once it is done.
    progress = Progress(stages=list(CLIPPERS), noun="run")
    progress.note(
        f"fastclip demo: {len(CLIPPERS)} runs of {args.steps} steps, the same model, data and seed "
        f"(a {LAYERS}-layer transformer LM on a synthetic bigram language); at steps "
        f"{', '.join(map(str, sorted(spikes)))} the loss is scaled by {args.spike_scale:g}; "
        f"{torch.get_num_threads()} CPU threads"
    )
    runs, tail = {}, max(5, args.steps // 10)
    for name in CLIPPERS:
        progress.stage(name, args.steps)
        start = time.perf_counter()
        runs[name] = train(name, args.steps, spikes, args.spike_scale, args.seed, args.lr, progress)
        done = summarize({name: runs[name]}, spikes, tail)[name]
        progress.note(f"  {name:24s} {time.perf_counter() - start:5.1f} s, final loss {done['final_loss']:.3f}")
    progress.close()
    summary = summarize(runs, spikes, tail)
    print(
        f"\n{'run':24s} {'final loss':>10s} {'worst loss after a spike':>25s} {'steps clipped':>14s} "
        f"{'steps skipped':>14s}"
    )
    for name, s in summary.items():
        print(
            f"{name:24s} {s['final_loss']:10.3f} {s['worst_loss_after_a_spike']:25.3f} {s['steps_clipped']:14d} "
            f"{s['steps_skipped']:14d}"
        )
    if not args.no_plot:
        write_plot(runs, spikes, args.plot, summary, args.spike_scale)
        print(f"\nplot: {args.plot}")
    if args.json:

        def write_json(tmp):
            with open(tmp, "w") as f:
                # NaN (no threshold without a clipper) and inf (a norm that overflowed) are not JSON: null.
                json.dump(
                    _nan_to_none({"spikes": sorted(spikes), "summary": summary, "runs": runs}), f, allow_nan=False
                )

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

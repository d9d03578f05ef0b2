"""The fastclip command: argument errors, a quick run of each subcommand with its outputs checked,
and the demo's claim. The command runs in this process (``fastclip.cli.main``); one test starts
the real console script and ``python -m fastclip``."""

import csv
import io
import json
import pathlib
import re
import subprocess
import sys

import pytest
import torch

PNG_HEADER = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def fastclip_command(capsys, monkeypatch):
    """``fastclip_command(*args)`` runs ``fastclip ARGS`` in this process and returns (exit status,
    stdout, stderr) as the command gives them: a ``SystemExit`` with a message ends it as the
    interpreter does, the message on stderr and exit status 1."""
    from fastclip import cli
    from fastclip.cli import bench

    # bench.print_table's default stream is the sys.stdout of the moment fastclip.cli.bench was first
    # imported (another test's capture, maybe): print the table to the current one, which capsys reads.
    print_table = bench.print_table
    monkeypatch.setattr(bench, "print_table", lambda report, out=None: print_table(report, out or sys.stdout))
    monkeypatch.setenv("COLUMNS", "80")  # argparse's line width, as in a pipe

    def run(*args):
        capsys.readouterr()  # only this command's output
        try:
            status = cli.main(list(args))
        except SystemExit as e:
            status = e.code
        out, err = capsys.readouterr()
        if status is None:
            status = 0
        elif not isinstance(status, int):
            err, status = err + f"{status}\n", 1
        return status, out, err

    return run


# Bad command-line values are usage errors, as argparse's own are: the subcommand's usage line,
# "fastclip <command>: error: <message>", exit status 2.
@pytest.mark.parametrize(
    "args, message",
    [
        (["bench", "--suite", "gpt3"], "argument --suite: invalid choice: 'gpt3'"),
        (["bench", "--dtype", "int8"], "argument --dtype: invalid choice: 'int8'"),
        (["bench", "--repeat", "0"], "--repeat must be >= 1, got 0"),
        (["bench", "--shard", "0"], "--shard must be >= 1, got 0"),
        (["bench", "--device", "tpu"], "--device must be cpu, cuda or cuda:N, got 'tpu'"),
        (["bench", "--device", "meta"], "--device must be cpu, cuda or cuda:N, got 'meta'"),
        (["bench", "--device", "cuda:7"], "--device cuda:7 but"),  # no GPU, or fewer than 8
        (["bench", "--json", " "], "--json needs a file name"),
        (["demo", "--steps", "ten"], "argument --steps: invalid int value: 'ten'"),
        (["demo", "--spikes", "ten"], "--spikes must be comma-separated"),
        (["demo", "--steps", "3"], "--steps must be >= 10, got 3"),
        (["demo", "--spikes", "5,300"], "--spikes must be steps in [0, 300) (--steps 300), got 300"),
        (["demo", "--steps", "20", "--spikes", ",".join(map(str, range(11)))], "--spikes must leave most steps clean"),
        (["demo", "--spike-scale", "0"], "--spike-scale must be finite and > 0, got 0.0"),
        (["demo", "--lr", "-0.1"], "--lr must be finite and > 0"),
        (["demo", "--lr", "nan"], "--lr must be finite and > 0"),
        (["demo", "--seed", "-1"], "--seed must be in [0, 2**63)"),
        (["demo", "--plot", "demo.jpg"], "--plot must name a .png file, got 'demo.jpg'"),
        (["info", "--verbose"], "unrecognized arguments: --verbose"),
    ],
)
def test_bad_values_are_usage_errors(args, message, fastclip_command):
    status, out, err = fastclip_command(*args)
    assert status == 2, err
    command = args[0]
    assert err.startswith(f"usage: fastclip {command} [-h]"), err
    assert err.rstrip().splitlines()[-1].startswith(f"fastclip {command}: error: ")
    assert message in err.rstrip().splitlines()[-1]
    assert out == "" and "Traceback" not in err


@pytest.mark.parametrize(
    "args, message",
    [
        (["frobnicate"], "fastclip: error: argument {bench,demo,info}: invalid choice: 'frobnicate'"),
        ([], "fastclip: error: the following arguments are required: {bench,demo,info}"),
        (["--frobnicate"], "fastclip: error: the following arguments are required"),
    ],
)
def test_a_missing_or_unknown_command_is_a_usage_error(args, message, fastclip_command):
    status, _, err = fastclip_command(*args)
    assert status == 2
    assert err.startswith("usage: fastclip [-h] [--version] {bench,demo,info} ...")
    assert message in err


@pytest.mark.parametrize("command", ["bench", "demo"])
def test_a_run_that_cannot_go_on_exits_1_without_usage(command, fastclip_command, monkeypatch):
    """A failure that is not the command line's (here: matplotlib missing; for bench also a suite
    that does not fit in memory) is the message alone, exit status 1."""
    import importlib.util

    from fastclip.cli import bench

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else find_spec(name, *a)
    )
    status, out, err = fastclip_command(command, "--plot", "x.png")
    assert status == 1
    assert err.strip().startswith(f"fastclip {command}: --plot") and "needs matplotlib (pip install matplotlib)" in err
    assert "usage:" not in err and "error:" not in err
    if command == "bench":
        monkeypatch.setattr(bench, "available_memory_bytes", lambda device: 2 << 30)
        status, out, err = fastclip_command("bench", "--suite", "llama-7b", "--device", "cpu")
        assert status == 1 and "usage:" not in err
        assert err.strip().startswith("fastclip bench: suite llama-7b needs about ")


def test_a_usage_error_raised_outside_the_command_is_a_plain_exit():
    """bench.run and demo.run called from code (no parser) end as SystemExit("<prog>: <message>")."""
    import argparse

    from fastclip.cli import demo

    parser = argparse.ArgumentParser()
    demo.add_arguments(parser)
    with pytest.raises(SystemExit, match=r"^fastclip demo: --steps must be >= 10, got 3$"):
        demo.run(parser.parse_args(["--steps", "3"]))


def test_version_prints_the_version_and_exits_0(fastclip_command):
    import fastclip

    status, out, err = fastclip_command("--version")
    assert status == 0 and err == ""
    assert out == f"fastclip {fastclip.__version__}\n"


def test_info_says_what_was_built_and_what_runs(fastclip_command):
    import fastclip

    status, out, err = fastclip_command("info")
    assert status == 0 and err == ""
    lines = dict(line.split(":", 1) for line in out.splitlines())
    assert list(lines) == [
        "fastclip",
        "torch",
        "CPU",
        "CPU ISA",
        "CPU ops run on",
        "CUDA kernels",
        "CUDA on CPU",
        "GPUs",
        "threads",
    ]
    info = fastclip.build_info()
    assert lines["fastclip"].split()[0] == fastclip.__version__
    assert lines["torch"].split()[0] == torch.__version__
    assert lines["CPU ISA"].split()[:3] == [info["cpu_isa_in_use"], "in", "use"]
    assert all(isa in lines["CPU ISA"] for isa in info["cpu_isas"])
    archs = [a for a in info["cuda_archs"].split(",") if a]
    if archs:
        assert lines["CUDA kernels"].strip() == "built for " + ", ".join(f"sm_{int(a) // 10}" for a in archs)
    else:
        assert lines["CUDA kernels"].strip().startswith("CPU only")
    if torch.cuda.is_available():
        assert torch.cuda.get_device_name(0) in lines["GPUs"]
    else:
        assert lines["GPUs"].strip() == "none visible"
    assert lines["threads"].split()[0] == str(torch.get_num_threads())


def test_info_names_the_gpus_and_a_cpu_only_build(fastclip_command, monkeypatch):
    """What a machine with GPUs and a CPU-only fastclip would print (faked: no GPU here)."""
    import fastclip

    build_info = fastclip.build_info
    monkeypatch.setattr(fastclip, "build_info", lambda: {**build_info(), "cuda_archs": "", "cuda_on_cpu": False})
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i: f"Fake GPU {i}")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda i: (9, 0))
    status, out, _ = fastclip_command("info")
    assert status == 0
    assert "CUDA kernels:   CPU only (none built)" in out
    assert "CUDA on CPU:    not built" in out
    assert "GPUs:           0: Fake GPU 0 (sm_90); 1: Fake GPU 1 (sm_90)" in out


@pytest.mark.parametrize(
    "args, message",
    [
        (["bench", "--json", "{missing}/out.json"], "--json '{missing}/out.json': the folder"),
        (["bench", "--csv", "{tmp}"], "is a folder, not a file"),
        (["bench", "--plot", "{tmp}/chart.txt"], "--plot must name a .png file"),
        (["demo", "--plot", "{missing}/demo.png"], "--plot '{missing}/demo.png': the folder"),
        (["demo", "--no-plot", "--json", "{missing}/demo.json"], "--json"),
    ],
)
def test_unwritable_outputs_fail_before_the_run_and_write_nothing(args, message, tmp_path, fastclip_command):
    paths = {"tmp": str(tmp_path), "missing": str(tmp_path / "missing")}
    status, out, err = fastclip_command(*[a.format(**paths) for a in args])
    assert status == 2 and f"fastclip {args[0]}: error: " in err  # a bad value: a usage error
    assert message.format(**paths) in err
    assert "Traceback" not in err and "memory ceilings" not in out + err  # nothing ran
    assert list(tmp_path.iterdir()) == []


def test_outputs_are_replaced_whole(tmp_path):
    from fastclip.cli.outputs import write_atomically

    target = tmp_path / "report.json"
    target.write_text("previous good report")

    def fails_halfway(tmp):
        pathlib.Path(tmp).write_text("half a rep")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        write_atomically(str(target), fails_halfway)
    assert target.read_text() == "previous good report"
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]
    write_atomically(str(target), lambda tmp: pathlib.Path(tmp).write_text("new report"))
    assert target.read_text() == "new report"
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


def test_console_script_and_python_m_run_the_command():
    """The real entry points, in their own processes: the installed console script reports a bad
    value as a usage error (exit status 2); ``python -m fastclip`` prints the help."""
    script = pathlib.Path(sys.executable).parent / "fastclip"
    done = subprocess.run([str(script), "bench", "--repeat", "0"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "fastclip bench: error: --repeat must be >= 1, got 0" in done.stderr
    assert done.stderr.startswith("usage: fastclip bench") and "Traceback" not in done.stderr
    done = subprocess.run([sys.executable, "-m", "fastclip", "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "bench" in done.stdout and "demo" in done.stdout and "info" in done.stdout
    assert "exit status: 0 done, 1 the run failed, 2 a bad command line (usage error)" in " ".join(done.stdout.split())


def test_importing_the_library_imports_none_of_the_command():
    """The command and its harness (fastclip.cli) are tools beside the library: ``import fastclip`` loads none of it."""
    script = "import sys, fastclip; print(sorted(m for m in sys.modules if m.split('.')[:2] == ['fastclip', 'cli']))"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip() == "[]"


def test_bench_quick_writes_json_csv_and_png(tmp_path, fastclip_command, monkeypatch):
    from fastclip.cli import ceilings

    # The cheapest run that still goes through everything: two small suites (one rank's share of
    # a 64-way FSDP shard), two rounds, and memory ceilings timed on 64 MiB instead of 1 GiB
    # (their values do not matter here, only that they are measured and used).
    monkeypatch.setattr(ceilings, "CEILING_BYTES", 64 << 20)
    out = {ext: tmp_path / f"bench.{ext}" for ext in ("json", "csv", "png")}
    status, stdout, err = fastclip_command(
        "bench",
        "--quick",
        "--suite",
        "mixed",
        "--suite",
        "gpt2-124m",
        "--shard",
        "64",
        "--repeat",
        "2",
        "--json",
        str(out["json"]),
        "--csv",
        str(out["csv"]),
        "--plot",
        str(out["png"]),
    )
    assert status == 0, err
    report = json.loads(out["json"].read_text())
    assert {"device", "torch", "ceilings", "cases", "repeat"} <= set(report)
    assert report["repeat"] == 2 and report["shard"] == 64
    assert [c["suite"] for c in report["cases"]] == ["mixed", "gpt2-124m"]
    assert [c["dtypes"] for c in report["cases"]] == [["bfloat16", "float32"], ["float32"]]
    for case in report["cases"]:
        assert {"fastclip", "torch_foreach", "torch_loop"} <= set(case["methods"])
        assert set(case["ceilings"]) == {"read_bytes_per_s", "in_place_bytes_per_s"}
        assert all(v > 0 for v in case["ceilings"].values())
        assert "torch_compile" in case["skipped"]  # not with --quick, and said so
        for name, r in case["methods"].items():
            assert r["min_s"] <= r["median_s"] <= r["max_s"] and r["median_s"] > 0
            assert r["fraction_of_floor"] > 0 and r["speedup_vs_torch_foreach"] > 0
            assert r["clips"] or r["norm_only"], name  # every timed call really clipped
    rows = list(csv.DictReader(out["csv"].open()))
    assert len(rows) == sum(len(c["methods"]) for c in report["cases"])
    assert {row["shard"] for row in rows} == {"64"}
    assert out["png"].read_bytes()[:8] == PNG_HEADER
    assert "fastclip" in stdout and "of floor" in stdout
    assert "mixed/64" in stdout and "gpt2-124m/64" in stdout
    assert "left out: torch_compile: not with --quick" in stdout
    # One bar over both suites, on stderr, naming the suite; it never goes back.
    bars = [line for line in err.splitlines() if line.startswith("[")]
    percents = [int(line.split("]")[1].split("%")[0]) for line in bars]
    assert percents == sorted(percents) and percents[-1] == 100, bars
    assert "suite 1/2 mixed: round 2/2" in err and "suite 2/2 gpt2-124m: round 2/2" in err
    assert "[" not in stdout.split("\n")[0]


class _Stream(io.StringIO):
    def __init__(self, tty):
        super().__init__()
        self.tty = tty

    def isatty(self):
        return self.tty


def _percents(text):
    return [
        int(line.split("]")[1].split("%")[0]) for line in text.replace("\r", "\n").splitlines() if line.startswith("[")
    ]


def test_progress_is_one_bar_over_every_stage_and_never_goes_back():
    from fastclip.cli.progress import Progress

    stream = _Stream(tty=False)
    progress = Progress(stages=["a", "b"], noun="suite", interval=0, stream=stream)
    progress.stage("a", 4)
    progress("a: round 1/4")
    progress("a: round 2/4")  # half of the first suite: 25% of the bar
    progress.add(4)  # the suite learns of more steps: the bar waits, it does not go back
    progress("a: round 3/4")
    progress.stage("b", 2)
    progress("b: round 1/2")
    progress("b: round 2/2")
    progress.close()
    lines = stream.getvalue().splitlines()
    assert _percents(stream.getvalue()) == [0, 12, 25, 25, 50, 75, 100]
    assert lines[0].endswith("suite 1/2 a: starting") and lines[-1].endswith("suite 2/2 b: round 2/2")
    assert "\r" not in stream.getvalue()  # a log gets whole lines


def test_progress_in_a_log_writes_a_line_per_stage_not_per_step():
    from fastclip.cli.progress import Progress

    stream = _Stream(tty=False)
    progress = Progress(stages=["run"], noun="run", interval=3600, stream=stream)
    progress.stage("run", 300)
    for step in range(300):
        progress(f"run: step {step + 1}/300")
    assert [line.split("  ")[-1] for line in stream.getvalue().splitlines()] == [
        "run 1/1 run: starting",
        "run 1/1 run: step 1/300",
        "run 1/1 run: step 300/300",
    ]


def test_progress_on_a_terminal_redraws_one_line_and_keeps_notes_above_it():
    from fastclip.cli.progress import Progress

    stream = _Stream(tty=True)
    progress = Progress(stages=["x", "y"], noun="run", stream=stream)
    progress.stage("x", 2)
    progress("x: step 1/2")
    progress.note("x is half done")
    progress("x: step 2/2")
    progress.close()
    text = stream.getvalue()
    assert "\n" not in text.split("x is half done")[0]  # the bar redrawn in place until the note
    assert re.search(r"\r +\rx is half done\n", text)  # the bar's line blanked, the note on its own line
    assert text.endswith("run 1/2 x: step 2/2\n")  # the bar drawn again below it, ended by close()
    assert _percents(text) == sorted(_percents(text))


def test_bench_shard_divides_the_shapes():
    from fastclip.cli.bench import LLAMA_7B, shard_shapes

    shards = shard_shapes(LLAMA_7B, 8)
    assert shards[0] == (4000, 4096) and len(shards) == len(LLAMA_7B)
    assert sum(s[0] * (s[1] if len(s) > 1 else 1) for s in LLAMA_7B) > 6.7e9  # the real model's size


def run_demo_and_check_its_claim(fastclip_command, tmp_path, steps, *options):
    """Runs ``fastclip demo`` for ``steps`` steps with the default spikes, writing JSON and PNG, and
    checks the outputs and the demo's claim: ZClip's final loss is no worse than no clipping's,
    which is clearly worse (the spikes really hurt, so the comparison means something)."""
    from fastclip.cli.demo import default_spikes

    out_json, out_png = tmp_path / "demo.json", tmp_path / "demo.png"
    status, out, err = fastclip_command("demo", *options, "--json", str(out_json), "--plot", str(out_png))
    assert status == 0, err
    check_demo_says_what_it_does(out, err, steps)

    def not_json(constant):
        raise AssertionError(f"{constant} is not JSON")

    report = json.loads(out_json.read_text(), parse_constant=not_json)
    assert report["spikes"] == sorted(default_spikes(steps))
    assert all(len(run["losses"]) == steps for run in report["runs"].values())
    assert set(report["runs"]["no clipping"]["thresholds"]) == {None}  # no threshold: null, not NaN
    summary = report["summary"]
    assert set(summary) == {
        "no clipping",
        "fixed (NormClip, 1.0)",
        "ZClip",
        "AutoClip (p10)",
        "Stable-SPAM",
        "ZClip + step skipping",
    }
    assert summary["ZClip"]["final_loss"] <= summary["no clipping"]["final_loss"]
    assert summary["no clipping"]["final_loss"] > 1.5 * summary["ZClip"]["final_loss"]
    assert summary["ZClip"]["steps_clipped"] >= len(report["spikes"])  # at least the injected spikes
    assert summary["no clipping"]["final_loss"] > 1.5 * summary["Stable-SPAM"]["final_loss"]
    # The first spike is skipped; a spike within the window of an earlier one may not be (it
    # entered the history, as OLMo-core's rule has it), so not every spike is.
    assert 1 <= summary["ZClip + step skipping"]["steps_skipped"] <= len(report["spikes"])
    assert all(s["steps_skipped"] == 0 for name, s in summary.items() if name != "ZClip + step skipping")
    for name, run in report["runs"].items():  # the steps skipped, which the plot marks
        assert len(run["skipped_steps"]) == summary[name]["steps_skipped"]
        assert set(run["skipped_steps"]) <= set(report["spikes"])
    assert out_png.read_bytes()[:8] == PNG_HEADER


def check_demo_says_what_it_does(out, err, steps):
    """stderr: what is trained, then a bar over all the runs (never going back) naming the run and
    step, and a line per finished run; stdout: the results only (the table, the plot's path)."""
    from fastclip.cli.demo import CLIPPERS

    assert err.startswith(f"fastclip demo: {len(CLIPPERS)} runs of {steps} steps")
    bars = [line for line in err.splitlines() if line.startswith("[")]
    percents = [int(line.split("]")[1].split("%")[0]) for line in bars]
    assert percents == sorted(percents) and percents[-1] == 100
    for k, name in enumerate(CLIPPERS, 1):
        assert f"run {k}/{len(CLIPPERS)} {name}: step {steps}/{steps}" in err, name
        assert any(line.startswith(f"  {name}") and "s, final loss" in line for line in err.splitlines()), name
    table = out.strip().splitlines()
    assert table[0].split()[:3] == ["run", "final", "loss"] and "[" not in out
    assert [line[:24].strip() for line in table[1 : 1 + len(CLIPPERS)]] == list(CLIPPERS)


def test_demo_runs_and_zclip_is_not_worse_than_no_clipping(fastclip_command, tmp_path):
    # 60 steps: spikes at 24, 25, 40 and 50, all past ZClip's 20-step warm-up (at 40 steps the
    # first two fall inside it, and ZClip lets them through).
    run_demo_and_check_its_claim(fastclip_command, tmp_path, 60, "--steps", "60")


@pytest.mark.slow
def test_full_length_demo_zclip_is_not_worse_than_no_clipping(fastclip_command, tmp_path):
    from fastclip.cli.demo import DEFAULT_STEPS

    run_demo_and_check_its_claim(fastclip_command, tmp_path, DEFAULT_STEPS)  # `fastclip demo` as the README shows it


@pytest.mark.parametrize("options, length", [(["--quick"], "QUICK_STEPS"), ([], "DEFAULT_STEPS")])
def test_demo_length_options_set_the_steps_and_the_spikes(options, length, fastclip_command, monkeypatch):
    from fastclip.cli import demo

    trained = []

    def record(name, steps, spikes, spike_scale, seed, lr, progress=None):  # stands in for the training run
        trained.append((name, steps, sorted(spikes)))
        return {
            "losses": [1.0] * steps,
            "norms": [1.0] * steps,
            "thresholds": [float("nan")] * steps,
            "steps_clipped": 0,
            "steps_skipped": 0,
            "skipped_steps": [],
        }

    monkeypatch.setattr(demo, "train", record)
    status, _, err = fastclip_command("demo", *options, "--no-plot")
    assert status == 0, err
    steps = getattr(demo, length)
    assert trained == [(name, steps, sorted(demo.default_spikes(steps))) for name in demo.CLIPPERS]


def test_bench_refuses_a_suite_that_does_not_fit_in_memory(monkeypatch):
    from fastclip.cli import bench

    monkeypatch.setattr(bench, "available_memory_bytes", lambda device: 2 << 30)
    with pytest.raises(
        SystemExit,
        match=r"suite llama-7b needs about 2[0-9]\.\d GiB on cpu and 2\.0 GiB is free "
        r"\(use --shard N\)",
    ):
        bench.main(["--suite", "llama-7b", "--device", "cpu"])
    with pytest.raises(SystemExit, match="suite one-huge needs about 2.0 GiB on cpu and 2.0 GiB is free$"):
        bench.main(["--suite", "one-huge", "--device", "cpu"])


def test_bench_turns_out_of_memory_into_a_message(monkeypatch):
    from fastclip.cli import bench

    def out_of_memory(*args):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore detail")

    monkeypatch.setattr(bench, "_run_suites", out_of_memory)
    with pytest.raises(
        SystemExit,
        match=r"out of memory on cpu \(CUDA out of memory. Tried to allocate 2.00 GiB\); "
        r"try fewer suites or --shard N$",
    ):
        bench.main(["--suite", "gpt2-124m", "--device", "cpu"])


def test_interrupted_command_exits_130_and_says_so(monkeypatch, capsys):
    from fastclip import cli
    from fastclip.cli import bench

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(bench, "run", interrupted)
    assert cli.main(["bench", "--quick"]) == 130
    assert "fastclip bench: interrupted" in capsys.readouterr().err


def test_bench_leaves_out_a_failing_method_and_flags_one_that_does_not_clip(monkeypatch):
    from fastclip.cli import bench

    real_methods = bench._methods

    def with_extra_methods(*args, **kwargs):
        methods, skipped = real_methods(*args, **kwargs)
        methods["broken"] = lambda: torch.ones(2) @ torch.ones(3)
        methods["does nothing"] = lambda: None
        return methods, skipped

    monkeypatch.setattr(bench, "_methods", with_extra_methods)
    generator = torch.Generator().manual_seed(0)
    case = bench.run_case(
        "small",
        [(257,), (31, 7), (1000,)],
        (torch.float32,),
        torch.device("cpu"),
        bench.Timer(torch.device("cpu")),
        2,
        generator,
        quick=True,
        probes=bench.ceiling_probes(torch.device("cpu")),
    )
    assert "broken" not in case["methods"]
    assert case["skipped"]["broken"].startswith("failed in warm-up: RuntimeError: ")
    assert case["skipped"]["torch_compile"] == "not with --quick (compiling takes a while)"
    assert case["methods"]["does nothing"]["clips"] is False
    for method in (
        "fastclip",
        "torch_foreach",
        "torch_loop",
        "zclip",
        "fastclip.ZClip",
        "autoclip",
        "fastclip.AutoClip",
    ):
        assert case["methods"][method]["clips"] is True, method

    bench.add_floor(case, case["ceilings"])
    report = {
        "device": "test CPU",
        "device_type": "cpu",
        "torch": torch.__version__,
        "repeat": 2,
        "shard": 4,
        "cases": [case],
    }
    out = io.StringIO()
    bench.print_table(report, out)
    table = out.getvalue()
    assert "small/4" in table and "one rank's share of the grads, sharded 4 ways as FSDP does" in table
    assert "does nothing (*)" in table and "fastclip (*)" not in table
    assert "(*) did not reduce the norm in a checked warm-up call" in table
    assert "left out: broken: failed in warm-up: RuntimeError" in table
    assert "left out: torch_compile: not with --quick" in table


def test_norm_only_methods_are_held_to_a_one_read_floor():
    from fastclip.cli import bench

    ceilings = {"read_bytes_per_s": 1e9, "in_place_bytes_per_s": 2e9}
    case = {
        "grad_bytes": 3000,
        "float32_bytes": 2000,
        "methods": {
            "fastclip": {"median_s": 4e-6},
            bench.NORM_ONLY_PREFIX + "vendor": {"median_s": 4e-6, "norm_only": True},
        },
    }
    bench.add_floor(case, ceilings)
    assert case["floor_s"] == pytest.approx(3000 / 1e9 + 2 * 3000 / 2e9)
    assert case["methods"]["fastclip"]["fraction_of_floor"] == pytest.approx(6e-6 / 4e-6)
    assert case["methods"][bench.NORM_ONLY_PREFIX + "vendor"]["fraction_of_floor"] == pytest.approx(2e-6 / 4e-6)


def test_bench_device_parsing():
    from fastclip.cli import bench

    assert bench._parse_device("cpu") == torch.device("cpu")
    assert bench._parse_device("cpu:0") == torch.device("cpu")
    assert bench._parse_device(None).type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_demo_default_spikes_follow_the_step_count():
    from fastclip.cli.demo import default_spikes

    assert default_spikes(300) == {120, 121, 200, 250}
    for steps in (10, 11, 57, 1000):
        spikes = default_spikes(steps)
        assert len(spikes) == 4 and all(0 <= s < steps for s in spikes), steps


def test_mixed_suite_mixes_dtypes_in_bytes_not_only_in_name():
    import math

    from fastclip.cli.bench import SUITES

    shapes, dtypes, _ = SUITES["mixed"]
    assert len(dtypes) == len(shapes)
    by_dtype = {}
    for shape, dtype in zip(shapes, dtypes):
        by_dtype[dtype] = by_dtype.get(dtype, 0) + math.prod(shape) * dtype.itemsize
    assert set(by_dtype) == {torch.float32, torch.bfloat16}
    assert by_dtype[torch.bfloat16] > 0.9 * sum(by_dtype.values())  # the matrices
    assert sum(d == torch.float32 for d in dtypes) > 90  # the biases and norms: many tensors, few bytes


def test_bench_help_lists_every_suite_with_what_it_is(fastclip_command):
    from fastclip.cli.bench import SUITES

    status, out, _ = fastclip_command("bench", "--help")
    assert status == 0
    assert "clipping throughput on this machine" in out and "``" not in out
    for name, (_, _, what) in SUITES.items():
        assert f"  {name:11s} {what}" in out, name
    assert "  many-tiny   10,000 and 50,000 one-element grads" in out


def test_bench_many_tiny_reports_each_call_against_the_walk(tmp_path, monkeypatch, capsys):
    import fastclip.cli.bench
    import fastclip.cli.overhead

    monkeypatch.setattr(fastclip.cli.overhead, "COUNTS", (300,))
    report = fastclip.cli.bench.main(["--suite", "many-tiny", "--repeat", "2", "--json", str(tmp_path / "r.json")])
    kinds = [(c["grads"], c["tensors"]) for c in report["overhead"]]
    assert kinds[0] == ("plain", 300) and set(kinds) <= {("plain", 300), ("DTensor", 300)}
    for case in report["overhead"]:
        methods = case["methods"]
        assert methods["walk"]["vs_walk"] == 1.0
        expected = {"walk", "fastclip.clip_grad_norm_", *fastclip.cli.overhead.CLIPPERS}
        assert expected <= set(methods) and all(m["median_ms"] > 0 for m in methods.values())
        for m in methods.values():
            assert m["vs_walk"] == pytest.approx(m["median_ms"] / methods["walk"]["median_ms"])
    assert json.loads((tmp_path / "r.json").read_text())["overhead"] == report["overhead"]
    out = capsys.readouterr().out
    assert "many-tiny: host time per call" in out and "300 plain" in out and "vs walk" in out


def test_bench_reports_half_precision_against_float32_from_the_same_run():
    from fastclip.cli.bench import half_precision_ratios, print_table

    def case(suite, dtype, seconds):
        return {
            "suite": suite,
            "dtypes": [dtype],
            "tensors": 148,
            "methods": {
                "fastclip": {
                    "median_s": seconds,
                    "min_s": seconds,
                    "max_s": seconds,
                    "clips": True,
                    "norm_only": False,
                    "speedup_vs_torch_foreach": 1.0,
                    "fraction_of_floor": 1.0,
                    "kernel_launches": None,
                }
            },
        }

    report = {
        "device": "cpu",
        "device_type": "cpu",
        "torch": torch.__version__,
        "repeat": 1,
        "cases": [
            case("gpt2-124m", "float32", 0.010),
            case("gpt2-124m-bf16", "bfloat16", 0.006),
            case("gpt2-124m-fp16", "float16", 0.005),
        ],
    }
    assert half_precision_ratios(report) == pytest.approx({"gpt2-124m-bf16": 0.6, "gpt2-124m-fp16": 0.5})
    out = io.StringIO()
    print_table(report, out)
    assert "half precision: fastclip's clip_grad_norm_ at 0.60x (bf16), 0.50x (fp16)" in out.getvalue()
    report["cases"][0]["dtypes"] = ["bfloat16"]  # gpt2-124m run with --dtype bfloat16: no float32 to compare with
    assert half_precision_ratios(report) == {}

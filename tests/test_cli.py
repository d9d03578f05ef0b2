"""The fastclip command: argument errors, a quick run of each subcommand with its outputs checked,
and the demo's claim."""

import csv
import io
import json
import pathlib
import subprocess
import sys

import pytest
import torch

PNG_HEADER = b"\x89PNG\r\n\x1a\n"


def fastclip_cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "fastclip", *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("args, message", [
    (["bench", "--suite", "gpt3"], "invalid choice: 'gpt3'"),
    (["bench", "--dtype", "int8"], "invalid choice: 'int8'"),
    (["bench", "--repeat", "0"], "--repeat must be >= 1"),
    (["bench", "--shard", "0"], "--shard must be >= 1"),
    (["bench", "--device", "tpu"], "--device"),
    (["bench", "--device", "meta"], "--device must be cpu, cuda or cuda:N, got 'meta'"),
    (["bench", "--device", "cuda:7"], "--device cuda:7 but"),  # no GPU, or fewer than 8
    (["bench", "--json", " "], "--json needs a file name"),
    (["demo", "--spikes", "ten"], "--spikes must be comma-separated"),
    (["demo", "--steps", "3"], "--steps must be >= 10"),
    (["demo", "--spikes", "5,300"], "--spikes must be steps in [0, 300) (--steps 300), got 300"),
    (["demo", "--steps", "20", "--spikes", ",".join(map(str, range(11)))], "--spikes must leave most steps clean"),
    (["demo", "--lr", "-0.1"], "--lr must be finite and > 0"),
    (["demo", "--lr", "nan"], "--lr must be finite and > 0"),
    (["demo", "--seed", "-1"], "--seed must be in [0, 2**63)"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
    ([], "required"),
])
def test_bad_arguments_exit_nonzero_with_a_clear_message(args, message):
    done = fastclip_cli(*args)
    assert done.returncode != 0
    assert message in done.stderr


@pytest.mark.parametrize("args, message", [
    (["bench", "--json", "{missing}/out.json"], "--json '{missing}/out.json': the folder"),
    (["bench", "--csv", "{tmp}"], "is a folder, not a file"),
    (["bench", "--plot", "{tmp}/chart.txt"], "--plot must name a .png file"),
    (["demo", "--plot", "{missing}/demo.png"], "--plot '{missing}/demo.png': the folder"),
    (["demo", "--no-plot", "--json", "{missing}/demo.json"], "--json"),
])
def test_unwritable_outputs_fail_before_the_run_and_write_nothing(args, message, tmp_path):
    paths = {"tmp": str(tmp_path), "missing": str(tmp_path / "missing")}
    done = fastclip_cli(*[a.format(**paths) for a in args], timeout=60)
    assert done.returncode != 0
    assert message.format(**paths) in done.stderr
    assert "Traceback" not in done.stderr and "memory ceilings" not in done.stderr  # nothing ran
    assert list(tmp_path.iterdir()) == []


def test_outputs_are_replaced_whole(tmp_path):
    from fastclip._outputs import write_atomically

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


def test_console_script_is_installed():
    script = pathlib.Path(sys.executable).parent / "fastclip"
    done = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "bench" in done.stdout and "demo" in done.stdout


def test_bench_quick_writes_json_csv_and_png(tmp_path):
    out = {ext: tmp_path / f"bench.{ext}" for ext in ("json", "csv", "png")}
    done = fastclip_cli("bench", "--quick", "--suite", "many-small", "--suite", "mixed", "--repeat", "2",
                        "--json", str(out["json"]), "--csv", str(out["csv"]), "--plot", str(out["png"]))
    assert done.returncode == 0, done.stderr
    report = json.loads(out["json"].read_text())
    assert {"device", "torch", "ceilings", "cases", "repeat"} <= set(report)
    assert [c["suite"] for c in report["cases"]] == ["many-small", "mixed"]
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
    assert out["png"].read_bytes()[:8] == PNG_HEADER
    assert "fastclip" in done.stdout and "of floor" in done.stdout
    assert "left out: torch_compile: not with --quick" in done.stdout


def test_bench_shard_divides_the_shapes():
    from fastclip.bench import LLAMA_7B, shard_shapes

    shards = shard_shapes(LLAMA_7B, 8)
    assert shards[0] == (4000, 4096) and len(shards) == len(LLAMA_7B)
    assert sum(s[0] * (s[1] if len(s) > 1 else 1) for s in LLAMA_7B) > 6.7e9  # the real model's size


def test_demo_runs_and_zclip_is_not_worse_than_no_clipping(tmp_path):
    out_json, out_png = tmp_path / "demo.json", tmp_path / "demo.png"
    from fastclip.demo import QUICK_STEPS, default_spikes

    done = fastclip_cli("demo", "--quick", "--json", str(out_json), "--plot", str(out_png), timeout=600)
    assert done.returncode == 0, done.stderr
    def not_json(constant):
        raise AssertionError(f"{constant} is not JSON")

    report = json.loads(out_json.read_text(), parse_constant=not_json)
    assert report["spikes"] == sorted(default_spikes(QUICK_STEPS))
    assert all(len(run["losses"]) == QUICK_STEPS for run in report["runs"].values())
    assert set(report["runs"]["no clipping"]["thresholds"]) == {None}  # no threshold: null, not NaN
    summary = report["summary"]
    assert set(summary) == {"no clipping", "fixed (NormClip, 1.0)", "ZClip", "AutoClip (p10)"}
    assert summary["ZClip"]["final_loss"] <= summary["no clipping"]["final_loss"]
    assert summary["ZClip"]["steps_clipped"] >= len(report["spikes"])  # at least the injected spikes
    assert out_png.read_bytes()[:8] == PNG_HEADER


def test_bench_refuses_a_suite_that_does_not_fit_in_memory(monkeypatch):
    from fastclip import bench

    monkeypatch.setattr(bench, "available_memory_bytes", lambda device: 2 << 30)
    with pytest.raises(SystemExit, match=r"suite llama-7b needs about 2[0-9]\.\d GiB on cpu and 2\.0 GiB is free "
                                         r"\(use --shard N\)"):
        bench.main(["--suite", "llama-7b", "--device", "cpu"])
    with pytest.raises(SystemExit, match="suite one-huge needs about 2.0 GiB on cpu and 2.0 GiB is free$"):
        bench.main(["--suite", "one-huge", "--device", "cpu"])


def test_bench_turns_out_of_memory_into_a_message(monkeypatch):
    from fastclip import bench

    def out_of_memory(*args):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore detail")

    monkeypatch.setattr(bench, "_run_suites", out_of_memory)
    with pytest.raises(SystemExit, match=r"out of memory on cpu \(CUDA out of memory. Tried to allocate 2.00 GiB\); "
                                         r"try fewer suites or --shard N$"):
        bench.main(["--suite", "gpt2-124m", "--device", "cpu"])


def test_interrupted_command_exits_130_and_says_so(monkeypatch, capsys):
    from fastclip import bench, cli

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(bench, "run", interrupted)
    assert cli.main(["bench", "--quick"]) == 130
    assert "fastclip bench: interrupted" in capsys.readouterr().err


def test_bench_leaves_out_a_failing_method_and_flags_one_that_does_not_clip(monkeypatch):
    from fastclip import bench

    real_methods = bench._methods

    def with_extra_methods(*args, **kwargs):
        methods, skipped = real_methods(*args, **kwargs)
        methods["broken"] = lambda: torch.ones(2) @ torch.ones(3)
        methods["does nothing"] = lambda: None
        return methods, skipped

    monkeypatch.setattr(bench, "_methods", with_extra_methods)
    generator = torch.Generator().manual_seed(0)
    case = bench.run_case("small", [(257,), (31, 7), (1000,)], (torch.float32,), torch.device("cpu"),
                          bench.Timer(torch.device("cpu")), 2, generator, quick=True, probes=bench.ceiling_probes(
                              torch.device("cpu")))
    assert "broken" not in case["methods"]
    assert case["skipped"]["broken"].startswith("failed in warm-up: RuntimeError: ")
    assert case["skipped"]["torch_compile"] == "not with --quick (compiling takes a while)"
    assert case["methods"]["does nothing"]["clips"] is False
    for method in ("fastclip", "torch_foreach", "torch_loop", "zclip", "fastclip.ZClip", "autoclip",
                   "fastclip.AutoClip"):
        assert case["methods"][method]["clips"] is True, method

    bench.add_floor(case, case["ceilings"])
    report = {"device": "test CPU", "device_type": "cpu", "torch": torch.__version__, "repeat": 2, "shard": 4,
              "cases": [case]}
    out = io.StringIO()
    bench.print_table(report, out)
    table = out.getvalue()
    assert "small/4" in table and "one rank's share of the grads, sharded 4 ways as FSDP does" in table
    assert "does nothing (*)" in table and "fastclip (*)" not in table
    assert "(*) did not reduce the norm in a checked warm-up call" in table
    assert "left out: broken: failed in warm-up: RuntimeError" in table
    assert "left out: torch_compile: not with --quick" in table


def test_norm_only_methods_are_held_to_a_one_read_floor():
    from fastclip import bench

    ceilings = {"read_bytes_per_s": 1e9, "in_place_bytes_per_s": 2e9}
    case = {"grad_bytes": 3000, "float32_bytes": 2000,
            "methods": {"fastclip": {"median_s": 4e-6}, bench.NORM_ONLY_PREFIX + "vendor": {"median_s": 4e-6,
                                                                                           "norm_only": True}}}
    bench.add_floor(case, ceilings)
    assert case["floor_s"] == pytest.approx(3000 / 1e9 + 2 * 3000 / 2e9)
    assert case["methods"]["fastclip"]["fraction_of_floor"] == pytest.approx(6e-6 / 4e-6)
    assert case["methods"][bench.NORM_ONLY_PREFIX + "vendor"]["fraction_of_floor"] == pytest.approx(2e-6 / 4e-6)


def test_bench_device_parsing():
    from fastclip import bench

    assert bench._parse_device("cpu") == torch.device("cpu")
    assert bench._parse_device("cpu:0") == torch.device("cpu")
    assert bench._parse_device(None).type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_demo_default_spikes_follow_the_step_count():
    from fastclip.demo import default_spikes

    assert default_spikes(300) == {120, 121, 200, 250}
    for steps in (10, 11, 57, 1000):
        spikes = default_spikes(steps)
        assert len(spikes) == 4 and all(0 <= s < steps for s in spikes), steps


def test_mixed_suite_mixes_dtypes_in_bytes_not_only_in_name():
    import math

    from fastclip.bench import SUITES

    shapes, dtypes, _ = SUITES["mixed"]
    assert len(dtypes) == len(shapes)
    by_dtype = {}
    for shape, dtype in zip(shapes, dtypes):
        by_dtype[dtype] = by_dtype.get(dtype, 0) + math.prod(shape) * dtype.itemsize
    assert set(by_dtype) == {torch.float32, torch.bfloat16}
    assert by_dtype[torch.bfloat16] > 0.9 * sum(by_dtype.values())  # the matrices
    assert sum(d == torch.float32 for d in dtypes) > 90  # the biases and norms: many tensors, few bytes


def test_bench_help_lists_every_suite_with_what_it_is():
    from fastclip.bench import SUITES

    done = fastclip_cli("bench", "--help", timeout=60)
    assert done.returncode == 0
    assert "clipping throughput on this machine" in done.stdout and "``" not in done.stdout
    for name, (_, _, what) in SUITES.items():
        assert f"  {name:11s} {what}" in done.stdout, name

"""The fastclip command: argument errors, a quick run of each subcommand with its outputs checked,
and the demo's claim."""

import csv
import json
import pathlib
import subprocess
import sys

import pytest

PNG_HEADER = b"\x89PNG\r\n\x1a\n"


def fastclip_cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "fastclip", *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("args, message", [
    (["bench", "--suite", "gpt3"], "invalid choice: 'gpt3'"),
    (["bench", "--dtype", "int8"], "invalid choice: 'int8'"),
    (["bench", "--repeat", "0"], "--repeat must be >= 1"),
    (["bench", "--shard", "0"], "--shard must be >= 1"),
    (["bench", "--device", "tpu"], "--device"),
    (["demo", "--spikes", "ten"], "--spikes must be comma-separated"),
    (["demo", "--steps", "3"], "--steps must be >= 10"),
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
        for r in case["methods"].values():
            assert r["min_s"] <= r["median_s"] <= r["max_s"] and r["median_s"] > 0
            assert r["fraction_of_floor"] > 0 and r["speedup_vs_torch_foreach"] > 0
    rows = list(csv.DictReader(out["csv"].open()))
    assert len(rows) == sum(len(c["methods"]) for c in report["cases"])
    assert out["png"].read_bytes()[:8] == PNG_HEADER
    assert "fastclip" in done.stdout and "of floor" in done.stdout


def test_bench_shard_divides_the_shapes():
    from fastclip.bench import LLAMA_7B, shard_shapes

    shards = shard_shapes(LLAMA_7B, 8)
    assert shards[0] == (4000, 4096) and len(shards) == len(LLAMA_7B)
    assert sum(s[0] * (s[1] if len(s) > 1 else 1) for s in LLAMA_7B) > 6.7e9  # the real model's size


def test_demo_runs_and_zclip_is_not_worse_than_no_clipping(tmp_path):
    out_json, out_png = tmp_path / "demo.json", tmp_path / "demo.png"
    done = fastclip_cli("demo", "--steps", "160", "--spikes", "80,81,130", "--json", str(out_json),
                        "--plot", str(out_png), timeout=600)
    assert done.returncode == 0, done.stderr
    summary = json.loads(out_json.read_text())["summary"]
    assert set(summary) == {"no clipping", "fixed (NormClip, 1.0)", "ZClip", "AutoClip (p10)"}
    assert summary["ZClip"]["final_loss"] <= summary["no clipping"]["final_loss"]
    assert summary["ZClip"]["steps_clipped"] >= 3  # at least the injected spikes
    assert out_png.read_bytes()[:8] == PNG_HEADER

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

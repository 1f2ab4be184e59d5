"""The training-overhead benchmark (poolbench-bench overhead), run at a tiny size."""

from __future__ import annotations

import csv

import pytest
import torch

from poolbench.bench import cli
from poolbench.bench import overhead as O
from poolbench.models import build_model, model_summary
from poolbench.pooling import available_pools

# Width 8, not less: on AVX2 CPUs, torch 2.14.1's oneDNN backward of a 1x1 stride-2
# channels_last convolution with fewer than 8 input channels (ResNet18's first downsample
# at width 4) corrupts the heap and aborts the process.
WIDTH = 8
TINY = ["--batch", "2", "--width", str(WIDTH), "--repeats", "2", "--warmup", "1"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("overhead")
    threads = torch.get_num_threads()
    assert cli.main(["overhead", *TINY, "--threads", "1", "--out", str(out)]) == 0
    assert torch.get_num_threads() == threads  # --threads is process-wide: restored after
    with open(out / "overhead.csv") as fh:
        rows = list(csv.DictReader(fh))
    return out, rows


def test_every_model_and_method_has_a_row(tiny_run):
    _, rows = tiny_run
    for model in ("vgg16", "resnet18"):
        methods = [r["method"] for r in rows if r["model"] == model]
        assert methods[0] == O.BASELINE
        assert sorted(methods) == sorted(available_pools())


def test_fractional_max_is_refused_not_timed_as_max_pooling(tiny_run):
    out, rows = tiny_run
    refused = {(r["model"], r["method"]) for r in rows if r["error"]}
    assert refused == {("vgg16", "fractional_max"), ("resnet18", "fractional_max")}
    for r in rows:
        if r["error"]:
            assert r["error"].startswith("refused: ") and "compute max pooling" in r["error"]
            assert r["step_ratio"] == r["params_total"] == ""  # never built, never timed
    md = (out / "overhead.md").read_text()
    assert "| fractional_max | refused: features.pool1, which gets 32x32 maps" in md
    assert "| fractional_max | refused: maxpool, which gets 32x32 maps" in md


def test_baseline_is_exactly_one_and_ratios_positive(tiny_run):
    _, rows = tiny_run
    for r in rows:
        if r["error"].startswith("refused: "):
            continue  # tested above
        for col in ("step_ratio", "step_ratio_q25", "step_ratio_q75", "fwd_ratio", "bwd_ratio",
                    "step_ms", "fwd_ms", "bwd_ms", "opt_ms", "img_per_s"):
            assert float(r[col]) > 0, (r["model"], r["method"], col)
        assert float(r["step_ratio_q25"]) <= float(r["step_ratio"]) <= float(r["step_ratio_q75"])
        assert r["peak_mib"] == "nan"  # CUDA only
        assert (r["device"], r["precision"], r["memory_format"], r["clock"]) == (
            "cpu", "32", "channels_last", "wall")
        assert float(r["step_ratio_wall"]) == float(r["step_ratio"])  # wall is the primary clock
        assert float(r["step_ratio_cpu"]) > 0  # and the process CPU time is recorded too
        assert (int(r["batch"]), int(r["width"]), int(r["repeats"])) == (2, WIDTH, 2)
        if r["method"] == O.BASELINE:
            for col in ("step_ratio", "step_ratio_q25", "step_ratio_q75", "fwd_ratio",
                        "bwd_ratio", "step_ratio_wall", "step_ratio_cpu"):
                assert float(r[col]) == 1.0
            assert int(r["extra_params"]) == 0


def test_extra_parameters_are_counted_on_the_whole_model(tiny_run):
    _, rows = tiny_run
    by = {(r["model"], r["method"]): r for r in rows}
    base = model_summary(build_model("vgg16", 100, width=WIDTH))["params_total"]
    ca = model_summary(build_model("vgg16", 100, pool="channel_adaptive", width=WIDTH))
    r = by[("vgg16", "channel_adaptive")]
    assert int(r["params_total"]) == ca["params_total"]
    assert int(r["extra_params"]) == ca["params_total"] - base == WIDTH * (1 + 2 + 4 + 8 + 8)
    assert (int(r["method_pool_layers"]), int(r["pool_layers"])) == (5, 5)
    assert (int(by[("resnet18", "gated")]["method_pool_layers"]),
            int(by[("resnet18", "gated")]["pool_layers"])) == (1, 1)
    for model in ("vgg16", "resnet18"):
        assert int(by[(model, "softpool")]["extra_params"]) == 0
        assert int(by[(model, "strided_conv")]["extra_params"]) > 0


def test_markdown_has_a_table_per_model_and_the_targets(tiny_run):
    out, _ = tiny_run
    md = (out / "overhead.md").read_text()
    assert md.startswith("# Training-step overhead relative to max pooling")
    assert "Command: `poolbench-bench overhead --batch 2" in md and "Date: " in md
    assert "## vgg16" in md and "## resnet18" in md
    assert "## Targets (step time / max pooling)" in md
    for m in available_pools():
        assert f"| {m} |" in md


def test_overhead_frame_matches_the_results_layout(tiny_run):
    out, rows = tiny_run
    from poolbench.results.tables import overhead_frame as runs_frame  # noqa: F401 (exists)

    f = O.overhead_frame(out / "overhead.csv")
    for col in ("data", "model", "method", "n", "epoch_time_s_mean", "epoch_time_s_std",
                "epoch_time_rel", "throughput_img_s", "params_total", "extra_params",
                "extra_params_pct", "params_pooling", "pool_layers", "devices"):
        assert col in f.columns, col
    assert len(f) == sum(not r["error"] for r in rows)  # refused rows are dropped
    assert (f.loc[f["method"] == "max", "epoch_time_rel"] == 1.0).all()
    assert (f["epoch_time_rel"] > 0).all() and set(f["data"]) == {"random 32x32"}


def test_targets_use_vgg16_and_every_method():
    rows = [dict(model="vgg16", method="max", step_ratio=1.0, step_ratio_q75=1.0),
            dict(model="vgg16", method="softpool", step_ratio=1.04, step_ratio_q75=1.06),
            dict(model="vgg16", method="gated", step_ratio=1.2, step_ratio_q75=1.3)]
    t = {(x["method"], x["limit"]): x["met"] for x in O.check_targets(rows)}
    assert t == {("softpool", 1.05): True, ("softpool", 1.10): True, ("gated", 1.10): False}


def test_bad_arguments_name_the_choices():
    with pytest.raises(ValueError, match="unknown model"):
        O.run_overhead(O.OverheadConfig(models=["alexnet"]))
    with pytest.raises(ValueError, match="16-mixed needs CUDA"):
        O.resolve_precision("16-mixed", torch.device("cpu"))
    assert O.resolve_precision("auto", torch.device("cpu")) == "32"
    assert O.resolve_precision("auto", torch.device("cuda")) == "16-mixed"
    assert O.resolve_clock("auto", torch.device("cpu")) == "wall"
    assert O.resolve_clock("cpu", torch.device("cpu")) == "cpu"
    assert O.resolve_clock("auto", torch.device("cuda")) == "cuda"
    with pytest.raises(ValueError, match="cannot time CUDA work"):
        O.resolve_clock("cpu", torch.device("cuda"))


def test_quick_run_on_the_cpu_clock(tmp_path):
    assert cli.main(["overhead", "--quick", "--models", "resnet18", "--methods", "avg",
                     "--clock", "cpu", "--out", str(tmp_path)]) == 0
    with open(tmp_path / "overhead.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["method"] for r in rows] == ["max", "avg"]
    assert {r["clock"] for r in rows} == {"cpu"}
    assert all(float(r["step_ratio"]) == float(r["step_ratio_cpu"]) for r in rows)

"""The latency benchmark (poolbench-bench latency), run at a tiny size."""

from __future__ import annotations

import csv

import pytest
import torch

from poolbench.bench import cli, latency
from poolbench.pooling import available_pools


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("latency")
    argv = ["latency", "--shapes", "2x8x8x8", "2x8x9x9:3/2/1", "--device", "cpu",
            "--memory-format", "both", "--repeats", "3", "--number", "1", "--warmup", "1",
            "--out", str(out)]
    assert cli.main(argv) == 0
    with open(out / "latency.csv") as fh:
        rows = list(csv.DictReader(fh))
    return out, rows


def test_csv_has_a_row_per_method_shape_and_format(tiny_run):
    _, rows = tiny_run
    expected = {latency.BASELINE, *available_pools()}
    groups = {(r["shape"], r["memory_format"]) for r in rows}
    assert groups == {(s, f) for s in ("2x8x8x8 k2s2", "2x8x9x9 k3s2p1")
                      for f in ("contiguous", "channels_last")}
    for shape, fmt in groups:
        methods = [r["method"] for r in rows if (r["shape"], r["memory_format"]) == (shape, fmt)]
        assert sorted(methods) == sorted(expected), (shape, fmt)


def test_fractional_max_is_refused_where_it_would_be_max_pooling_timed_elsewhere(tiny_run):
    out, rows = tiny_run
    refused = {(r["shape"], r["memory_format"], r["method"]) for r in rows if r["error"]}
    assert refused == {("2x8x8x8 k2s2", f, "fractional_max")
                       for f in ("contiguous", "channels_last")}
    for r in rows:
        if r["error"]:
            assert r["error"].startswith("refused: fractional_max cannot pool 8x8 maps")
            assert "compute max pooling" in r["error"] and r["fwdbwd_ratio"] == ""
        elif r["method"] == "fractional_max":  # the 3x3/2 pad-1 pool: random windows
            assert float(r["fwdbwd_ratio"]) > 0
    md = (out / "latency.md").read_text()
    assert "| fractional_max | refused | " in md  # summary: ratios at the two shapes
    assert "| fractional_max | 0 | refused: fractional_max cannot pool 8x8 maps" in md


def test_ratios_positive_and_baseline_is_one(tiny_run):
    _, rows = tiny_run
    for r in rows:
        if r["error"].startswith("refused: "):
            continue  # tested above
        for col in ("fwd_ratio", "bwd_ratio", "fwdbwd_ratio", "fwd_ms", "bwd_ms", "fwdbwd_ms"):
            assert float(r[col]) > 0, (r["method"], col)
        assert float(r["saved_mib"]) >= 0
        assert r["peak_mib"] == "nan"  # CUDA only
        if r["method"] == latency.BASELINE:
            for col in ("fwd_ratio", "bwd_ratio", "fwdbwd_ratio"):
                assert float(r[col]) == 1.0
            assert int(r["params"]) == 0


def test_parameter_counts(tiny_run):
    _, rows = tiny_run
    params = {r["method"]: int(r["params"]) for r in rows}
    assert params["max"] == 0
    assert params["channel_adaptive"] == 8  # one logit per channel
    assert params["strided_conv"] > 0


def test_markdown_lists_every_method(tiny_run):
    out, rows = tiny_run
    md = (out / "latency.md").read_text()
    assert md.startswith("# Pooling latency relative to native max pooling")
    assert "Command: `poolbench-bench latency --shapes 2x8x8x8" in md
    assert "Date: " in md
    assert "baseline native F.max_pool2d: fwd" in md
    for fmt in ("contiguous", "channels_last"):
        assert f"## Forward+backward time / native max pool, {fmt}" in md
    for method in [latency.BASELINE, *available_pools()]:
        assert f"| {method} |" in md
    # One detailed table per shape and format, each with a row per method.
    assert md.count("### ") == 4
    table_rows = [line for line in md.splitlines() if line.startswith("| ")]
    assert len(table_rows) >= 4 * (len(available_pools()) + 2)


def test_parse_shape():
    s = latency.parse_shape("128x64x112x112:3/2/1")
    assert (s.shape, s.kernel, s.stride_, s.padding) == ((128, 64, 112, 112), 3, 2, 1)
    assert s.label == "128x64x112x112 k3s2p1"
    s = latency.parse_shape("4,8,16,16")
    assert (s.kernel, s.stride_, s.padding, s.label) == (2, 2, 0, "4x8x16x16 k2s2")
    for bad in ["4x8x16", "axbxcxd", "4x8x16x16:0", "4x8x16x16:2/2/1/1"]:
        with pytest.raises(ValueError):
            latency.parse_shape(bad)


def test_default_and_quick_shapes():
    assert latency.DEFAULT_SHAPES[0].shape == (128, 64, 32, 32)
    assert latency.DEFAULT_SHAPES[-1].label == "128x64x112x112 k3s2p1"
    assert [s.shape[0] for s in latency.QUICK_SHAPES] == [32, 32]
    assert len(latency.QUICK_SHAPES) == 2


def test_targets_are_evaluated_on_contiguous_rows_only():
    base = dict(device="cpu", method="tmaxavg", fwdbwd_ratio=1.5, error="")
    rows = [dict(base, shape="128x64x32x32 k2s2", memory_format="contiguous"),
            dict(base, shape="128x64x32x32 k2s2", memory_format="channels_last",
                 fwdbwd_ratio=9.0)]
    (t,) = latency.check_targets(rows)
    assert t["met"] and t["limit"] == 2.0


def test_unknown_method_is_rejected():
    with pytest.raises(SystemExit):
        cli.main(["latency", "--methods", "nope"])


def test_cuda_request_without_cuda_fails_clearly():
    if torch.cuda.is_available():
        pytest.skip("CUDA is available")
    with pytest.raises(ValueError, match="CUDA is not available"):
        latency.resolve_device("cuda")


def test_console_script_is_the_cli(capsys):
    """``poolbench-bench`` (pyproject's console script) is ``poolbench.bench.cli:main``, so
    the other tests call ``cli.main``; every subcommand is there."""
    from importlib.metadata import entry_points

    (ep,) = [e for e in entry_points(group="console_scripts") if e.name == "poolbench-bench"]
    assert ep.value == "poolbench.bench.cli:main" and ep.load() is cli.main
    with pytest.raises(SystemExit) as exc:
        ep.load()(["latency", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "usage: poolbench-bench latency" in out and "--memory-format" in out
    assert list(cli.SUBCOMMANDS) == ["latency", "preserve", "overhead", "launch", "gpu-hours",
                                     "data"]
    for module in cli.SUBCOMMANDS.values():  # each module defines its arguments and its run
        assert callable(module.add_arguments) and callable(module.run) and module.HELP

"""poolbench-bench gpu-hours: runs of a grid, FLOPs per image, operators per step, hours
(estimated and measured).

Small widths (``model.width=8``) keep FLOP and operator counting cheap; the hand
computations below use only the VGG16 layer list, the datasets' official sizes and the
estimate's formula, never the code under test.
"""

from __future__ import annotations

import csv
import math

import pytest
import torch

from poolbench.bench import cli
from poolbench.bench import gpu_hours as G

# torchvision's VGG16 configuration "D", written out here (not imported) for the hand count
VGG16_LAYERS = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
                512, 512, 512, "M"]
SMALL = ["model.width=8"]
CACHE: dict = {}  # FLOP counts shared by the tests of this file


def vgg16_flops_by_hand(width: int, size: int, classes: int) -> tuple[int, int]:
    """(training, eval) FLOPs per image: 2 FLOPs per multiply-add of every 3x3 conv (padding
    1, spatial size kept, halved by each pool) and the final linear layer. Backward computes
    the input gradient and the weight gradient, each as many FLOPs as the forward, except
    the first convolution's input gradient (the images do not require grad)."""
    convs, cin, hw = [], 3, size
    for v in VGG16_LAYERS:
        if v == "M":
            hw //= 2
            continue
        cout = v * width // 64
        convs.append(2 * cin * cout * 3 * 3 * hw * hw)
        cin = cout
    forward = sum(convs) + 2 * cin * classes
    return 3 * forward - convs[0], forward


@pytest.mark.parametrize("size,classes", [(32, 100), (64, 200)])
def test_vgg16_flops_match_a_hand_count(size, classes):
    key = G.ModelKey("vgg16", (("pool_positions", "all"), ("width", 8)), "max", (), size,
                     classes)
    cost = G.count_model(key)
    train, evaluation = vgg16_flops_by_hand(8, size, classes)
    assert cost.train_flops == train  # per image: a wrong batch division would be off by 2x
    assert cost.eval_flops == evaluation  # eval: forward only, no backward
    assert cost.train_flops == G.count_model(key, batch=3).train_flops  # independent of batch


def test_gated_pool_convolutions_are_counted_from_the_configs_hyperparameters():
    """gated (dense) adds a 1x1 C->C convolution on each of VGG16's five pool inputs:
    2 C^2 H W FLOPs forward, 3x that in training; pool.gate comes from the config."""
    plans = G.plan_runs("paper_grid", [*SMALL, "seed=0", "data=cifar100", "model=vgg16",
                                       "pool=max,gated"])
    gated = next(p for p in plans if p.pool == "gated")
    assert dict(gated.key.pool_hparams) == {"gate": "dense"}
    flops = G.count_all(plans, CACHE)
    pool_inputs = [(8, 32), (16, 16), (32, 8), (64, 4), (64, 2)]  # (C, H=W) at width 8
    extra = sum(2 * c * c * hw * hw for c, hw in pool_inputs)
    base = flops[next(p for p in plans if p.pool == "max").key]
    assert flops[gated.key].eval_flops - base.eval_flops == extra
    assert flops[gated.key].train_flops - base.train_flops == 3 * extra


def test_paper_grid_has_96_runs_and_32_distinct_models():
    plans = G.plan_runs("paper_grid", SMALL)
    assert len(plans) == 96
    assert len({p.key for p in plans}) == 32  # 8 pools x 2 models x 2 datasets
    by = {(p.data, p.model, p.pool, p.seed) for p in plans}
    assert len(by) == 96
    for p in plans:
        assert p.epochs == 200 and p.batch_size == 128 and p.eval_batch_size == 512
        if p.data == "cifar100":  # 50,000 - 5,000 val, the last partial batch dropped
            assert (p.image_size, p.key.num_classes) == (32, 100)
            assert p.steps_per_epoch == 45_000 // 128 == 351
            assert (p.val_images, p.test_images) == (5_000, 10_000)
        else:  # 100,000 - 10,000 val
            assert (p.image_size, p.key.num_classes) == (64, 200)
            assert p.steps_per_epoch == 90_000 // 128 == 703
            assert (p.val_images, p.test_images) == (10_000, 10_000)
        assert p.train_steps == 200 * p.steps_per_epoch
        assert (p.val_passes, p.test_passes) == (200, 2)


def _one(overrides, **kw):
    return G.gpu_hours("paper_grid", [*SMALL, "seed=0", "pool=max", *overrides], cache=CACHE,
                       **kw)


def test_estimate_without_host_term_is_flops_over_peak_times_mfu_by_hand():
    res = _one(["data=cifar100", "model=vgg16"], op_us=0)
    (r,) = res.rows
    train, evaluation = vgg16_flops_by_hand(8, 32, 100)
    images = 200 * 351 * 128
    flop = images * train + (200 * 5_000 + 2 * 10_000) * evaluation
    assert r["total_h"] == pytest.approx(flop / (989e12 * 0.25) / 3600, rel=1e-12)
    assert r["step_ms"] == pytest.approx(1e3 * 128 * train / (989e12 * 0.25), rel=1e-12)
    assert r["total_h_gpu_only"] == pytest.approx(r["total_h"], rel=1e-12)
    # the default adds the host term: at width 8 every step is host-bound
    (d,) = _one(["data=cifar100", "model=vgg16"]).rows
    assert d["bound"] == "host" and d["total_h"] > 10 * r["total_h"]
    assert d["total_h_gpu_only"] == pytest.approx(r["total_h"], rel=1e-12)


def test_gpu_only_estimate_scales_as_one_over_mfu_and_linearly_with_epochs():
    base = _one([], op_us=0)
    assert len(base.rows) == 4
    plans = G.plan_runs("paper_grid", [*SMALL, "seed=0", "pool=max"])
    costs = G.count_all(plans, CACHE)

    def total(**kw):
        return sum(r["total_h"] for r in G.estimate_hours(plans, costs, op_us=0, **kw))

    assert total() == pytest.approx(base.total_h, rel=1e-12)
    for mfu in (0.1, 0.4, 1.0):
        assert total(mfu=mfu) == pytest.approx(base.total_h * 0.25 / mfu, rel=1e-12)
    assert total(peak_tflops=494.5) == pytest.approx(2 * base.total_h, rel=1e-12)
    short = _one(["trainer.max_epochs=20"], op_us=0)
    for a, b in zip(base.rows, short.rows):
        assert (a["epochs"], b["epochs"]) == (200, 20)
        assert a["train_h"] == pytest.approx(10 * b["train_h"], rel=1e-12)
        # validation every epoch scales with the epochs; the two test passes do not
        test_h = 2 * b["test_images"] * b["eval_gflop_per_img"] * 1e9 / (989e12 * 0.25) / 3600
        assert a["total_h"] - test_h == pytest.approx(10 * (b["total_h"] - test_h), rel=1e-9)


# ----------------------------------------------------------------------------- operators

def test_op_counter_counts_a_tiny_module_and_function_exactly():
    conv, relu = torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU()
    x = torch.randn(2, 3, 5, 5)
    with torch.no_grad(), G.OpCounter() as c:
        relu(conv(x))  # conv2d -> convolution (bias included), relu
    assert {str(f): n for f, n in c.counts.items()} == {"aten.convolution.default": 1,
                                                         "aten.relu.default": 1}
    assert (c.kernel_ops, c.other_ops) == (2, 0)
    with G.OpCounter() as c:  # with autograd: relu's output is saved for backward (a view)
        relu(conv(x))
    assert {str(f): n for f, n in c.counts.items()} == {"aten.convolution.default": 1,
                                                         "aten.relu.default": 1,
                                                         "aten.detach.default": 1}
    assert (c.kernel_ops, c.other_ops) == (2, 1)

    a, b = torch.randn(3, 4), torch.randn(3, 4)

    def f():
        torch.add(a, b)
        torch.add(a, 1.0)
        a.view(-1)  # views launch no kernel: counted apart
        a.t()
        a.clone().add_(1.0)  # clone and an in-place add: two kernels

    with G.OpCounter() as c:
        f()
    assert (c.kernel_ops, c.other_ops) == (4, 2)
    assert c.take() == (4, 2) and c.take() == (0, 0)  # take() starts afresh
    ops = torch.ops.aten
    assert G.launches_kernel(ops.add_.Tensor) and G.launches_kernel(ops.add.out)
    assert G.launches_kernel(ops._to_copy.default)
    for op in (ops.view.default, ops._unsafe_view.default, ops.expand.default,
               ops.detach.default, ops.empty.memory_format, ops.as_strided_.default):
        assert not G.launches_kernel(op), op


def _key(pool, size=32, hparams=()):
    return G.ModelKey("vgg16", (("pool_positions", "all"), ("width", 8)), pool, hparams, size,
                      100)


def test_tmaxavg_dispatches_more_kernel_ops_than_max_pooling():
    mx, tm = G.count_model(_key("max")), G.count_model(_key("tmaxavg"))
    # max pooling: at least VGG16's 13 conv + BN + ReLU, 5 pools, the classifier and the
    # loss forward; the same layers' backward; SGD foreach (add, mul_, add_, add_)
    assert mx.fwd_ops >= 13 * 3 + 5 + 1 + 2 and mx.bwd_ops >= 13 * 3 + 5 + 1
    assert mx.eval_ops >= 13 * 3 + 5 + 1
    assert 4 <= mx.opt_ops < 20 and tm.opt_ops == mx.opt_ops  # few multi-tensor ops
    assert tm.train_ops > 2 * mx.train_ops and tm.eval_ops > 2 * mx.eval_ops
    assert tm.train_flops == mx.train_flops  # same FLOPs: only the ops differ


def test_op_counts_are_the_gpu_paths_independent_of_batch_and_image_size():
    key, big = _key("tmaxavg", 64), _key("tmaxavg", 128)
    a, b, c = G.count_model(key), G.count_model(key, batch=17), G.count_model(big)
    fields = ("fwd_ops", "bwd_ops", "opt_ops", "eval_ops", "train_other_ops", "eval_other_ops")
    for k in fields:
        assert getattr(a, k) == getattr(b, k) == getattr(c, k), k
    # the CPU chunked path (what gpu_code_path switches off) would depend on the batch
    n2 = G.count_model(key, gpu_path=False)
    n17 = G.count_model(key, batch=17, gpu_path=False)
    assert n2.fwd_ops != n17.fwd_ops


# ----------------------------------------------------------------------------- the estimate

COST = G.ModelCost(train_flops=1e9, eval_flops=4e8, fwd_ops=100, bwd_ops=150, opt_ops=10,
                   eval_ops=120)


def _plan():
    (p,) = G.plan_runs("paper_grid", [*SMALL, "seed=0", "pool=max", "data=cifar100",
                                      "model=vgg16"])
    return p


def test_step_time_is_the_max_of_gpu_and_host_time_by_hand():
    p = _plan()
    (r,) = G.estimate_hours([p], {p.key: COST}, peak_tflops=1000, mfu=0.5, op_us=2)
    rate = 1000e12 * 0.5
    gpu, host = 128 * 1e9 / rate, 260 * 2e-6  # 0.256 ms < 0.52 ms: host-bound
    assert (r["gpu_ms"], r["host_ms"]) == (pytest.approx(1e3 * gpu), pytest.approx(1e3 * host))
    assert r["bound"] == "host" and r["step_ms"] == pytest.approx(0.52)
    assert r["train_h"] == pytest.approx(200 * 351 * host / 3600, rel=1e-12)
    # evaluation at batch 512, 120 ops x 2 us = 0.24 ms of host time per step: a full batch
    # is GPU-bound (0.4096 ms), validation's last batch of 5,000 - 9 x 512 = 392 images
    # too (0.3136 ms), the test set's last of 10,000 - 19 x 512 = 272 images is host-bound
    # (0.2176 < 0.24 ms)
    full = 512 * 4e8 / rate
    val = 9 * full + 392 * 4e8 / rate
    test = 19 * full + 0.24e-3
    assert math.ceil(5_000 / 512) == 10 and math.ceil(10_000 / 512) == 20
    assert r["eval_steps"] == 200 * 10 + 2 * 20
    assert r["eval_h"] == pytest.approx((200 * val + 2 * test) / 3600, rel=1e-12)
    assert r["total_h"] == pytest.approx(r["train_h"] + r["eval_h"], rel=1e-12)
    assert r["eval_bound"] == "GPU"
    # a faster host: the GPU binds
    (r,) = G.estimate_hours([p], {p.key: COST}, peak_tflops=1000, mfu=0.5, op_us=0.5)
    assert r["bound"] == "GPU" and r["step_ms"] == pytest.approx(1e3 * gpu)
    assert r["train_h"] == pytest.approx(200 * 351 * gpu / 3600, rel=1e-12)


def test_range_combines_the_extremes_of_mfu_and_op_us():
    p = _plan()

    def total(mfu, op_us):
        (r,) = G.estimate_hours([p], {p.key: COST}, mfu=mfu, op_us=op_us)
        return r["total_h"]

    (r,) = G.estimate_hours([p], {p.key: COST})
    assert (r["mfu"], r["op_us"]) == (0.25, 8.0)
    assert r["total_h_lo"] == pytest.approx(total(0.40, 4.0), rel=1e-12)
    assert r["total_h_hi"] == pytest.approx(total(0.10, 16.0), rel=1e-12)
    assert r["total_h_gpu_only"] == pytest.approx(total(0.25, 0.0), rel=1e-12)
    # the extremes together: not one assumption's range with the other at its default
    assert r["total_h_lo"] < min(total(0.40, 8.0), total(0.25, 4.0), total(0.10, 4.0))
    assert r["total_h_hi"] > max(total(0.10, 8.0), total(0.25, 16.0), total(0.40, 16.0))
    assert r["total_h_lo"] < r["total_h"] < r["total_h_hi"]
    res = G.GpuHours("x", [], "estimate", [r, dict(r)])
    assert res.total_range == pytest.approx((2 * r["total_h_lo"], 2 * r["total_h_hi"]))


@pytest.mark.parametrize("limit,steps", [(None, 351), (1.0, 351), (4, 4), (1, 1),
                                         (0.5, 175), (1000, 351)])
def test_limit_train_batches_as_lightning(limit, steps):
    ov = [] if limit is None else [f"trainer.limit_train_batches={limit}"]
    (p,) = G.plan_runs("paper_grid", [*SMALL, "seed=0", "pool=max", "data=cifar100",
                                      "model=vgg16", "trainer.max_epochs=3", *ov])
    assert p.steps_per_epoch == steps and p.train_steps == 3 * steps


def test_lightning_num_batches_edge_cases():
    assert G.lightning_num_batches(10, 0, "limit_val_batches") == 0
    assert G.lightning_num_batches(10, 0.0, "limit_val_batches") == 0
    with pytest.raises(ValueError, match="0 batches"):
        G.lightning_num_batches(10, 0.05, "limit_train_batches")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        G.lightning_num_batches(10, 1.5, "limit_train_batches")


def test_smoke_experiment_budget_and_no_validation():
    (p,) = G.plan_runs("smoke", ["seed=0", "pool=max", "data=cifar100", "model=vgg16"])
    # smoke_train_batches.cifar100 (conf/experiment/smoke.yaml): 48 batches an epoch, 2 epochs
    assert (p.epochs, p.steps_per_epoch, p.train_steps) == (2, 48, 96)
    assert (p.val_images, p.val_passes, p.test_passes) == (100, 2, 2)
    (p,) = G.plan_runs("smoke", ["seed=0", "pool=max", "data=cifar100", "model=vgg16",
                                 "data.val_size=0", "trainer.limit_test_batches=3"])
    assert (p.val_passes, p.test_passes) == (0, 1)  # no best-val checkpoint to test
    assert p.test_images == 3 * 256


# ----------------------------------------------------------------------------- measured mode

def _write_overhead_csv(path, rows):
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["device", "model", "method", "batch", "image_size",
                                           "width", "precision", "step_ms", "error"])
        w.writeheader()
        for r in rows:
            w.writerow({"device": "cuda", "precision": "16-mixed", "error": "", **r})


def test_measured_hours_by_hand(tmp_path):
    csv_path = tmp_path / "overhead.csv"
    _write_overhead_csv(csv_path, [
        dict(model="vgg16", method="max", batch=128, image_size=32, width=8, step_ms=12.5),
        dict(model="vgg16", method="max", batch=128, image_size=64, width=8, step_ms=99.0),
        dict(model="vgg16", method="max", batch=32, image_size=32, width=8, step_ms=99.0),
    ])
    res = _one(["data=cifar100", "model=vgg16"], step_times=[csv_path])
    assert res.mode == "measured"
    (r,) = res.rows
    train, evaluation = vgg16_flops_by_hand(8, 32, 100)
    train_s = 200 * 351 * 0.0125
    eval_s = (200 * 5_000 + 2 * 10_000) * (0.0125 / 128) * evaluation / train
    assert r["train_h"] == pytest.approx(train_s / 3600, rel=1e-12)
    assert r["total_h"] == pytest.approx((train_s + eval_s) / 3600, rel=1e-12)
    assert r["step_ms"] == 12.5 and "measured" in r["source"]


def test_cli_measured_mode_and_ambiguous_rows(tmp_path, capsys):
    csv_path = tmp_path / "overhead.csv"
    row = dict(model="vgg16", method="max", batch=128, image_size=32, width=8, step_ms=12.5)
    _write_overhead_csv(csv_path, [row])
    (tmp_path / "overhead.md").write_text("# x\n\nDevice: cuda (NVIDIA H100 80GB HBM3)\n")
    out = tmp_path / "gh"
    argv = ["gpu-hours", "paper_grid", *SMALL, "seed=0", "pool=max", "data=cifar100",
            "model=vgg16", "--step-times", str(csv_path), "--out", str(out)]
    assert cli.main(argv) == 0
    assert capsys.readouterr().out.startswith("MEASURED step times")
    md = (out / "gpu_hours.md").read_text()
    assert md.splitlines()[0] == "# GPU-hours of paper_grid from measured step times"
    assert "ESTIMATE" not in md and "NVIDIA H100 80GB HBM3" in md
    _write_overhead_csv(csv_path, [row, {**row, "device": "cpu", "precision": "32"}])
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    assert "more than one step time" in capsys.readouterr().err


def test_missing_step_time_names_the_run_and_the_command(tmp_path):
    csv_path = tmp_path / "overhead.csv"
    _write_overhead_csv(csv_path, [
        dict(model="vgg16", method="max", batch=128, image_size=32, width=8, step_ms=12.5)])
    with pytest.raises(ValueError) as exc:
        _one(["data=cifar100"], step_times=[csv_path])
    msg = str(exc.value)
    assert "resnet18/max" in msg and "vgg16/max" not in msg
    assert ("poolbench-bench overhead --device cuda --batch 128 --image-size 32 --width 8 "
            "--models resnet18 --methods max") in msg
    # a failed measurement (no step time) is missing too
    _write_overhead_csv(csv_path, [
        dict(model="vgg16", method="max", batch=128, image_size=32, width=8, step_ms="",
             error="RuntimeError: boom")])
    with pytest.raises(ValueError, match="vgg16/max"):
        _one(["data=cifar100", "model=vgg16"], step_times=[csv_path])


def test_measured_mode_refuses_model_options_overhead_does_not_measure(tmp_path):
    csv_path = tmp_path / "overhead.csv"
    _write_overhead_csv(csv_path, [
        dict(model="resnet18", method="max", batch=128, image_size=32, width=8, step_ms=5)])
    with pytest.raises(ValueError, match="stem"):
        _one(["data=cifar100", "model=resnet18", "model.stem=imagenet"],
             step_times=[csv_path])


# ----------------------------------------------------------------------------- command line

def test_cli_writes_csv_and_markdown_that_say_estimate(tmp_path, capsys):
    out = tmp_path / "gh"
    argv = ["gpu-hours", "paper_grid", *SMALL, "seed=0", "data=cifar100", "pool=max,tmaxavg",
            "--op-us", "6", "--out", str(out)]
    assert cli.main(argv) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("ESTIMATE (no GPU measurement)")
    progress = [ln for ln in captured.err.splitlines() if ln.startswith("FLOPs ")]
    assert len(progress) == 4  # one progress line per distinct model
    md = (out / "gpu_hours.md").read_text().splitlines()
    assert "ESTIMATE (no GPU measurement)" in md[0]
    assert md[2] == "Command: `poolbench-bench " + " ".join(argv[:-1]) + f" {out}`  "
    head = "\n".join(md[:24])
    for needle in ("FlopCounterMode", "TorchDispatchMode", "989 TFLOPS", "MFU 0.25", "0.40",
                   "0.10", "6 us", "4-16 us", "max(GPU time, host time)", "not counted",
                   "foreach=True", "16-mixed", "host-bound in 4 of 4 runs"):
        assert needle in head, needle
    text = "\n".join(md)
    for needle in ("kernel ops/step", "GPU ms/step", "host ms/step", "| bound |"):
        assert needle in text, needle
    assert "| cifar100 | vgg16 | 2 |" in text
    methods = text.split("## Methods whose hours per run differ by 1% or more")[1]
    assert "| cifar100 | vgg16 | tmaxavg |" in methods  # ops-heavy: slower, same FLOPs
    with open(out / "gpu_hours.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 4
    assert {r["pool"] for r in rows} == {"max", "tmaxavg"}
    total = sum(float(r["total_h"]) for r in rows)
    assert f"{total:.3f}" in captured.out.splitlines()[0]
    for r in rows:
        assert r["source"] == "estimate" and float(r["mfu"]) == 0.25 and float(r["op_us"]) == 6
        assert float(r["host_ms"]) == pytest.approx(int(r["train_kernel_ops"]) * 6e-3)
        assert r["bound"] == "host" and r["precision"] == "16-mixed"
        assert float(r["step_ms"]) == max(float(r["host_ms"]), float(r["gpu_ms"]))


@pytest.mark.parametrize("args,needle", [
    (["nope"], "unknown experiment 'nope'; choose one of"),
    (["paper_grid", "--mfu", "0"], "--mfu must be in (0, 1]"),
    (["paper_grid", "--mfu", "1.5"], "got 1.5"),
    (["paper_grid", "--peak-tflops", "-3"], "--peak-tflops must be > 0, got -3"),
    (["paper_grid", "--op-us", "-1"], "--op-us must be >= 0"),
    (["paper_grid", "--step-times", "/nonexistent/overhead.csv"], "no such file"),
    (["paper_grid", "pool=fractional_max", "data=cifar100", "model=vgg16", "seed=0"],
     "vgg16 (pool_positions=all, width=64), pool=fractional_max (eval_sample=0.5), 32x32, "
     "100 classes, 16-mixed: its runs would fail at once: features.pool1, which gets 32x32 "
     "maps from 32x32 images: fractional_max cannot pool"),
])
def test_cli_errors(args, needle, capsys, tmp_path):
    with pytest.raises(SystemExit) as exc:
        cli.main(["gpu-hours", *args, "--out", str(tmp_path)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert needle in err, err
    if args == ["nope"]:
        assert "paper_grid" in err and "ablation_kt" in err
    assert not (tmp_path / "gpu_hours.csv").exists()


# ----------------------------------------------------------------------------- layering

def test_each_module_imports_only_the_steps_before_it():
    """plan <- count <- estimate <- report <- cli: the time model never reads the report."""
    import ast
    import importlib
    from pathlib import Path

    order = ["plan", "count", "extras", "estimate", "report", "cli"]
    for i, name in enumerate(order):
        path = Path(importlib.import_module(f"poolbench.bench.gpu_hours.{name}").__file__)
        siblings = {node.module for node in ast.walk(ast.parse(path.read_text()))
                    if isinstance(node, ast.ImportFrom) and node.level == 1}
        assert siblings <= set(order[:i]), f"gpu_hours.{name} imports {siblings}"

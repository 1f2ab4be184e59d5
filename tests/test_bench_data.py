"""poolbench-bench data: throughput of the fast data path and of torchvision's DataLoader."""

from __future__ import annotations

import pytest
import torch

from poolbench.bench import cli
from poolbench.bench import data as D

TINY = ["--images", "128", "--batch-size", "32", "--batches", "2", "--warmup", "1",
        "--workers", "0", "--repeats", "1"]


def test_synthetic_images_are_seeded_uint8_images_with_labels():
    images, labels = D.synthetic_images(16, 32, num_classes=10, seed=3)
    assert images.shape == (16, 3, 32, 32) and images.dtype == torch.uint8
    assert labels.shape == (16,) and labels.dtype == torch.int64
    assert 0 <= int(labels.min()) and int(labels.max()) < 10
    again, _ = D.synthetic_images(16, 32, num_classes=10, seed=3)
    other, _ = D.synthetic_images(16, 32, num_classes=10, seed=4)
    assert torch.equal(images, again) and not torch.equal(images, other)


def test_both_paths_deliver_normalised_channels_last_batches():
    rows = D.measure_throughput(num_images=64, batch_size=16, num_batches=2, warmup=1,
                                workers=(0,), threads=(1,), repeats=1)
    assert [r["kind"] for r in rows] == ["fast", "torchvision"]
    for r in rows:
        assert r["batches"] == 2 and r["seconds"] > 0
        assert r["images_per_s"] == pytest.approx(2 * 16 / r["seconds"])


def test_subcommand_prints_the_table(capsys):
    assert cli.main(["data", *TINY, "--threads", "1"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == ("data pipeline throughput: 32x32 uint8 -> float32 normalised "
                      "channels_last, batch 32, device cpu")
    assert "best of 1 x 2 batches per path" in out[1]
    assert out[2].split() == ["path", "batches", "seconds", "images/s", "vs", "best",
                              "torchvision"]
    assert out[4].startswith("fast, on-device batched aug (1 thr)")
    assert out[5].startswith("torchvision DataLoader, num_workers=0") and out[5].endswith("1.0x")
    assert out[6].startswith("fast path (best, 1 thr) / best torchvision path: ")


@pytest.mark.parametrize("args,needle", [
    (["--images", "16"], "need at least one batch: 16 images < batch 32"),
    (["--batches", "0"], "--batches must be >= 1, got 0"),
    (["--threads", "1", "0"], "--threads must be >= 1, got [1, 0]"),
    (["--workers", "-1"], "--warmup and --workers must be >= 0"),
])
def test_bad_arguments_exit_with_the_value(args, needle):
    with pytest.raises(SystemExit) as exc:
        cli.main(["data", *TINY, *args])
    assert needle in str(exc.value.code)

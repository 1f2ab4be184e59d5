"""ImageNet-scale substitution on timm models (issue 14), on CPU at 64 px: model=timm, the
JPEG folder data, its fixtures, poolbench-eval, the substitution table."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.filterwarnings("ignore")

ROOT = Path(__file__).resolve().parents[1]
TINY_DENSENET = {"growth_rate": 4, "block_config": (1, 1, 1, 1), "bn_size": 2}


@pytest.fixture(scope="module")
def imagenet_root(tmp_path_factory):
    from poolbench.data.imagenet_fixtures import write_imagenet

    root = tmp_path_factory.mktemp("data")
    write_imagenet(root, per_class_train=6, per_class_val=2, num_classes=3)
    return root


# ---- models ----------------------------------------------------------------------------

def test_timm_resnet_replaces_only_the_stem_pool():
    from poolbench.models import build_model, model_summary

    model = build_model("timm-test_resnet", 3, pool="softpool", input_size=64)
    # the avg_down shortcut pools (layerN.0.downsample.0) and the global pool stay
    assert model_summary(model)["pooling_layers"] == {"maxpool": "softpool"}
    assert isinstance(model.layer2[0].downsample[0], torch.nn.AvgPool2d)
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 3)


def test_timm_densenet_replaces_stem_and_transitions():
    from poolbench.models import build_model, model_summary

    layers = {"features.pool0", "features.transition1.pool", "features.transition2.pool",
              "features.transition3.pool"}
    soft = build_model("timm-densenet121", 3, pool="softpool", input_size=64,
                       timm_kwargs=TINY_DENSENET)
    assert model_summary(soft)["pooling_layers"] == dict.fromkeys(sorted(layers), "softpool")
    # pool=max is the original network: max stem, average transitions, same outputs
    orig = build_model("timm-densenet121", 3, pool="max", input_size=64,
                       timm_kwargs=TINY_DENSENET)
    kinds = model_summary(orig)["pooling_layers"]
    assert kinds == {"features.pool0": "max", **dict.fromkeys(sorted(layers - {"features.pool0"}), "avg")}
    import timm

    ref = timm.create_model("densenet121", num_classes=3, **TINY_DENSENET).eval()
    ref.load_state_dict(orig.state_dict())
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(orig.eval()(x), ref(x))


def test_bad_arch_names_it_and_close_timm_names():
    from poolbench.models import build_model

    with pytest.raises(ValueError, match=r"model.arch='resnet5O' is not a timm model.*resnet50"):
        build_model("timm-resnet5O", 3)
    with pytest.raises(ValueError, match="'vit_tiny_patch16_224' has no spatial pooling"):
        build_model("timm-vit_tiny_patch16_224", 3, input_size=64)


def test_run_dir_names_the_architecture_without_changing_other_hashes():
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig

    from poolbench.config import CONF_DIR, register_resolvers

    register_resolvers()
    with initialize_config_dir(str(CONF_DIR), version_base=None):
        def run_dir(*overrides):
            cfg = compose("train", overrides=list(overrides), return_hydra_config=True)
            HydraConfig.instance().set_config(cfg)
            return cfg.run_dir.split("/outputs/")[-1]

        assert run_dir("model=timm", "model.arch=resnet50", "data=imagenet", "pool=softpool") \
            == "default/imagenet/timm-resnet50/softpool/seed=0"
        # the same directory main (7c02d78, before model=timm) gives
        assert run_dir("pool=max", "optim.lr=0.05") == "default/cifar100/vgg16/max/seed=0-1661c282"


def test_local_checkpoint_that_does_not_fit_is_a_clear_error(tmp_path):
    import timm

    from poolbench.models import build_model

    torch.save(timm.create_model("test_resnet", num_classes=4).state_dict(), tmp_path / "w.pth")
    with pytest.raises(ValueError, match=r"model.pretrained='.*w.pth' does not fit this model"):
        build_model("timm-test_resnet", 3, pool="softpool", input_size=64,
                    pretrained=str(tmp_path / "w.pth"))
    with pytest.raises(FileNotFoundError, match="no such checkpoint file"):
        build_model("timm-test_resnet", 3, input_size=64, pretrained=str(tmp_path / "x.pth"))


def test_eval_refuses_untrained_weights_and_a_mismatched_published_head():
    from omegaconf import OmegaConf

    from poolbench.eval import check_head, check_pretrained
    from poolbench.models import build_model

    with pytest.raises(ValueError, match="model.pretrained=true .* or model.pretrained=PATH"):
        check_pretrained(OmegaConf.create({"model": {"name": "timm-x", "pretrained": False}}))
    assert check_pretrained(OmegaConf.create({"model": {"name": "t", "pretrained": True}})) == "hub"
    model = build_model("timm-test_resnet", 3, input_size=64)  # pretrained_cfg: 1000 classes
    with pytest.raises(ValueError, match="1000-class head, but the data has 3 classes"):
        check_head(model, 3, "hub")
    check_head(model, 3, "/a/local/checkpoint.pth")  # a local checkpoint's head is checked on load


def test_softpool_imagenet_grid_is_22_runs_with_torchvisions_recipe():
    from poolbench.grid import composed_configs, grid_runs

    runs = grid_runs("softpool_imagenet", ["data.batch_size=1024"])
    assert len(runs) == 22
    cfgs = [cfg for _, cfg in composed_configs(runs)]
    assert {c.model.name for c in cfgs} == {f"timm-{a}" for a in (
        "resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "densenet121",
        "densenet161", "densenet169", "resnext50_32x4d", "resnext101_32x8d", "wide_resnet50_2")}
    assert {c.pool.name for c in cfgs} == {"max", "softpool"}
    c = cfgs[0]
    assert (c.trainer.max_epochs, c.optim.momentum, c.optim.weight_decay) == (90, 0.9, 1e-4)
    assert c.optim.lr == pytest.approx(0.4) and c.trainer.devices == 8  # 0.1 x 1024 / 256
    assert len({c.run_dir for c in cfgs}) == 22


# ---- data ------------------------------------------------------------------------------

def test_fixtures_are_real_jpegs_read_in_the_imagenet_layout(imagenet_root):
    from poolbench.data.imagenet import JpegFolderDataset, scan_imagenet
    from poolbench.data.imagenet_fixtures import WNIDS

    files = scan_imagenet(imagenet_root)
    assert files["classes"] == sorted(WNIDS[:3])
    assert len(files["train_files"]) == 18 and len(files["test_files"]) == 6
    assert Path(files["train_files"][0]).read_bytes()[:3] == b"\xff\xd8\xff"  # JPEG magic
    train = JpegFolderDataset(files["train_files"], files["train_labels"], 64, train=True)
    test = JpegFolderDataset(files["test_files"], files["test_labels"], 64, train=False)
    for ds in (train, test):
        x, y = ds[0]
        assert x.dtype == torch.uint8 and x.shape == (3, 64, 64) and y == 0


def test_fixtures_never_overwrite_a_real_imagenet(tmp_path):
    from poolbench.data.fixtures import main as fixtures_main

    (tmp_path / "imagenet" / "train").mkdir(parents=True)  # no fixture mark: maybe real data
    assert fixtures_main([str(tmp_path), "--only", "imagenet"]) == 1
    assert (tmp_path / "imagenet" / "train").is_dir()
    assert fixtures_main([str(tmp_path / "new"), "--only", "imagenet"]) == 0
    assert fixtures_main([str(tmp_path / "new"), "--only", "imagenet"]) == 0  # its own: rewritten
    assert len(list((tmp_path / "new" / "imagenet" / "train").glob("*/*.JPEG"))) == 4 * 8


def test_corrupt_jpeg_is_an_error_naming_the_file(tmp_path):
    from poolbench.data.download import DatasetFormatError
    from poolbench.data.imagenet import JpegFolderDataset

    bad = tmp_path / "n01440764_1.JPEG"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    ds = JpegFolderDataset([str(bad)], torch.tensor([0]), 64, train=False)
    with pytest.raises(DatasetFormatError, match=f"cannot decode image file {bad}"):
        ds[0]


def test_flat_official_val_is_an_error_then_sorted(tmp_path, imagenet_root):
    import shutil

    from poolbench.data.download import DatasetFormatError
    from poolbench.data.imagenet import main as imagenet_main, scan_imagenet

    root = tmp_path / "r"
    shutil.copytree(imagenet_root / "imagenet", root / "imagenet")
    val = root / "imagenet" / "val"
    lines = []
    for p in sorted(val.glob("*/*.JPEG")):
        p.rename(val / p.name)
        lines.append(f"{p.name} {p.parent.name}\n")
        p.parent.rmdir() if not any(p.parent.iterdir()) else None
    with pytest.raises(DatasetFormatError, match="sort-val"):
        scan_imagenet(root)
    (tmp_path / "labels.txt").write_text("".join(lines))
    assert imagenet_main(["sort-val", str(val), str(tmp_path / "labels.txt")]) == 0
    assert len(scan_imagenet(root)["test_files"]) == 6


@pytest.mark.slow  # ~50 s on a busy 2-core CPU (scikit-image's photographs)
def test_bench_jpeg_reports_images_per_core_and_cores_per_gpu(capsys):
    from poolbench.bench.cli import main as bench_main

    assert bench_main(["jpeg", "--images", "8", "--workers", "0", "--image-size", "32",
                       "--gpu-rate", "1000"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in out.splitlines()
            if line.startswith(("decode+", "DataLoader"))}
    assert set(rows) == {"decode+train", "decode+eval", "DataLoader"}
    per_core, cores = float(rows["decode+train"][-2]), float(rows["decode+train"][-1])
    assert per_core > 0 and cores == pytest.approx(1000 / per_core, rel=0.05)


# ---- end to end: train, eval, table (slow) ------------------------------------------------

TINY = ["data=imagenet", "model=timm", "data.image_size=64", "data.val_size=3",
        "data.batch_size=6", "data.eval_batch_size=6", "data.num_workers=0",
        "trainer.max_epochs=2", "logger.wandb.enabled=false", "callbacks.progress=plain",
        "threads=1"]


def _run(module, root, outputs, *overrides):
    cmd = [sys.executable, "-m", module, f"data.root={root}", f"paths.outputs={outputs}",
           *TINY, *overrides]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=900,
                          env={**os.environ})
    assert proc.returncode == 0, f"{module} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-4000:]}"
    return proc


def _results(outputs, model, pool):
    found = {}
    for p in (Path(outputs) / "default" / "imagenet" / model / pool).glob("seed=*/results.json"):
        r = json.loads(p.read_text())
        found["eval" if r.get("evaluation_only") else "train"] = (p.parent, r)
    return found


@pytest.mark.slow
def test_train_eval_and_substitution_table(imagenet_root, tmp_path):
    from poolbench.results.report import read_runs
    from poolbench.results.substitution import substitution_table

    out = tmp_path / "out"
    for pool in ("max", "softpool"):
        _run("poolbench.train", imagenet_root, out, "model.arch=test_resnet", f"pool={pool}")
    _run("poolbench.train", imagenet_root, out, "model.arch=densenet121", "pool=softpool",
         "+model.timm_kwargs.growth_rate=4", "+model.timm_kwargs.block_config=[1,1,1,1]",
         "+model.timm_kwargs.bn_size=2", "trainer.max_epochs=1")
    dense = _results(out, "timm-densenet121", "softpool")["train"][1]
    assert dense["status"] == "done" and len(dense["params"]["pooling_layers"]) == 4
    runs = {p: _results(out, "timm-test_resnet", p)["train"] for p in ("max", "softpool")}
    for pool, (run_dir, r) in runs.items():
        assert r["status"] == "done" and r["epochs_run"] == 2
        assert r["params"]["pooling_layers"] == {"maxpool": pool}
    # "pre-trained" weights: the max run's checkpoint, evaluated as is and with softpool
    ckpt = runs["max"][0] / "last.ckpt"
    state = {k[len("model."):]: v for k, v in
             torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"].items()}
    torch.save(state, tmp_path / "weights.pth")  # a plain state dict, as timm publishes
    for pool in ("max", "softpool"):
        _run("poolbench.eval", imagenet_root, out, "model.arch=test_resnet", f"pool={pool}",
             f"model.pretrained={tmp_path / 'weights.pth'}")
    ev = {p: _results(out, "timm-test_resnet", p)["eval"][1] for p in ("max", "softpool")}
    assert all(r["status"] == "done" and r["evaluation_only"] and r["epochs_run"] == 0
               for r in ev.values())
    # the original pooling with the max run's final weights: its final test accuracy again
    assert ev["max"]["test"]["final"] == runs["max"][1]["test"]["final"]
    table = substitution_table(read_runs(outputs=out, log=None).runs)
    row = next(r for r in table.rows if r[0] == "test_resnet" and r[1] == "softpool")
    d = table.data.set_index(["model", "method", "part"])
    pre = d.loc[("timm-test_resnet", "softpool", "pre-trained")]
    assert pre["base_top1"] == pytest.approx(100 * ev["max"]["test"]["final"]["top1"])
    assert pre["top1"] == pytest.approx(100 * ev["softpool"]["test"]["final"]["top1"])
    scratch = d.loc[("timm-test_resnet", "softpool", "from scratch")]
    assert scratch["top1"] == pytest.approx(100 * runs["softpool"][1]["test"]["final"]["top1"])
    assert row[3] != "—"  # GFLOPs counted

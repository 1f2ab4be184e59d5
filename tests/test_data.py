"""poolbench.data: real-format parsers on fixtures, cache, errors, archive safety, split,
on-device augmentation, the fast loader, the torchvision path, and Lightning integration."""

from __future__ import annotations

import hashlib
import io
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from poolbench.data import (
    DATASETS, ChecksumError, DatasetNotFoundError, DeviceAugment, EpochSampler, FastLoader,
    UnsafeArchiveError, channel_stats, load_dataset, random_crop_flip, safe_extract_zip,
    split_train_val, torchvision_loader, verify_md5,
)
from poolbench.data import cifar, tinyimagenet
from poolbench.data.fixtures import main as fixtures_main
from poolbench.data.fixtures import write_cifar100, write_tinyimagenet

CIFAR = DATASETS["cifar100"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These tensors are tiny: one intra-op thread is as fast, and does not collapse when
    other processes share the CPUs (OpenMP threads spin-waiting for a busy core)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    # 600 CIFAR-100 training images (6 a class) rather than the smoke-sized default: enough here
    written = {"cifar100": write_cifar100(root, per_class_train=6),
               "tinyimagenet": write_tinyimagenet(root)}
    return root, written


@pytest.fixture(scope="module")
def loaded(data_root):
    root, _ = data_root
    return {name: load_dataset(name, root) for name in DATASETS}


# ---- parsers on the fixtures ----------------------------------------------------------
@pytest.mark.parametrize("name,n_train,n_test", [("cifar100", 600, 200), ("tinyimagenet", 600, 200)])
def test_parsed_shapes_dtypes_labels(loaded, name, n_train, n_test):
    d, spec = loaded[name], DATASETS[name]
    s = spec.image_size
    assert d["train_images"].shape == (n_train, 3, s, s) and d["train_images"].dtype == torch.uint8
    assert d["test_images"].shape == (n_test, 3, s, s) and d["test_images"].dtype == torch.uint8
    for split in ("train", "test"):
        y = d[f"{split}_labels"]
        assert y.dtype == torch.int64 and 0 <= y.min() and y.max() < spec.num_classes
        assert torch.bincount(y, minlength=spec.num_classes).min() >= 1  # every class present
    assert len(d["classes"]) == spec.num_classes == len(set(d["classes"]))


def test_cifar_files_have_official_keys_and_values_round_trip(data_root, loaded):
    root, written = data_root
    base = root / "cifar-100-python"
    with open(base / "train", "rb") as f:
        raw = pickle.load(f, encoding="latin1")
    assert set(raw) == {"data", "fine_labels", "coarse_labels", "filenames", "batch_label"}
    assert raw["data"].dtype == np.uint8 and raw["data"].shape == (600, 3072)
    assert isinstance(raw["fine_labels"], list) and 0 <= min(raw["coarse_labels"]) <= max(raw["coarse_labels"]) < 20
    with open(base / "meta", "rb") as f:
        meta = pickle.load(f, encoding="latin1")
    assert len(meta["fine_label_names"]) == 100 and len(meta["coarse_label_names"]) == 20
    # row layout: 1024 R values, then G, then B, each plane row-major
    w = written["cifar100"]
    assert np.array_equal(raw["data"][5, :1024], w["train_images"][5, 0].ravel())
    assert np.array_equal(raw["data"][5, 2048:], w["train_images"][5, 2].ravel())
    d = loaded["cifar100"]
    for split in ("train", "test"):
        assert torch.equal(d[f"{split}_images"], torch.from_numpy(w[f"{split}_images"]))
        assert torch.equal(d[f"{split}_labels"], torch.from_numpy(w[f"{split}_labels"]))
    assert d["classes"] == w["classes"] and d["classes"][:3] == ["apple", "aquarium_fish", "baby"]


def test_tinyimagenet_round_trip(data_root, loaded):
    from PIL import Image

    root, written = data_root
    w, d = written["tinyimagenet"], loaded["tinyimagenet"]
    base = root / "tiny-imagenet-200"
    assert d["classes"] == (base / "wnids.txt").read_text().split()
    assert torch.equal(d["train_labels"], torch.from_numpy(w["train_labels"]))
    assert torch.equal(d["test_labels"], torch.from_numpy(w["test_labels"]))  # from val_annotations.txt
    # exactly what the JPEG decodes to, and close to what was encoded
    path = base / "val" / "images" / "val_7.JPEG"
    decoded = torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1)
    assert torch.equal(d["test_images"][7], decoded)
    diff = (d["train_images"].float() - torch.from_numpy(w["train_images"]).float()).abs()
    assert diff[1:].mean() < 2 and diff[1:].float().quantile(0.99) <= 8  # JPEG 98, 4:4:4
    # the grayscale JPEG becomes three equal channels
    (gray,) = w["grayscale"]
    i = d["train_labels"].tolist().index(0)
    assert gray.name == "n99000000_0.JPEG" and Image.open(gray).mode == "L"
    assert torch.equal(d["train_images"][i, 0], d["train_images"][i, 1])
    lines = (base / "val" / "val_annotations.txt").read_text().splitlines()
    assert len(lines) == 200 and len(lines[0].split("\t")) == 6


def test_tinyimagenet_cache_written_once_reused_and_rebuilt(tmp_path, monkeypatch):
    write_tinyimagenet(tmp_path, per_class_train=1, per_class_val=1)
    cache = tmp_path / "tiny-imagenet-200" / tinyimagenet.CACHE_NAME
    first = load_dataset("tinyimagenet", tmp_path)
    assert cache.is_file()
    stamp = cache.stat().st_mtime_ns
    calls = []
    real_decode = tinyimagenet.decode_images
    monkeypatch.setattr(tinyimagenet, "decode_images",
                        lambda *a, **k: calls.append(1) or real_decode(*a, **k))
    again = load_dataset("tinyimagenet", tmp_path)
    assert calls == [] and cache.stat().st_mtime_ns == stamp
    assert torch.equal(first["train_images"], again["train_images"])
    # a corrupt cache is rebuilt (and atomically replaced)
    cache.write_bytes(b"not a zip")
    rebuilt = load_dataset("tinyimagenet", tmp_path)
    assert calls and torch.equal(rebuilt["test_images"], first["test_images"])
    assert np.load(cache)["train_images"].shape == (200, 3, 64, 64)
    # a stale cache (different files) is rebuilt too
    calls.clear()
    (tmp_path / "tiny-imagenet-200" / "train" / "n99000005" / "images" / "n99000005_0.JPEG").unlink()
    assert load_dataset("tinyimagenet", tmp_path)["train_images"].shape[0] == 199 and calls
    assert not list(cache.parent.glob(".*.tmp"))


# ---- missing data, downloads, archives ---------------------------------------------------
def test_missing_cifar_error_says_where_and_how(tmp_path):
    with pytest.raises(DatasetNotFoundError) as e:
        load_dataset("cifar100", tmp_path)
    msg = str(e.value)
    assert str(tmp_path.resolve() / "cifar-100-python") in msg
    assert "train, test, meta" in msg and "data.download=true" in msg and cifar.URL in msg


def test_missing_tinyimagenet_error_says_where_and_how(tmp_path):
    with pytest.raises(DatasetNotFoundError) as e:
        load_dataset("tinyimagenet", tmp_path)
    msg = str(e.value)
    assert str(tmp_path.resolve() / "tiny-imagenet-200") in msg and "wnids.txt" in msg
    assert "data.download=true" in msg and str(tmp_path.resolve() / "tiny-imagenet-200.zip") in msg


def test_failed_download_becomes_a_clear_error(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(cifar, "download_cifar100", offline)
    monkeypatch.setattr(tinyimagenet, "download_file", offline)
    for name in DATASETS:
        with pytest.raises(DatasetNotFoundError, match="Downloading it failed.*unreachable.*data.download"):
            load_dataset(name, tmp_path, download=True)


def _zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


@pytest.mark.parametrize("evil", ["../evil.txt", "tiny-imagenet-200/../../evil.txt", "/tmp/evil.txt"])
def test_path_traversal_zip_is_rejected(tmp_path, evil):
    archive = tmp_path / "bad.zip"
    archive.write_bytes(_zip_bytes({"tiny-imagenet-200/wnids.txt": b"n1\n", evil: b"gotcha"}))
    dest = tmp_path / "out"
    with pytest.raises(UnsafeArchiveError, match="outside"):
        safe_extract_zip(archive, dest)
    assert not (tmp_path / "evil.txt").exists() and not any(dest.rglob("*.txt"))


def test_safe_zip_extracts(tmp_path):
    archive = tmp_path / "ok.zip"
    archive.write_bytes(_zip_bytes({"a/b.txt": b"x", "a/c/d.txt": b"y"}))
    safe_extract_zip(archive, tmp_path / "out")
    assert (tmp_path / "out" / "a" / "c" / "d.txt").read_bytes() == b"y"


def test_checksum_mismatch_is_rejected(tmp_path, monkeypatch):
    archive = tmp_path / "tiny-imagenet-200.zip"
    archive.write_bytes(_zip_bytes({"tiny-imagenet-200/wnids.txt": b"n1\n"}))
    verify_md5(archive, hashlib.md5(archive.read_bytes()).hexdigest())  # the right one passes
    with pytest.raises(ChecksumError, match="expected 0123"):
        verify_md5(archive, "0123456789abcdef0123456789abcdef")
    # a zip placed by the user with the wrong checksum: refused, not deleted, not extracted
    with pytest.raises(ChecksumError, match=tinyimagenet.ARCHIVE_MD5):
        load_dataset("tinyimagenet", tmp_path)
    assert archive.exists() and not (tmp_path / "tiny-imagenet-200").exists()
    # a download with the wrong checksum: refused and the partial file removed
    archive.unlink()

    def fake_download(url, directory, filename):
        path = Path(directory) / filename
        path.write_bytes(b"truncated")
        return path

    monkeypatch.setattr(tinyimagenet, "download_file", fake_download)
    with pytest.raises(DatasetNotFoundError, match="checksum mismatch"):
        load_dataset("tinyimagenet", tmp_path, download=True)
    assert list(tmp_path.iterdir()) == []


def test_tinyimagenet_zip_is_verified_extracted_and_loaded(tmp_path, monkeypatch):
    src = tmp_path / "src"
    write_tinyimagenet(src, per_class_train=1, per_class_val=1, num_test=1)
    archive = tmp_path / "made.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted((src / "tiny-imagenet-200").rglob("*")):
            zf.write(path, path.relative_to(src).as_posix())
    monkeypatch.setattr(tinyimagenet, "ARCHIVE_MD5", hashlib.md5(archive.read_bytes()).hexdigest())

    def fake_download(url, directory, filename):
        assert url == tinyimagenet.URL
        target = Path(directory) / filename
        target.write_bytes(archive.read_bytes())
        return target

    monkeypatch.setattr(tinyimagenet, "download_file", fake_download)
    root = tmp_path / "root"
    d = load_dataset("tinyimagenet", root, download=True)
    assert d["train_images"].shape == (200, 3, 64, 64) and len(d["classes"]) == 200
    assert (root / "tiny-imagenet-200.zip").is_file()
    assert sorted(p.name for p in root.iterdir()) == ["tiny-imagenet-200", "tiny-imagenet-200.zip"]


# ---- statistics and the validation split ---------------------------------------------
def test_specs_and_channel_stats():
    assert CIFAR.mean == (0.5071, 0.4865, 0.4409) and CIFAR.std == (0.2673, 0.2564, 0.2762)
    assert DATASETS["tinyimagenet"].mean == (0.4802, 0.4481, 0.3975)
    assert (CIFAR.val_size, DATASETS["tinyimagenet"].val_size) == (5000, 10000)
    x = torch.randint(0, 256, (37, 3, 5, 6), dtype=torch.uint8)
    mean, std = channel_stats(x, chunk_size=8)
    f = x.double() / 255
    assert np.allclose(mean, f.mean((0, 2, 3)).numpy()) and np.allclose(std, f.std((0, 2, 3), unbiased=False).numpy())


def test_split_is_seeded_disjoint_stratified():
    labels = torch.arange(100).repeat_interleave(6)[torch.randperm(600)]
    tr, va = split_train_val(labels, 100, seed=1)
    assert len(va) == 100 and len(tr) == 500
    assert torch.equal(torch.sort(torch.cat([tr, va])).values, torch.arange(600))
    assert torch.equal(torch.bincount(labels[va], minlength=100), torch.ones(100, dtype=torch.int64))
    tr2, va2 = split_train_val(labels, 100, seed=1)
    assert torch.equal(va, va2) and torch.equal(tr, tr2)
    torch.manual_seed(123)  # independent of the global RNG
    assert torch.equal(split_train_val(labels, 100, seed=1)[1], va)
    assert not torch.equal(split_train_val(labels, 100, seed=2)[1], va)
    assert len(split_train_val(labels, 37, seed=0)[1]) == 37
    tr0, va0 = split_train_val(labels, 0)
    assert len(va0) == 0 and torch.equal(tr0, torch.arange(600))


@pytest.mark.parametrize("bad", [-1, 600, 601, 2.5, True, "10"])
def test_split_rejects_bad_val_size(bad):
    with pytest.raises(ValueError, match="val_size"):
        split_train_val(torch.zeros(600, dtype=torch.int64), bad)


# ---- on-device augmentation -------------------------------------------------------------
def _images(n=16, size=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(1, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)  # no zeros


def _find_crop(out, image, pad):
    """(dy, dx, flipped) such that out is that crop of the zero-padded image, else None."""
    c, h, w = image.shape
    padded = torch.zeros(c, h + 2 * pad, w + 2 * pad, dtype=image.dtype)
    padded[:, pad:pad + h, pad:pad + w] = image
    for dy in range(2 * pad + 1):
        for dx in range(2 * pad + 1):
            crop = padded[:, dy:dy + h, dx:dx + w]
            for flipped, cand in ((False, crop), (True, crop.flip(-1))):
                if torch.equal(out, cand):
                    return dy, dx, flipped
    return None


def test_crop_is_a_shifted_copy_with_zero_padding_and_flip_flips():
    x = _images(64)
    torch.manual_seed(0)
    out = random_crop_flip(x, padding=2, flip=True)
    assert out.shape == x.shape and out.dtype == torch.uint8
    found = [_find_crop(out[i], x[i], 2) for i in range(len(x))]
    assert all(f is not None for f in found)
    assert {f[2] for f in found} == {True, False}            # some flipped, some not
    assert len({f[:2] for f in found}) > 5                   # many different offsets
    assert any((f[0], f[1]) != (2, 2) for f in found)
    assert (out == 0).any()                                  # zero padding shows up
    # without flips nothing is mirrored; without padding nothing is shifted
    assert all(_find_crop(o, i, 2)[2] is False for o, i in zip(random_crop_flip(x, 2, flip=False), x))
    only_flip = random_crop_flip(x, 0, flip=True)
    assert all(torch.equal(o, i) or torch.equal(o, i.flip(-1)) for o, i in zip(only_flip, x))


def test_augment_output_format_normalisation_and_rng():
    mean, std = CIFAR.mean, CIFAR.std
    aug = DeviceAugment(mean, std, padding=4, flip=True)
    x = _images(32, 32)
    ev = aug.eval(x)
    ref = (x.double() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    assert ev.dtype == torch.float32 and ev.shape == x.shape
    assert ev.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(ev.double(), ref, atol=1e-5)
    torch.manual_seed(5)
    a = aug.train(x)
    b = aug.train(x)
    torch.manual_seed(5)
    c = aug.train(x)
    assert a.dtype == torch.float32 and a.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(a, c) and not torch.equal(a, b)
    # padded pixels are the normalised zero, -mean/std, in every channel
    zero = -torch.tensor(mean) / torch.tensor(std)
    is_pad = torch.isclose(a, zero.view(1, 3, 1, 1), atol=1e-5).all(1)
    assert is_pad.any() and not is_pad.all()
    assert torch.equal(x, _images(32, 32))  # input untouched


class _RecordOps(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func))
        return func(*args, **(kwargs or {}))


def test_augmentation_never_reads_values_back_to_the_host():
    """No .item()/bool(tensor)/nonzero (each would wait for the GPU) in a training transform."""
    aug = DeviceAugment(CIFAR.mean, CIFAR.std, padding=4, flip=True)
    x = _images(8, 32)
    aug.train(x)  # constants made on first use
    with _RecordOps() as rec:
        aug.train(x)
        aug.eval(x)
    syncing = [op for op in rec.ops if any(s in op for s in (
        "_local_scalar_dense", "nonzero", "masked_select", "unique", "aten.item", "is_nonzero"))]
    assert rec.ops and not syncing, syncing
    assert len(rec.ops) < 40  # a handful of batched ops, not one per image


# ---- loaders -----------------------------------------------------------------------------
def _toy(n=103):
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 3, 2, 2).contiguous()
    return images, torch.arange(n)


def test_fast_loader_covers_every_index_once_per_epoch():
    images, labels = _toy()
    full = FastLoader(images, labels, 10, shuffle=True, drop_last=False, seed=0)
    batches = list(full)
    assert len(full) == len(batches) == 11 and len(batches[-1][1]) == 3
    assert torch.equal(torch.sort(torch.cat([y for _, y in batches])).values, labels)
    assert all(torch.equal(x[:, 0, 0, 0].long(), y) for x, y in batches)  # images follow labels
    dropped = FastLoader(images, labels, 10, shuffle=True, drop_last=True, seed=0)
    ys = [y for _, y in dropped]
    assert len(dropped) == len(ys) == 10 and all(len(y) == 10 for y in ys)
    assert len(torch.unique(torch.cat(ys))) == 100
    ordered = torch.cat([y for _, y in FastLoader(images, labels, 7)])
    assert torch.equal(ordered, labels)  # evaluation loaders keep the order


def test_fast_loader_order_is_a_function_of_seed_and_epoch():
    images, labels = _toy()

    def order(loader):
        return torch.cat([y for _, y in loader])

    a = FastLoader(images, labels, 10, shuffle=True, seed=3)
    e0, e1, e2 = order(a), order(a), order(a)  # advances an epoch per pass by itself
    assert not torch.equal(e0, e1) and not torch.equal(e1, e2)
    b = FastLoader(images, labels, 10, shuffle=True, seed=3)
    torch.manual_seed(999)  # the global RNG plays no part
    b.set_epoch(2)
    assert torch.equal(order(b), e2)  # "resumed at epoch 2" gives epoch 2's order
    b.set_epoch(0)
    assert torch.equal(order(b), e0)
    c = FastLoader(images, labels, 10, shuffle=True, seed=4)
    assert not torch.equal(order(c), e0)
    it = iter(FastLoader(images, labels, 10, shuffle=True, seed=3))
    assert a.epoch == 3  # a generator made but not started changes nothing (Lightning calls iter early)
    del it


def test_fast_loader_resumes_mid_epoch_from_its_state():
    images, labels = _toy()
    a = FastLoader(images, labels, 10, shuffle=True, seed=1)
    a.set_epoch(4)
    it = iter(a)
    seen = [next(it)[1] for _ in range(3)]
    state = a.state_dict()
    rest = [y for _, y in it]
    b = FastLoader(images, labels, 10, shuffle=True, seed=1)
    b.load_state_dict(state)
    b.set_epoch(4)  # what Lightning does at the start of the resumed epoch
    resumed = [y for _, y in b]
    assert state["epoch"] == 4 and state["batches"] == 3 and len(seen) == 3
    assert len(resumed) == len(rest) and all(torch.equal(u, v) for u, v in zip(rest, resumed))
    assert len([y for _, y in b]) == len(b)  # the next epoch is whole again


def test_fast_loader_shards_across_ranks():
    """Training: N processes split every global batch one process takes (the partial last
    one dropped); evaluation: contiguous shards, every item exactly once, nothing padded."""
    images, labels = _toy(103)
    one = [y for _, y in FastLoader(images, labels, 8, shuffle=True, drop_last=True, seed=0)]
    ranks = [[y for _, y in FastLoader(images, labels, 4, shuffle=True, drop_last=True, seed=0,
                                       rank=r, world_size=2)] for r in range(2)]
    assert len(one) == len(ranks[0]) == len(ranks[1]) == 12
    for i, batch in enumerate(one):
        assert torch.equal(torch.cat([ranks[0][i], ranks[1][i]]), batch), i
    shards = [torch.cat([y for _, y in FastLoader(images, labels, 8, rank=r, world_size=2)])
              for r in range(2)]
    assert [len(s) for s in shards] == [52, 51]
    assert torch.equal(torch.cat(shards), labels)  # in dataset order, each image once
    # The state names the global batch: a 2-process run resumes on 1 process.
    two = FastLoader(images, labels, 4, shuffle=True, drop_last=True, seed=0, rank=1,
                     world_size=2)
    FastLoader(images, labels, 8, shuffle=True, drop_last=True, seed=0).load_state_dict(
        two.state_dict())
    with pytest.raises(ValueError, match="rank"):
        EpochSampler(10, rank=2, world_size=2)
    with pytest.raises(ValueError, match="multiple of world_size=2"):
        EpochSampler(10, world_size=2, global_batch=5)


def test_torchvision_path_matches_shapes_dtype_and_normalisation():
    images = _images(40, 32)
    labels = torch.arange(40)
    common = dict(mean=CIFAR.mean, std=CIFAR.std, padding=4, num_workers=0)
    ev_x, ev_y = next(iter(torchvision_loader(images, labels, 16, train=False, **common)))
    aug = DeviceAugment(CIFAR.mean, CIFAR.std, 4)
    assert torch.equal(ev_y, labels[:16])
    assert torch.allclose(ev_x, aug.eval(images[:16]), atol=1e-5)
    tr_x, tr_y = next(iter(torchvision_loader(images, labels, 16, train=True, drop_last=True, **common)))
    fast_x = aug.train(images[:16])
    assert tr_x.shape == fast_x.shape and tr_x.dtype == fast_x.dtype == torch.float32
    assert tr_y.dtype == torch.int64 and not torch.equal(tr_y, labels[:16])  # shuffled
    zero = (-torch.tensor(CIFAR.mean) / torch.tensor(CIFAR.std)).view(1, 3, 1, 1)
    for batch in (tr_x, fast_x):  # both pad with zeros before normalising
        assert torch.isclose(batch, zero, atol=1e-5).all(1).any()


# ---- the data module under Lightning --------------------------------------------------------
def _trainer(**kw):
    import lightning as L

    kw = {"accelerator": "cpu", "logger": False, "enable_checkpointing": False,
          "enable_progress_bar": False, "enable_model_summary": False, **kw}
    return L.Trainer(**kw)


def _module(num_classes, dtype=torch.float32):
    import lightning as L
    from torch import nn
    from torch.nn import functional as F

    class Tiny(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                     nn.Linear(4, num_classes))
            self.seen, self.evaluated = [], []

        def training_step(self, batch, i):
            x, y = batch
            assert x.dtype == dtype and x.is_contiguous(memory_format=torch.channels_last)
            self.seen.append((self.current_epoch, i, x.detach().clone(), y.clone()))
            return F.cross_entropy(self.net(x), y)

        def validation_step(self, batch, i):
            x, y = batch
            self.evaluated.append(x)
            self.log("val_loss", F.cross_entropy(self.net(x), y))

        def test_step(self, batch, i):
            x, y = batch
            self.evaluated.append(x)
            self.log("test_loss", F.cross_entropy(self.net(x), y))

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    return Tiny()


def _dm(root, **kw):
    from poolbench.data import PoolbenchDataModule

    return PoolbenchDataModule(**{"name": "cifar100", "root": root, "batch_size": 64,
                                  "val_size": 100, **kw})


@pytest.mark.filterwarnings("ignore")
def test_datamodule_trains_validates_and_tests_under_lightning(data_root):
    root, _ = data_root
    dm = _dm(root)
    assert (dm.num_classes, dm.image_size, dm.mean, dm.std) == (100, 32, CIFAR.mean, CIFAR.std)
    model = _module(dm.num_classes)
    trainer = _trainer(fast_dev_run=2)
    trainer.fit(model, datamodule=dm)
    assert len(model.seen) == 2 and "val_loss" in trainer.callback_metrics
    assert len(dm.train_images) == 500 and len(dm.val_images) == 100 and dm.classes[0] == "apple"
    # evaluation batches: converted and normalised only (exactly the eval transform)
    val = model.evaluated[0]
    assert torch.allclose(val, dm.eval_transform(dm.val_images[:64]), atol=1e-6)
    trainer.test(model, datamodule=dm, verbose=False)
    assert "test_loss" in trainer.callback_metrics
    # the standard path through Lightning too
    tv = _dm(root, loader="torchvision", num_workers=0)
    model = _module(100)
    _trainer(fast_dev_run=1).fit(model, datamodule=tv)
    assert model.seen[0][2].shape == (64, 3, 32, 32)
    # "-true" precisions get their input dtype (Lightning converted the batch while uint8)
    model = _module(100, dtype=torch.float64)
    _trainer(fast_dev_run=1, precision="64-true").fit(model, datamodule=_dm(root))
    assert model.seen[0][2].dtype == torch.float64


@pytest.mark.filterwarnings("ignore")
def test_val_size_zero_and_too_large(data_root):
    root, _ = data_root
    dm = _dm(root, val_size=0)
    model = _module(100)
    _trainer(max_epochs=1, limit_train_batches=2).fit(model, datamodule=dm)
    assert len(model.seen) == 2 and model.evaluated == [] and dm.val_dataloader() == []
    with pytest.raises(ValueError, match="val_size=5000 must be smaller.*600 images"):
        _dm(root, val_size=None).setup("fit")
    for bad in (-1, 1.5):
        with pytest.raises(ValueError, match="val_size"):
            _dm(root, val_size=bad)
    with pytest.raises(ValueError, match="unknown dataset 'cifar10'.*cifar100"):
        _dm(root, name="cifar10")
    with pytest.raises(ValueError, match="unknown loader"):
        _dm(root, loader="dali")


@pytest.mark.filterwarnings("ignore")
def test_epochs_differ_and_resume_mid_epoch_is_exact(data_root, tmp_path):
    """Interrupt at a mid-epoch checkpoint and resume: the same batches, bit for bit."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    root, _ = data_root

    def fit(ckpt_path=None, max_steps=-1, callbacks=()):
        model = _module(100)
        trainer = _trainer(max_epochs=2, max_steps=max_steps, callbacks=list(callbacks),
                           enable_checkpointing=bool(callbacks), limit_val_batches=0,
                           default_root_dir=tmp_path)
        trainer.fit(model, datamodule=_dm(root, val_size=0, batch_size=100, seed=7),
                    ckpt_path=ckpt_path)
        return model.seen

    full = fit()
    assert [s[:2] for s in full] == [(e, i) for e in range(2) for i in range(6)]
    e0, e1 = (torch.cat([s[3] for s in full if s[0] == e]) for e in (0, 1))
    assert not torch.equal(e0, e1) and torch.equal(e0.sort().values, e1.sort().values)
    by_step = ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=4, save_top_k=-1,
                              filename="{step}")
    by_epoch = ModelCheckpoint(dirpath=tmp_path, every_n_epochs=1, save_top_k=-1,
                               filename="{epoch}")
    fit(max_steps=9, callbacks=[by_step, by_epoch])  # "killed" in epoch 1
    # mid epoch 0 (after batch 3), mid epoch 1 (after its batch 1), end of epoch 0
    for step, name in ((4, "step=4"), (8, "step=8"), (6, "epoch=0")):
        resumed = fit(ckpt_path=tmp_path / f"{name}.ckpt")
        assert [s[:2] for s in resumed] == [s[:2] for s in full[step:]]
        for a, b in zip(full[step:], resumed):
            assert torch.equal(a[3], b[3]) and torch.equal(a[2], b[2])  # labels, augmented images


# ---- fixtures: CLI and learnability -------------------------------------------------------
def test_fixtures_cli(tmp_path, capsys):
    assert fixtures_main([str(tmp_path), "--cifar-per-class", "2", "--tiny-per-class", "1",
                          "--seed", "3"]) == 0
    assert len(load_dataset("cifar100", tmp_path)["train_labels"]) == 200
    assert len(load_dataset("tinyimagenet", tmp_path)["train_labels"]) == 200
    assert fixtures_main([str(tmp_path), "--only", "cifar100"]) == 0  # rewrites its own output
    assert len(load_dataset("cifar100", tmp_path)["train_labels"]) == 2000  # other settings
    # Same settings again: kept, not rewritten; a directory cut short (its marker has no
    # settings yet) is written again.
    capsys.readouterr()
    train = tmp_path / "cifar-100-python" / "train"
    written = train.stat().st_mtime_ns
    assert fixtures_main([str(tmp_path), "--only", "cifar100"]) == 0
    assert "is up to date (2000 train, 200 test)" in capsys.readouterr().out
    assert train.stat().st_mtime_ns == written
    marker = tmp_path / "cifar-100-python" / ".poolbench-fixture"
    marker.write_text(marker.read_text().splitlines()[0] + "\n")
    assert fixtures_main([str(tmp_path), "--only", "cifar100"]) == 0
    assert "wrote" in capsys.readouterr().out and train.stat().st_mtime_ns != written
    real = tmp_path / "real"
    (real / "cifar-100-python").mkdir(parents=True)
    (real / "cifar-100-python" / "train").write_bytes(b"precious")
    assert fixtures_main([str(real), "--only", "cifar100"]) == 1
    assert "refusing" in capsys.readouterr().err
    assert (real / "cifar-100-python" / "train").read_bytes() == b"precious"


def test_prepare_cli(data_root, tmp_path, capsys):
    from poolbench.data.__main__ import main as prepare_main

    root, _ = data_root
    assert prepare_main([str(root), "--stats"]) == 0
    out = capsys.readouterr().out
    assert "cifar100: 600 train + 200 test" in out and "constant (0.5071, 0.4865, 0.4409)" in out
    assert prepare_main([str(tmp_path), "--datasets", "cifar100"]) == 1
    assert "data.download=true" in capsys.readouterr().err


def test_a_tiny_cnn_learns_the_cifar_fixture(loaded):
    """The fixture has learnable class structure: far above chance (1%) in a few seconds."""
    from torch import nn
    from torch.nn import functional as F

    d = loaded["cifar100"]
    aug = DeviceAugment(CIFAR.mean, CIFAR.std, padding=4)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                        nn.Flatten(), nn.Linear(32, 100))
    opt = torch.optim.Adam(net.parameters(), lr=5e-3)
    loader = FastLoader(d["train_images"], d["train_labels"], 50, shuffle=True, drop_last=True)
    for _ in range(8):
        for x, y in loader:
            loss = F.cross_entropy(net(aug.train(x)), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        acc = (net(aug.eval(d["test_images"])).argmax(1) == d["test_labels"]).float().mean()
    print(f"fixture accuracy after 8 epochs: {acc:.3f} (chance 0.010)")
    assert acc > 0.10, acc

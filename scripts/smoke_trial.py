"""How fast a model learns a fixture dataset, for sizing the smoke experiment's budget.

    scripts/venv-run python scripts/smoke_trial.py --data tinyimagenet --model resnet18 \
        --images 1280 --batch 16 --lr 0.05 --seeds 0 1 2 [--root outputs/fixtures]

Trains one model from scratch on the data module's training split (its augmentation and
normalisation; the validation split held out as the smoke does), for ``--images`` training
images in batches of ``--batch`` (SGD, momentum 0.9, weight decay 5e-4, cosine from ``--lr``,
one CPU thread), then prints the test top-1 of the final weights and the CPU seconds of
training. A plain loop, not Lightning's: the same model, data and optimiser, without the
per-run costs of a real run (validation, checkpoints, two test passes). Write the fixtures
first (``poolbench-fixtures ROOT``). docs/smoke.md gives the measurements it made.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.nn import functional as F

from poolbench.data import PoolbenchDataModule
from poolbench.models import build_model
from poolbench.module import lr_at


def trial(dm: PoolbenchDataModule, model_name: str, pool: str, width: int, images: int,
          batch: int, lr: float, seed: int) -> tuple[float, float]:
    """(test top-1 of the final weights, CPU seconds of training) of one seeded run."""
    torch.manual_seed(seed)
    model = build_model(model_name, num_classes=dm.num_classes, pool=pool, width=width,
                        input_size=dm.image_size)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    steps = images // batch
    n = len(dm.train_labels)
    order, pos = torch.randperm(n), 0
    start = time.process_time()
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps, 0, lr)
        if pos + batch > n:
            order, pos = torch.randperm(n), 0
        idx = order[pos:pos + batch]
        pos += batch
        loss = F.cross_entropy(model(dm.train_transform(dm.train_images[idx])),
                               dm.train_labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    cpu = time.process_time() - start
    model.eval()
    with torch.no_grad():
        correct = sum(int((model(dm.eval_transform(dm.test_images[i:i + 256])).argmax(1)
                           == dm.test_labels[i:i + 256]).sum())
                      for i in range(0, len(dm.test_labels), 256))
    return correct / len(dm.test_labels), cpu


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="tinyimagenet", choices=["cifar100", "tinyimagenet"])
    p.add_argument("--root", default="outputs/fixtures", help="where poolbench-fixtures wrote")
    p.add_argument("--model", default="resnet18", choices=["vgg16", "resnet18"])
    p.add_argument("--pool", default="max")
    p.add_argument("--width", type=int, default=8)
    p.add_argument("--images", type=int, default=1280, help="training images seen (sum)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--val-size", type=int, default=100, help="held out, as the smoke does")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = p.parse_args(argv)
    if args.images < args.batch:
        p.error(f"--images {args.images} is less than one batch (--batch {args.batch})")
    torch.set_num_threads(1)
    dm = PoolbenchDataModule(args.data, args.root, batch_size=args.batch,
                             val_size=args.val_size)
    dm.setup()
    accs = []
    for seed in args.seeds:
        acc, cpu = trial(dm, args.model, args.pool, args.width, args.images, args.batch,
                         args.lr, seed)
        accs.append(acc)
        print(f"{args.data} {args.model} {args.pool} width {args.width}: {args.images} images, "
              f"batch {args.batch}, lr {args.lr}, seed {seed}: test top-1 {acc:.1%} "
              f"(chance {1 / dm.num_classes:.1%}), {cpu:.1f} s CPU "
              f"({cpu / args.images * 1e3:.1f} ms an image)", flush=True)
    if len(accs) > 1:
        print(f"mean over seeds {args.seeds}: {statistics.mean(accs):.1%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

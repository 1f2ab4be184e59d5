"""poolbench-eval: test a network without training it, e.g. a pre-trained one whose pools
were swapped for another method (SoftPool's "pre-trained" column, Table 2).

    poolbench-eval model=timm model.arch=resnet50 data=imagenet pool=softpool model.pretrained=true
    poolbench-eval model=timm model.arch=resnet50 data=imagenet pool=max model.pretrained=/ckpt/resnet50.pth

Takes the same Hydra overrides as ``poolbench-train``. ``model.pretrained``: ``true`` loads
timm's published weights (downloaded from the Hugging Face hub: needs internet, or a filled
``$HF_HOME`` cache), a path loads a local checkpoint (a timm/torch state dict of the
original network, or a poolbench ``last.ckpt``/``best.ckpt``). The pools are replaced
(:mod:`poolbench.models.timm_models`), the test set (ImageNet's official val set) is
evaluated once, and ``results.json`` is written in the run directory ``poolbench-train``
would use for the same overrides (``model.pretrained`` is part of its hash), with status
``done``, ``evaluation_only: true``, ``pretrained`` (the source) and ``epochs_run: 0``. A
finished evaluation is skipped unless ``force=true``.
"""

from __future__ import annotations

import logging
import sys
import time
import traceback
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from . import rundir
from .config import CONF_DIR, register_resolvers

register_resolvers()
log = logging.getLogger("poolbench.eval")

EVALUATION_ONLY = "evaluation_only"  # results.json key marking a run that did not train


def is_evaluation_only(results: dict | None) -> bool:
    return bool((results or {}).get(EVALUATION_ONLY))


def check_pretrained(cfg: DictConfig) -> str:
    """``model.pretrained`` as a source string ('hub' or a path); an error if unset."""
    value = cfg.model.get("pretrained") if "model" in cfg else None
    if value in (None, False) or str(value).lower() == "false":
        raise ValueError(
            "poolbench-eval evaluates trained weights: set model.pretrained=true (timm's "
            "published weights; needs internet) or model.pretrained=PATH (a local checkpoint); "
            f"got model.pretrained={value!r} (model={cfg.model.name!r} must be model=timm)")
    return "hub" if value is True or str(value).lower() == "true" else str(value)


def check_head(model, num_classes: int, source: str) -> None:
    """Published weights are tested only with the classes their head was trained on (timm
    swaps in a fresh, random head otherwise)."""
    trained = (getattr(model, "pretrained_cfg", None) or {}).get("num_classes")
    if source == "hub" and trained and trained != num_classes:
        raise ValueError(f"model.pretrained=true loads weights with a {trained}-class head, but "
                         f"the data has {num_classes} classes: evaluate them on the real "
                         "ImageNet-1k (data=imagenet with all 1000 class folders)")


def eval_run(cfg: DictConfig, run_dir: Path) -> dict:
    """Build (with the pretrained weights), test, write results.json; returns it."""
    import lightning as L

    from .evaluate import evaluate, run_environment
    from .train import build, set_threads
    from .trainer import build_trainer, quiet_libraries, trainer_precision

    t_start = time.time()
    source = check_pretrained(cfg)
    quiet_libraries()
    config = OmegaConf.to_container(cfg, resolve=True)
    rundir.start(run_dir, config)
    set_threads(cfg.get("threads"))
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    dm, module = build(cfg)
    check_head(module.model, dm.num_classes, source)
    precision = trainer_precision(cfg.trainer)
    trainer = build_trainer(cfg, run_dir, precision, callbacks=[], loggers=False)
    dm.setup("test")
    tested = evaluate(trainer, module, dm, None, run_dir)
    results = rundir.results_record(
        config, run_dir, rundir.DONE, None, **tested, epochs_run=0,
        wall_time_s=time.time() - t_start, first_step_at=None, startup_s=None,
        launch_s=None, mean_epoch_time_s=None, throughput_img_s=None,
        **run_environment(module.model, precision), wandb_id=None)
    results[EVALUATION_ONLY] = True
    results["pretrained"] = source
    rundir.write_results(run_dir, results)
    top1 = (results["test"]["final"] or {}).get("top1")
    print(f"[poolbench] evaluated: {run_dir} (test top-1 {top1:.4f}, weights: {source})",
          flush=True)
    return results


def run(cfg: DictConfig) -> dict | None:
    run_dir = Path(cfg.run_dir)
    status = rundir.finished_status(run_dir)
    if status and not cfg.force:
        print(f"[poolbench] {rundir.SKIP_NOTICE} ({status}): {run_dir}  (force=true re-evaluates)",
              flush=True)
        return rundir.read_results(run_dir)
    if cfg.force:
        rundir.clear(run_dir)
    return eval_run(cfg, run_dir)


@hydra.main(version_base=None, config_path=str(CONF_DIR), config_name="train")
def main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    multirun = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        run(cfg)
    except Exception:
        if multirun:
            log.exception("evaluation failed: %s", cfg.run_dir)
        rundir.record_failure(Path(cfg.run_dir), cfg, traceback.format_exc(limit=20))
        if not multirun:
            raise


if __name__ == "__main__":
    sys.exit(main())

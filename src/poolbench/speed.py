"""The speed knobs of a run that are not Lightning options: ``torch.compile`` of the model
(config ``compile``, ``compile_mode``, ``compile_backend``) and cuDNN autotuning.

* **compile** compiles the model *in place* (``nn.Module.compile``): the module object, its
  parameter names and its ``state_dict`` keys stay what they are without compilation (no
  ``_orig_mod.`` prefix), so a checkpoint of a compiled run resumes in an eager one and the
  other way round, and the pooling parameters are logged under the same names. Compilation
  happens lazily, at the first forward of each mode (training, evaluation) and batch shape.
* **cuDNN autotuning** (``torch.backends.cudnn.benchmark``) is on for CUDA runs unless
  ``trainer.deterministic`` is set (autotuning picks kernels by timing, so the choice, and
  the last bits of the result, may differ between runs) or ``trainer.benchmark`` is given
  explicitly.

No torch at import (``poolbench.train`` imports this module only when it trains).
"""

from __future__ import annotations

import logging

log = logging.getLogger("poolbench.train")

#: ``compile_mode`` values (``torch.compile``'s ``mode``; they apply to the inductor backend).
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
#: ``compile_backend`` values: inductor generates fused kernels; aot_eager traces forward and
#: backward but runs them eagerly (for debugging a compile problem, and fast tests).
COMPILE_BACKENDS = ("inductor", "aot_eager", "eager")


def compile_options(cfg) -> dict | None:
    """``torch.compile`` keyword arguments from a run config (None: ``compile`` is off).

    A bad value is an error naming it and the valid choices.
    """
    enabled = cfg.get("compile", False)
    if not isinstance(enabled, bool):
        raise ValueError(f"compile={enabled!r} is not valid: use true or false")
    mode = cfg.get("compile_mode", "default")
    backend = cfg.get("compile_backend", "inductor")
    if mode not in COMPILE_MODES:
        raise ValueError(f"compile_mode={mode!r} is not valid; choose one of {list(COMPILE_MODES)}")
    if backend not in COMPILE_BACKENDS:
        raise ValueError(f"compile_backend={backend!r} is not valid; choose one of "
                         f"{list(COMPILE_BACKENDS)}")
    if not enabled:
        return None
    if backend != "inductor":
        if mode != "default":
            raise ValueError(f"compile_mode={mode!r} needs compile_backend=inductor "
                             f"(got {backend!r}); use compile_mode=default")
        return {"backend": backend}
    return {"backend": backend, "mode": mode}


def compile_model(model, options: dict | None):
    """Compile ``model`` in place with ``options`` (:func:`compile_options`; None: leave it).
    Returns ``model``: the same object, same parameter names, same ``state_dict`` keys."""
    if options is None:
        return model
    model.compile(**options)
    log.info("model compiled with torch.compile(%s); the first step of each mode and batch "
             "shape compiles", ", ".join(f"{k}={v!r}" for k, v in options.items()))
    return model


def on_cuda(accelerator) -> bool:
    """Whether a run with ``trainer.accelerator=accelerator`` runs on a CUDA device."""
    import torch

    accelerator = str(accelerator)
    return accelerator in ("gpu", "cuda") or (accelerator == "auto"
                                              and torch.cuda.is_available())


def cudnn_benchmark(benchmark, deterministic, cuda: bool) -> bool | None:
    """The value for ``torch.backends.cudnn.benchmark`` (None: leave it to Lightning).

    ``trainer.benchmark`` given explicitly wins; else autotuning is on for CUDA unless
    ``trainer.deterministic`` is set (true or ``"warn"``: autotuning times kernels and may
    pick different ones from run to run).
    """
    if benchmark is not None:
        return None  # Lightning applies trainer.benchmark itself
    if deterministic not in (False, None):
        return False
    return True if cuda else None


def apply_speed_knobs(cfg, module) -> None:
    """Compile ``module.model`` if ``cfg.compile``; set cuDNN autotuning for the run's device.
    Called after the model is built and before the Lightning Trainer is."""
    import torch

    compile_model(module.model, compile_options(cfg))
    value = cudnn_benchmark(cfg.trainer.get("benchmark"), cfg.trainer.get("deterministic"),
                            on_cuda(cfg.trainer.get("accelerator", "auto")))
    if value is not None:
        torch.backends.cudnn.benchmark = value
        if value:
            log.info("cuDNN autotuning on (trainer.deterministic=true turns it off)")

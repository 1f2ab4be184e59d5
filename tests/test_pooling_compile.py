"""torch.compile support and the absence of host-device synchronisation in forward.

On CPU a host-device sync cannot be observed directly, so two proxies are used:

* every method must trace with ``torch.compile(fullgraph=True)``: ``.item()``, ``bool(t)``
  or other data-dependent Python control flow cause a graph break, which fullgraph turns
  into an error;
* every forward runs under a ``TorchDispatchMode`` that records the ATen ops which force a
  sync on an accelerator (``_local_scalar_dense`` behind ``.item()``/``bool()``/``int()``,
  and ops with data-dependent output shapes such as ``nonzero``). Dynamo switches some of
  these off while tracing (e.g. ``torch.distributions`` argument validation), so the
  dispatch check sees syncs that the fullgraph check cannot; conversely ``.tolist()`` and
  ``.numpy()`` read CPU memory without an ATen op, which only the fullgraph check sees.

With CUDA available, ``torch.cuda.set_sync_debug_mode("error")`` checks the real thing.
"""

from __future__ import annotations

import pytest
import torch

import pooling_contract as contract
from pooling_contract import SyncRecorder, make_layer
from poolbench.pooling import available_pools

METHODS = available_pools()


def test_sync_recorder_detects_item_and_bool():
    """The detector itself must be able to fail."""
    x = torch.randn(4)
    with SyncRecorder() as rec:
        _ = x.sum().item()
    assert rec.seen
    with SyncRecorder() as rec:
        _ = bool((x > 0).all())
    assert rec.seen
    with SyncRecorder() as rec:
        _ = x[x > 0]
    assert rec.seen
    with SyncRecorder() as rec:
        _ = torch.where(x > 0, x, 0.0).sum()
    assert not rec.seen


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("name", METHODS)
def test_forward_has_no_host_sync_ops(name, train):
    contract.check_no_host_sync(name, train)


# training mode runs different code only for the random methods
MODES = contract.modes()
RANDOM_IN_TRAINING = [name for name, train in MODES if train]


@pytest.mark.parametrize("name,train", MODES, ids=[contract.mode_id(m) for m in MODES])
def test_forward_traces_with_fullgraph(name, train):
    contract.check_traces_with_fullgraph(name, train)


@pytest.mark.parametrize("name", METHODS)
def test_compiled_aot_eager_matches_eager_with_gradients(name):
    contract.check_aot_eager_matches_eager(name)


@pytest.mark.parametrize("name", RANDOM_IN_TRAINING)
def test_compiled_training_of_random_methods(name):
    """Training-mode sampling (Beta rsample, rand, fractional regions) compiles and runs
    backward; stochastic_mix's theta gets its reparameterised gradient."""
    torch._dynamo.reset()
    layer = make_layer(name, True)
    compiled = torch.compile(layer, backend="aot_eager", fullgraph=True)
    x = torch.randn(2, 6, 9, 9, requires_grad=True)
    y = compiled(x)
    (y * torch.randn_like(y)).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for p in layer.parameters():
        assert p.grad is not None and (p.grad != 0).all()


def _inductor_check(name, second_shape=True):
    import torch._inductor.config as inductor_config

    torch._dynamo.reset()
    layer = make_layer(name, False)
    with inductor_config.patch(compile_threads=1):  # no worker pool for one small graph
        compiled = torch.compile(layer, fullgraph=True)  # default backend: inductor
        x = torch.randn(2, 6, 9, 9)
        torch.testing.assert_close(compiled(x), layer(x), rtol=1e-5, atol=1e-5)
        if second_shape:  # recompiles (dynamic shapes)
            x2 = torch.randn(3, 6, 13, 11) * 100
            torch.testing.assert_close(compiled(x2), layer(x2), rtol=1e-5, atol=1e-3)


def test_compiled_inductor_matches_eager_representative():
    # max pool + unfold top-k mean + elementwise gate; ~20-30 s with a cold inductor cache
    _inductor_check("soft_tmaxavg", second_shape=False)


@pytest.mark.slow
@pytest.mark.parametrize("name", METHODS)
def test_compiled_inductor_matches_eager_every_method(name):
    _inductor_check(name)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: "
                    "torch.cuda.set_sync_debug_mode observes real host-device syncs only")
@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("name", METHODS)
def test_no_cuda_sync_in_forward(name, train):
    layer = make_layer(name, train).cuda()
    x = torch.randn(2, 6, 9, 9, device="cuda")
    layer(x)  # warm-up: lazy initialisation may sync once
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        y = layer(x)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert y.shape == (2, 6, 5, 5)

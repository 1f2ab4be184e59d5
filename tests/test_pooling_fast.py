"""The tile kernels (poolbench.pooling.tiles) against naive and old implementations.

References:

* ``topk_ref``/``soft_ref``: the previous autograd implementations (``unfold`` + ``topk``,
  ``unfold`` + ``exp``), kept here verbatim, for values and for gradients where no ties
  sit at the K-th value;
* ``topk_grad_tie_average``: at ties the top-K mean is not differentiable; the kernel's
  gradient must be the average of the old implementation's gradients over every way of
  breaking the ties (each tie order is imposed with tiny offsets);
* native ``F.max_pool2d``/``F.avg_pool2d`` for the fused max+mean of the blends (same
  gradient, ties included: native max pooling sends it to the first maximal cell).
"""

from __future__ import annotations

import itertools
import math
import threading

import pytest
import torch
from torch.nn import functional as F

from poolbench.pooling import blend, create_pool, tiles
from poolbench.pooling.functional import (
    avg_pool, can_tile, max_pool, soft_pool2d, topk_mean, windows,
)
from poolbench.pooling.geometry import Geometry

FORMATS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}
# (kernel, input shape): square and rectangular tiles, sizes that divide and that do not.
TILINGS = [
    (2, (2, 3, 8, 8)), (2, (2, 3, 9, 7)), ((2, 3), (2, 3, 8, 9)), (3, (1, 2, 9, 10)),
    (4, (1, 2, 8, 8)), ((1, 2), (2, 2, 4, 4)),
]


def topk_ref(x, g, k):
    """The previous implementation of ``topk_mean`` (autograd through unfold + topk)."""
    win, valid = windows(x, g, fill=-math.inf)
    vals = win.flatten(-2).topk(k, dim=-1, sorted=True).values
    assert valid is None
    return vals.mean(dim=-1)


def soft_ref(x, g):
    """The previous implementation of ``soft_pool2d`` (autograd through unfold + exp)."""
    m = max_pool(x.detach(), g)
    win, valid = windows(x, g, fill=0.0)
    assert valid is None
    d = win - m[..., None, None]
    e = d.exp()
    return m + (e * d).sum((-2, -1)) / e.sum((-2, -1))


@pytest.fixture(params=["chunked", "functional"])
def path(request):
    """Both implementations of each kernel: chunked (CPU eager) and functional (compile, GPU)."""
    if request.param == "functional":
        with tiles.functional_path():
            yield request.param
    else:
        yield request.param


def make_input(shape, kind, fmt="contiguous", dtype=torch.float64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    if kind == "randn":
        x = torch.randn(shape, generator=gen, dtype=dtype)
    elif kind == "relu":  # many exact zeros: ties
        x = torch.randn(shape, generator=gen, dtype=dtype).relu()
    elif kind == "int":  # values in {0, 1, 2}: ties everywhere
        x = torch.randint(0, 3, shape, generator=gen).to(dtype)
    else:
        raise ValueError(kind)
    return x.contiguous(memory_format=FORMATS[fmt]).requires_grad_(True)


def grad_of(fn, x, go):
    (g,) = torch.autograd.grad(fn(x), x, go)
    return g


def topk_grad_tie_average(x, g, k, go):
    """Average of the old implementation's gradient over every tie-breaking order.

    ``x`` must hold integers (gaps >= 1) so that offsets of size < 1e-3 order the tied
    cells of a window without reordering anything else.
    """
    kh, kw = g.kernel
    n = kh * kw
    total = torch.zeros_like(x)
    perms = list(itertools.permutations(range(n)))
    for perm in perms:
        offset = torch.tensor(perm, dtype=x.dtype).view(kh, kw) * 1e-4
        ho, wo = g.output_size(*x.shape[-2:])
        full = torch.zeros(x.shape[-2:], dtype=x.dtype)
        full[: ho * kh, : wo * kw] = offset.repeat(ho, wo)
        xp = (x.detach() + full).requires_grad_(True)
        total += grad_of(lambda t: topk_ref(t, g, k), xp, go)
    return total / len(perms)


def test_functional_path_is_process_wide_nests_and_is_undone():
    """Inside functional_path() every thread takes the functional path (a backward pass may
    run on another thread); nested blocks keep it until the outermost one ends."""
    x = torch.zeros(1, 1, 4, 4)

    def in_other_thread():
        seen = []
        t = threading.Thread(target=lambda: seen.append(tiles._chunked(x)))
        t.start()
        t.join()
        return seen[0]

    assert tiles._chunked(x) and in_other_thread()
    with tiles.functional_path():
        assert not tiles._chunked(x) and not in_other_thread()
        with tiles.functional_path():
            assert not tiles._chunked(x)
        assert not tiles._chunked(x)
    assert tiles._chunked(x) and in_other_thread()
    with pytest.raises(KeyError), tiles.functional_path():
        raise KeyError("an error inside the block")
    assert tiles._chunked(x)


# ------------------------------------------------------------------------- sorting network

@pytest.mark.parametrize("n", range(1, 13))
def test_sorting_network_sorts_every_0_1_input(n):
    """0-1 principle: a comparator network that sorts every 0/1 input sorts everything."""
    net = tiles.sorting_network(n)
    assert all(0 <= i < j < n for i, j in net)
    for bits in itertools.product((0, 1), repeat=n):
        v = list(bits)
        for i, j in net:
            v[i], v[j] = min(v[i], v[j]), max(v[i], v[j])
        assert v == sorted(bits)


# ------------------------------------------------------------------------------- dispatching

@pytest.mark.parametrize("kernel,stride,padding,ceil_mode,shape,expected", [
    (2, None, 0, False, (1, 1, 8, 8), True),
    (2, None, 0, False, (1, 1, 9, 9), True),  # floor mode crops the last row and column
    (2, None, 0, True, (1, 1, 9, 9), False),  # ceil mode: a partial window
    (2, None, 1, False, (1, 1, 8, 8), False),  # padding
    (3, 2, 0, False, (1, 1, 9, 9), False),  # overlapping windows
    (2, 3, 0, False, (1, 1, 9, 9), False),  # gaps between windows
    (2, None, 0, False, (1, 8, 8), False),  # unbatched input
])
def test_can_tile(kernel, stride, padding, ceil_mode, shape, expected):
    g = Geometry.create(kernel, stride, padding, ceil_mode)
    assert can_tile(torch.zeros(shape), g) is expected


def test_integer_input_takes_general_path():
    assert not can_tile(torch.zeros(1, 1, 4, 4, dtype=torch.int64), Geometry.create(2))


# ------------------------------------------------------------------------------- top-K mean

@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("kernel,shape", TILINGS)
def test_topk_mean_matches_old_implementation(kernel, shape, fmt, path):
    g = Geometry.create(kernel)
    x = make_input(shape, "randn", fmt)
    for k in range(2, g.window_size):
        y = topk_mean(x, g, k)
        torch.testing.assert_close(y, topk_ref(x, g, k))
        assert y.is_contiguous(memory_format=FORMATS[fmt])
        go = torch.randn_like(y)
        gx = grad_of(lambda t: topk_mean(t, g, k), x, go)
        assert gx.is_contiguous(memory_format=FORMATS[fmt])
        torch.testing.assert_close(gx, grad_of(lambda t: topk_ref(t, g, k), x, go))


@pytest.mark.parametrize("kernel,shape,k", [
    (2, (2, 3, 6, 6), 2), (2, (2, 3, 6, 6), 3), ((2, 3), (1, 2, 4, 6), 4),
    (3, (1, 2, 6, 6), 5),
])
@pytest.mark.parametrize("fmt", FORMATS)
def test_topk_mean_gradcheck(kernel, shape, k, fmt, path):
    g = Geometry.create(kernel)
    x = make_input(shape, "randn", fmt)
    assert torch.autograd.gradcheck(lambda t: topk_mean(t, g, k), (x,))


@pytest.mark.parametrize("fmt", FORMATS)
def test_topk_mean_gradcheck_with_relu_zeros_below_kth_value(fmt):
    """ReLU zeros tied with each other but below the K-th value: differentiable there."""
    g = Geometry.create(2)
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(2, 3, 4, 4, generator=gen, dtype=torch.float64) + 0.5
    xv = x.view(2, 3, 2, 2, 2, 2)
    xv[:, :, :, 0, :, 1] = 0.0  # two zeros in every window...
    xv[:, :, :, 1, :, 0] = 0.0
    x = x.contiguous(memory_format=FORMATS[fmt]).requires_grad_(True)
    # ...and K = 2: the top two are the two positive cells.
    assert torch.autograd.gradcheck(lambda t: topk_mean(t, g, 2), (x,))


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("kind", ["relu", "int"])
@pytest.mark.parametrize("k", [2, 3])
def test_topk_mean_ties_split_equally(k, kind, fmt, path):
    g = Geometry.create(2)
    x = make_input((2, 3, 6, 6), kind, fmt)
    if kind == "relu":  # integer-valued version with the same tie pattern
        x = (x.detach() * 4).round().contiguous(memory_format=FORMATS[fmt]).requires_grad_(True)
    y = topk_mean(x, g, k)
    torch.testing.assert_close(y, topk_ref(x, g, k))
    go = torch.randn_like(y)
    gx = grad_of(lambda t: topk_mean(t, g, k), x, go)
    torch.testing.assert_close(gx, topk_grad_tie_average(x, g, k, go))
    # Each window hands out exactly the output gradient, K cells' worth of 1/K.
    gone = grad_of(lambda t: topk_mean(t, g, k), x, torch.ones_like(y))
    torch.testing.assert_close(gone.view(2, 3, 3, 2, 3, 2).sum((3, 5)), torch.ones_like(y))


def test_topk_mean_all_equal_window():
    g = Geometry.create(2)
    x = torch.full((1, 1, 2, 2), 3.0, dtype=torch.float64, requires_grad=True)
    y = topk_mean(x, g, 3)
    assert y.item() == 3.0
    (gx,) = torch.autograd.grad(y, x, torch.ones_like(y))
    torch.testing.assert_close(gx, torch.full_like(x, 0.25))


# --------------------------------------------------------------------------------- SoftPool

@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("kernel,shape", TILINGS)
@pytest.mark.parametrize("kind", ["randn", "relu", "int"])
def test_softpool_matches_old_implementation(kernel, shape, fmt, kind, path):
    g = Geometry.create(kernel)
    x = make_input(shape, kind, fmt)
    y = soft_pool2d(x, g)
    torch.testing.assert_close(y, soft_ref(x, g))
    assert y.is_contiguous(memory_format=FORMATS[fmt])
    go = torch.randn_like(y)
    gx = grad_of(lambda t: soft_pool2d(t, g), x, go)
    assert gx.is_contiguous(memory_format=FORMATS[fmt])
    torch.testing.assert_close(gx, grad_of(lambda t: soft_ref(t, g), x, go))


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("kind", ["randn", "relu"])
@pytest.mark.parametrize("kernel", [2, (2, 3)])
def test_softpool_gradcheck(kernel, kind, fmt, path):
    """SoftPool is smooth: gradcheck holds at ties (ReLU zeros) too."""
    g = Geometry.create(kernel)
    x = make_input((2, 2, 4, 6), kind, fmt)
    assert torch.autograd.gradcheck(lambda t: soft_pool2d(t, g), (x,))


# ------------------------------------------------------------------- fused max + mean (blends)

@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("kernel,shape", TILINGS)
@pytest.mark.parametrize("kind", ["randn", "int"])
def test_max_avg_matches_native(kernel, shape, fmt, kind, path):
    g = Geometry.create(kernel)
    x = make_input(shape, kind, fmt)
    m, a = tiles.max_avg_tiles(x, g)
    mr, ar = max_pool(x, g), avg_pool(x, g)
    torch.testing.assert_close(m, mr, rtol=0, atol=0)
    torch.testing.assert_close(a, ar)
    assert m.is_contiguous(memory_format=FORMATS[fmt])
    gm, ga = torch.randn_like(m), torch.randn_like(m)
    (gx,) = torch.autograd.grad((m * gm + a * ga).sum(), x)
    (gr,) = torch.autograd.grad((mr * gm + ar * ga).sum(), x)
    torch.testing.assert_close(gx, gr)  # ties (int inputs): first maximal cell, like native
    assert gx.is_contiguous(memory_format=FORMATS[fmt])


def test_max_avg_gradcheck(path):
    g = Geometry.create(2)
    x = make_input((2, 3, 4, 6), "randn")
    assert torch.autograd.gradcheck(lambda t: tiles.max_avg_tiles(t, g), (x,))


@pytest.mark.parametrize("name", ["channel_adaptive", "mixed", "stochastic_mix", "gated"])
def test_blends_use_fused_kernel_and_match_native(name, monkeypatch):
    x = make_input((2, 4, 6, 6), "relu", dtype=torch.float32)
    layer = create_pool(name, 4, 2).eval()
    y = layer(x)
    assert "MaxAvgTiles" in type(y.grad_fn).__name__ or any(
        "MaxAvgTiles" in type(f).__name__ for f in _walk(y.grad_fn))
    gx = grad_of(layer, x, torch.ones_like(y))
    monkeypatch.setattr(blend, "max_avg", lambda t, g: (max_pool(t, g), avg_pool(t, g)))
    torch.testing.assert_close(layer(x), y)
    torch.testing.assert_close(grad_of(layer, x, torch.ones_like(y)), gx)


def _walk(fn, seen=None):
    seen = set() if seen is None else seen
    if fn is None or fn in seen:
        return
    seen.add(fn)
    yield fn
    for nxt, _ in fn.next_functions:
        yield from _walk(nxt, seen)


# ------------------------------------------------------------------ chunking and threading

@pytest.mark.parametrize("chunk", [1, 5, 40])
@pytest.mark.parametrize("fmt", FORMATS)
def test_results_do_not_depend_on_chunking(monkeypatch, chunk, fmt):
    """Chunks of samples and of channels (tiny CHUNK_ELEMENTS) give the same results."""
    g = Geometry.create(2)
    x = make_input((3, 5, 6, 8), "relu", fmt)
    fns = [lambda t: topk_mean(t, g, 3), lambda t: soft_pool2d(t, g),
           lambda t: sum(tiles.max_avg_tiles(t, g))]
    go = torch.randn(3, 5, 3, 4, dtype=x.dtype)
    ref = [(f(x), grad_of(f, x, go)) for f in fns]
    monkeypatch.setattr(tiles, "CHUNK_ELEMENTS", chunk)
    assert len(tiles._chunks((3, 5, 3, 4), x.device)) > 1
    for f, (y, gx) in zip(fns, ref):
        torch.testing.assert_close(f(x), y)
        torch.testing.assert_close(grad_of(f, x, go), gx)


def test_chunks_cover_the_output_once():
    for shape in [(3, 5, 3, 4), (7, 300, 20, 20), (1, 1, 1, 1)]:
        seen = torch.zeros(shape[:2], dtype=torch.int64)
        for ns, cs in tiles._chunks(shape, torch.device("cpu")):
            seen[ns, cs] += 1
        assert (seen == 1).all()


def test_thread_count_is_restored():
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        x = make_input((64, 64, 8, 8), "randn", dtype=torch.float32)
        y = topk_mean(x, Geometry.create(2), 3)
        assert torch.get_num_threads() == 2
        y.sum().backward()
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


# ------------------------------------------------------------------------ 16-bit and scale

@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("scale", [1.0, 1e4])
def test_low_precision_is_finite_and_accurate(dtype, scale, path):
    g = Geometry.create(2)
    x64 = make_input((2, 4, 8, 8), "randn").detach() * scale
    x = x64.to(dtype).requires_grad_(True)
    xr = x.detach().double().requires_grad_(True)  # the same values, exactly
    tol = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}[dtype]
    cases = [
        (lambda t: topk_mean(t, g, 3), lambda t: topk_ref(t, g, 3)),
        (lambda t: topk_mean(t, g, 2), lambda t: topk_ref(t, g, 2)),
        (lambda t: soft_pool2d(t, g), lambda t: soft_ref(t, g)),
        (lambda t: tiles.max_avg_tiles(t, g)[1], lambda t: avg_pool(t, g)),
    ]
    for fast, ref in cases:
        y, yr = fast(x), ref(xr)
        assert y.dtype == dtype and torch.isfinite(y).all()
        torch.testing.assert_close(y.double(), yr, rtol=tol, atol=tol * scale)
        go = torch.randn_like(yr)
        gx = grad_of(fast, x, go.to(dtype))
        assert gx.dtype == dtype and torch.isfinite(gx).all()
        torch.testing.assert_close(gx.double(), grad_of(ref, xr, go), rtol=tol, atol=4 * tol)


# ------------------------------------------------------------------------------ torch.compile

@pytest.mark.parametrize("name", ["tmaxavg", "learnable_t", "softpool", "channel_adaptive"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_compiles_fullgraph(name, fmt):
    torch._dynamo.reset()
    layer = create_pool(name, 4, 2).train()
    x = make_input((2, 4, 8, 8), "relu", fmt, dtype=torch.float32)
    compiled = torch.compile(layer, backend="aot_eager", fullgraph=True)
    y = compiled(x)
    gx = grad_of(compiled, x, torch.ones_like(y))
    torch.testing.assert_close(y, layer(x))
    torch.testing.assert_close(gx, grad_of(layer, x, torch.ones_like(y)))


def test_unfold_path_still_used_for_other_geometries():
    """Overlap and padding keep the general (unfold) implementation: same as the reference."""
    g = Geometry.create(3, 2, 1)
    x = make_input((1, 2, 5, 5), "randn")
    y = topk_mean(x, g, 3)
    assert "TopKMeanTiles" not in type(y.grad_fn).__name__
    ys = soft_pool2d(x, g)
    assert "SoftPoolTiles" not in type(ys.grad_fn).__name__
    assert torch.autograd.gradcheck(lambda t: topk_mean(t, g, 3), (x,))
    assert torch.autograd.gradcheck(lambda t: soft_pool2d(t, g), (x,))


def test_native_max_pool_reference_agrees_with_f():
    """Guard for the references: max_pool is F.max_pool2d."""
    x = torch.randn(1, 2, 4, 4)
    torch.testing.assert_close(max_pool(x, Geometry.create(2)), F.max_pool2d(x, 2))


def test_results_do_not_depend_on_worker_threads(monkeypatch):
    """Chunks shared out among 1 or 3 threads: identical results, thread count restored."""
    g = Geometry.create(2)
    x = make_input((4, 6, 8, 8), "relu")
    go = torch.randn(4, 6, 4, 4, dtype=x.dtype)
    fns = [lambda t: topk_mean(t, g, 3), lambda t: soft_pool2d(t, g),
           lambda t: tiles.max_avg_tiles(t, g)[0] * 2 + tiles.max_avg_tiles(t, g)[1]]
    monkeypatch.setattr(tiles, "CHUNK_ELEMENTS", 16)
    before = torch.get_num_threads()
    results = []
    try:
        torch.set_num_threads(3)
        for workers in (1, 3):
            monkeypatch.setattr(tiles, "MAX_WORKERS", workers)
            results.append([(f(x), grad_of(f, x, go)) for f in fns])
            assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)
    for (y1, g1), (y3, g3) in zip(*results):
        assert torch.equal(y1, y3) and torch.equal(g1, g3)


@pytest.mark.parametrize("name", ["channel_adaptive", "tmaxavg", "soft_tmaxavg", "softpool"])
def test_chunked_kernels_run_under_inference_mode(name):
    """Lightning evaluates under torch.inference_mode; the chunk workers must too."""
    from poolbench.pooling import create_pool

    layer = create_pool(name, 16).eval()
    x = torch.randn(32, 16, 64, 64)  # several chunks, so worker threads take part
    with torch.no_grad():
        expected = layer(x)
    with torch.inference_mode():
        got = layer(x)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)

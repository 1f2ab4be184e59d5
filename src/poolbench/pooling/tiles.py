"""Tile kernels: window statistics for windows that tile the input, as autograd Functions.

This module imports only :mod:`~poolbench.pooling.geometry`; whether a layer takes these
kernels or the generic ``unfold`` path is decided in :mod:`poolbench.pooling.functional`.

When the pooling windows tile the input (``stride == kernel``, no padding, the input
cropped to whole windows as ``nn.MaxPool2d`` does in floor mode), each window is made of
the ``n = kh * kw`` cells ``x.view(N, C, Ho, kh, Wo, kw)[:, :, :, i, :, j]``, and every
window statistic is an elementwise computation over those ``n`` output-sized *cell planes*.
The kernels here compute exactly that, with no autograd graph in the forward pass and a
hand-written backward pass:

* on CPU (eager) the output is processed in chunks of samples (or of channels) of
  ``CHUNK_ELEMENTS`` cells, so that every temporary is small and stays in cache
  (:class:`_Cells`). The gradient is the only input-sized allocation (native max pooling's
  backward makes one too), and nothing input-sized is saved for backward besides the input;
* the chunks are shared out among ``torch.get_num_threads()`` threads (the caller and a
  small pool), each running its ops single-threaded (:func:`_one_intra_op_thread`);
* under ``torch.compile``, on other devices and inside :func:`functional_path` the same
  math runs as plain functional ops (no chunks, no ``out=``), which the compiler can fuse.

Functions:

* :func:`topk_mean_tiles`: mean of the K largest values of each window. Forward: Batcher's
  odd-even merge sorting network of ``torch.minimum``/``torch.maximum`` over the cell planes
  (the K largest are summed in fp32 for 16-bit inputs). Backward: with :math:`\\tau` the
  K-th largest value, cells above :math:`\\tau` get ``1/K`` of the output gradient and the
  cells equal to :math:`\\tau` share what is left equally: the average of the gradients
  over every way of breaking the ties, an exact subgradient.
* :func:`soft_pool_tiles`: SoftPool, :math:`Y = m + \\sum_i e_i (x_i - m) / \\sum_i e_i` with
  :math:`e_i = e^{x_i - m}` and :math:`m` the window max; backward
  :math:`\\partial Y/\\partial x_i = e_i / \\sum_j e_j \\cdot (1 + x_i - Y)` with :math:`e_i`
  recomputed from ``x``.
* :func:`max_avg_tiles`: window max and window mean in one pass; the max's gradient goes
  to the first maximal cell of the window in row-major order, as native max pooling's does.

None of them synchronises with the device or branches on tensor values; outputs and
gradients keep the input's memory format (contiguous or channels_last); they trace under
``torch.compile`` (dynamo supports ``autograd.Function``). Double backward is not supported
(``once_differentiable``). On CUDA they are correct but not tuned (each elementwise op is a
kernel launch).
"""

from __future__ import annotations

import contextlib
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import torch
from torch.autograd.function import once_differentiable

from .geometry import Geometry, in_format, memory_format

__all__ = [
    "CHUNK_ELEMENTS", "functional_path", "max_avg_tiles", "soft_pool_tiles",
    "sorting_network", "topk_mean_tiles",
]

# Output elements (cells of one cell plane) per chunk on CPU: a chunk's few scratch planes
# stay in cache, and the per-op dispatch overhead (microseconds) stays small.
CHUNK_ELEMENTS = 1 << 16


def _tile_view(x: torch.Tensor, g: Geometry) -> tuple[torch.Tensor, bool]:
    """``x`` (cropped to whole windows) as ``(N, C, Ho, kh, Wo, kw)``; and whether it was cropped."""
    (kh, kw), (h, w) = g.kernel, x.shape[-2:]
    ho, wo = g.output_size(h, w)
    cropped = ho * kh != h or wo * kw != w
    if cropped:
        x = x[:, :, : ho * kh, : wo * kw]
    return x.unflatten(3, (wo, kw)).unflatten(2, (ho, kh)), cropped


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _chunks(out_shape: tuple[int, ...], device: torch.device) -> list[tuple[slice, slice]]:
    """``(samples, channels)`` index pairs splitting an output of ``out_shape`` into chunks."""
    n, c, ho, wo = out_shape
    if n == 0:
        return [(slice(0, n), slice(0, c))]
    per_channel = max(1, ho * wo)
    if c * per_channel <= CHUNK_ELEMENTS:
        b = max(1, CHUNK_ELEMENTS // (c * per_channel))
        return [(slice(i, min(i + b, n)), slice(0, c)) for i in range(0, n, b)]
    cb = max(1, CHUNK_ELEMENTS // per_channel)
    return [(slice(i, i + 1), slice(j, min(j + cb, c))) for i in range(n) for j in range(0, c, cb)]


class _Cells:
    """The window cells of ``x`` as cell planes, one chunk of samples at a time.

    Where a cell plane has a unit-stride dimension (channels_last: the channels) the kernels
    read the input's planes and write the gradient's planes directly; otherwise (contiguous
    NCHW: every plane has stride ``kw`` along W, on which elementwise ops are several times
    slower than on dense data) the planes are copied into dense scratch buffers first and
    the gradient's planes are assembled in scratch buffers and copied out at the end.
    """

    def __init__(self, x: torch.Tensor, g: Geometry):
        self.x, self.geometry = x, g
        self.view, self.cropped = _tile_view(x, g)
        kh, kw = g.kernel
        self.cells = [(i, j) for i in range(kh) for j in range(kw)]
        self.n = len(self.cells)
        self.format = memory_format(x)
        first = self.view[:, :, :, 0, :, 0]
        self.direct = any(st == 1 and sz > 1 for st, sz in zip(first.stride(), first.shape))
        self.out_shape = tuple(first.shape)
        self.chunks = _chunks(self.out_shape, x.device)
        ns, cs = self.chunks[0]
        self.chunk_shape = (ns.stop - ns.start, cs.stop - cs.start) + self.out_shape[2:]
        self._views = self._planes(self.view)

    def scratch(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """A chunk-sized buffer in the input's layout (slice it with :func:`_fit`)."""
        return torch.empty(self.chunk_shape, dtype=dtype or self.x.dtype, device=self.x.device,
                           memory_format=self.format)

    def out(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """An output-sized tensor in the input's layout."""
        return torch.empty(self.out_shape, dtype=dtype or self.x.dtype, device=self.x.device,
                           memory_format=self.format)

    def _planes(self, view: torch.Tensor) -> list[torch.Tensor]:
        return [view[:, :, :, i, :, j] for i, j in self.cells]

    def io_buffers(self) -> tuple[list[torch.Tensor], list[torch.Tensor]] | None:
        """One worker's scratch planes for :meth:`load` and :meth:`targets` (None if direct)."""
        if self.direct:
            return None
        return [self.scratch() for _ in self.cells], [self.scratch() for _ in self.cells]

    def load(self, sl: tuple[slice, slice], io) -> list[torch.Tensor]:
        """The ``n`` cell planes of chunk ``sl``, read-only (views or scratch copies)."""
        planes = [p[sl] for p in self._views]
        if io is None:
            return planes
        dense = [_fit(p, planes[0]) for p in io[0]]
        for d, p in zip(dense, planes):
            d.copy_(p)
        return dense

    def grad_buffer(self) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The input gradient (cells cropped away are 0) and its cell planes."""
        grad = torch.zeros_like(self.x) if self.cropped else torch.empty_like(self.x)
        return grad, self._planes(_tile_view(grad, self.geometry)[0])

    def targets(self, grad_planes: list[torch.Tensor], sl: tuple[slice, slice],
                io) -> list[torch.Tensor]:
        """Where to write the gradient's cell planes for chunk ``sl``; then :meth:`flush`."""
        if io is None:
            return [p[sl] for p in grad_planes]
        ref = grad_planes[0][sl]
        return [_fit(p, ref) for p in io[1]]

    def flush(self, grad_planes: list[torch.Tensor], sl: tuple[slice, slice], io,
              written: list[torch.Tensor]) -> None:
        if io is not None:
            for dst, src in zip(grad_planes, written):
                dst[sl].copy_(src)


# Worker threads for the chunk loop: at most this many (and at most torch.get_num_threads()).
MAX_WORKERS = 8
_executor: ThreadPoolExecutor | None = None
_executor_key: tuple[int, int] | None = None


def _pool(workers: int) -> ThreadPoolExecutor:
    global _executor, _executor_key
    key = (os.getpid(), workers)  # a forked child gets its own threads
    if _executor_key != key:
        _executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="poolbench-fast")
        _executor_key = key
    return _executor


@contextlib.contextmanager
def _one_intra_op_thread():
    """Run the ops of the enclosed block on the calling thread only.

    Every op on a chunk is tiny; with intra-op threads each would open a parallel region and
    wait for all its threads: many times the op itself when the CPU is oversubscribed.
    OpenMP's thread count is per thread (other threads keep theirs); restored on exit.
    """
    threads = torch.get_num_threads()
    if threads > 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if threads > 1:
            torch.set_num_threads(threads)


def _for_chunks(cells: _Cells, body, scratch) -> None:
    """Call ``body(chunk, buffers)`` for every chunk, ``buffers = scratch()`` per worker.

    The chunks are shared out among up to ``torch.get_num_threads()`` threads (the caller
    and pool threads), each running its ops single-threaded: chunks are independent and
    write disjoint parts of the outputs, so the result does not depend on the split. The
    GIL is released inside every op, so the threads overlap.
    """
    chunks = cells.chunks
    workers = min(torch.get_num_threads(), len(chunks), MAX_WORKERS)
    # Grad and inference mode are thread-local: the workers must run in the caller's mode
    # (an output allocated under inference_mode, as in Lightning's test loop, may only be
    # written in inference mode).
    inference = torch.is_inference_mode_enabled()

    def work(part):
        with torch.inference_mode(inference), torch.no_grad(), _one_intra_op_thread():
            buffers = scratch()
            for sl in part:
                body(sl, buffers)

    if workers <= 1:
        if len(chunks) == 1:
            body(chunks[0], scratch())
        else:
            work(chunks)
        return
    size = -(-len(chunks) // workers)
    parts = [chunks[i:i + size] for i in range(0, len(chunks), size)]
    futures = [_pool(workers - 1).submit(work, part) for part in parts[1:]]
    try:
        work(parts[0])
    finally:
        for f in futures:
            f.result()


def _backward_by_cells(cells: _Cells, n_scratch: int, prepare) -> torch.Tensor:
    """The input gradient of a tiled pooling, written chunk by chunk and cell by cell.

    For each chunk, ``prepare(chunk, scratch)`` (``n_scratch`` chunk-sized buffers) does the
    per-chunk work and returns ``cell(i, v, dst)``, which writes the gradient of the chunk's
    cell ``i`` (its input values ``v``) into ``dst``.
    """
    grad, grad_planes = cells.grad_buffer()

    def scratch():
        return cells.io_buffers(), [cells.scratch() for _ in range(n_scratch)]

    def body(sl, buffers):
        io, bufs = buffers
        cell = prepare(sl, bufs)
        dsts = cells.targets(grad_planes, sl, io)
        for i, (v, dst) in enumerate(zip(cells.load(sl, io), dsts)):
            cell(i, v, dst)
        cells.flush(grad_planes, sl, io, dsts)

    _for_chunks(cells, body, scratch)
    return grad


def _fit(buf: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Chunk buffer ``buf`` cut to the shape of chunk ``ref`` (the last chunk may be smaller)."""
    return buf[: ref.shape[0], : ref.shape[1]]


# ------------------------------------------------------------------------- sorting network

_NETWORKS: dict[int, tuple[tuple[int, int], ...]] = {}


def sorting_network(n: int) -> tuple[tuple[int, int], ...]:
    """Comparators ``(i, j)``, ``i < j``, of Batcher's odd-even merge sort for ``n`` inputs.

    Applying ``(min, max)`` to positions ``(i, j)`` for every comparator in order sorts the
    values ascending. Built for the next power of two and pruned: padding the input with
    ``+inf`` at the end keeps those positions ``+inf``, so their comparators are no-ops.
    """
    if n in _NETWORKS:  # a plain dict, not lru_cache: dynamo traces through it silently
        return _NETWORKS[n]
    size = 1
    while size < n:
        size *= 2
    pairs: list[tuple[int, int]] = []
    p = 1
    while p < size:
        k = p
        while k >= 1:
            for j in range(k % p, size - k, 2 * k):
                for i in range(min(k, size - j - k)):
                    if (i + j) // (2 * p) == (i + j + k) // (2 * p):
                        pairs.append((i + j, i + j + k))
            k //= 2
        p *= 2
    _NETWORKS[n] = tuple((a, b) for a, b in pairs if b < n)
    return _NETWORKS[n]


def _sort(vals: list[torch.Tensor], bufs: list[torch.Tensor]) -> list[torch.Tensor]:
    """Sort the planes ``vals`` elementwise, ascending; returns the sorted planes.

    ``vals`` are read, never written; results go into the scratch planes ``bufs`` (``n + 1``
    of them suffice), reused as soon as a position's old value is dead.
    """
    vals, free = list(vals), list(bufs)
    owned = [False] * len(vals)
    for i, j in sorting_network(len(vals)):
        a, b = vals[i], vals[j]
        lo = torch.minimum(a, b, out=free.pop())
        if owned[j]:
            hi = torch.maximum(a, b, out=b)
            if owned[i]:
                free.append(a)
        elif owned[i]:
            hi = torch.maximum(a, b, out=a)
        else:
            hi = torch.maximum(a, b, out=free.pop())
        vals[i], vals[j] = lo, hi
        owned[i] = owned[j] = True
    return vals


def _max_into(out: torch.Tensor, vals: list[torch.Tensor]) -> torch.Tensor:
    if len(vals) == 1:
        return out.copy_(vals[0])
    torch.maximum(vals[0], vals[1], out=out)
    for v in vals[2:]:
        torch.maximum(out, v, out=out)
    return out


# ------------------------------------------------------------------------ functional path
# Under torch.compile and off CPU the same math runs as plain functional ops (no ``out=``,
# no chunks): the compiler fuses them, and a GPU's caching allocator makes temporaries cheap.

_functional_users = 0  # how many functional_path() blocks are open, in any thread
_functional_lock = threading.Lock()


@contextlib.contextmanager
def functional_path():
    """Inside the block, run the tile kernels on their functional path on CPU too.

    Same results, computed as plain functional ops (as under ``torch.compile`` and on a
    GPU) instead of CPU chunks on worker threads: to count the operators a GPU runs
    (``poolbench-bench gpu-hours``) and to test both paths. Process-wide, not per thread (a
    backward pass may run on autograd's threads and must take the forward's path): while
    any thread is inside a block, every thread takes the functional path. Blocks nest.
    """
    global _functional_users
    with _functional_lock:
        _functional_users += 1
    try:
        yield
    finally:
        with _functional_lock:
            _functional_users -= 1


def _chunked(x: torch.Tensor) -> bool:
    return (x.device.type == "cpu" and not _functional_users
            and not torch.compiler.is_compiling())


def _cell_planes(x: torch.Tensor, g: Geometry) -> list[torch.Tensor]:
    xv, _ = _tile_view(x, g)
    kh, kw = g.kernel
    return [xv[:, :, :, i, :, j] for i in range(kh) for j in range(kw)]


def _assemble(planes: list[torch.Tensor], x: torch.Tensor, g: Geometry) -> torch.Tensor:
    """The input-shaped tensor whose cell planes are ``planes`` (0 where cropped away)."""
    (kh, kw), (h, w) = g.kernel, x.shape[-2:]
    n, c, ho, wo = planes[0].shape
    t = torch.stack(planes, dim=-1).view(n, c, ho, wo, kh, kw)
    t = t.permute(0, 1, 2, 4, 3, 5).reshape(n, c, ho * kh, wo * kw)
    if ho * kh != h or wo * kw != w:
        t = torch.nn.functional.pad(t, (0, w - wo * kw, 0, h - ho * kh))
    return t.contiguous(memory_format=memory_format(x))


def _sorted(vals: list[torch.Tensor]) -> list[torch.Tensor]:
    vals = list(vals)
    for i, j in sorting_network(len(vals)):
        vals[i], vals[j] = torch.minimum(vals[i], vals[j]), torch.maximum(vals[i], vals[j])
    return vals


def _window_max(vals: list[torch.Tensor]) -> torch.Tensor:
    m = vals[0]
    for v in vals[1:]:
        m = torch.maximum(m, v)
    return m


def _sum(vals: list[torch.Tensor], dtype: torch.dtype) -> torch.Tensor:
    total = vals[0].to(dtype)
    for v in vals[1:]:
        total = total + v
    return total


# ------------------------------------------------------------------------------- top-K mean

def _topk_forward_chunked(x, g, k):
    cells = _Cells(x, g)
    n = cells.n
    acc_dtype = _acc_dtype(x.dtype)
    y, tau, rho = cells.out(), cells.out(), cells.out()

    def scratch():
        return (cells.io_buffers(), [cells.scratch() for _ in range(n + 2)],
                cells.scratch(acc_dtype) if acc_dtype != x.dtype else None)

    def body(sl, buffers):
        io, bufs, acc = buffers
        yc = y[sl]
        s = _sort(cells.load(sl, io), [_fit(b, yc) for b in bufs[:-1]])
        t = s[n - k]  # the K-th largest value
        tau[sl].copy_(t)
        # Mean of the K largest (summed in fp32 for 16-bit inputs).
        if acc is None:
            total = torch.add(s[n - 1], s[n - 2], out=yc)
        else:
            total = _fit(acc, yc).copy_(s[n - 1]).add_(s[n - 2])
        for v in s[n - k:n - 2]:
            total.add_(v)
        total.div_(k)
        if acc is not None:
            yc.copy_(total)
        # Ties at tau: the K largest hold 1 + e_top cells equal to tau, the others e_low;
        # each of those cells gets rho / K, rho = (1 + e_top) / (1 + e_top + e_low).
        top = torch.eq(s[n - 1], t, out=_fit(bufs[-1], yc))
        for v in s[n - k + 1:n - 1]:
            top.add_(v == t)
        top.add_(1.0)
        low = torch.eq(s[0], t, out=rho[sl])
        for v in s[1:n - k]:
            low.add_(v == t)
        torch.div(top, low.add_(top), out=low)

    _for_chunks(cells, body, scratch)
    return y, tau, rho


def _topk_forward_functional(x, g, k):
    s = _sorted(_cell_planes(x, g))
    n = len(s)
    t = s[n - k]
    y = (_sum(s[n - k:], _acc_dtype(x.dtype)) / k).to(x.dtype)
    top = 1.0 + _sum([v == t for v in s[n - k + 1:]], x.dtype)  # 2 <= k <= n - 1
    low = _sum([v == t for v in s[:n - k]], x.dtype)
    return y, t, top / (top + low)


def _topk_backward_chunked(x, g, k, grad_out, tau, rho):
    cells = _Cells(x, g)
    grad_out = in_format(grad_out, cells.format)

    def prepare(sl, bufs):
        a_buf, b_buf, m_buf, e_buf = bufs
        go, t = grad_out[sl], tau[sl]
        a = torch.div(go, k, out=_fit(a_buf, go))
        b = torch.mul(rho[sl], a, out=_fit(b_buf, go))
        mask, e = _fit(m_buf, go), _fit(e_buf, go)

        def cell(i, v, dst):
            torch.gt(v, t, out=mask)
            torch.eq(v, t, out=e).mul_(b)
            torch.addcmul(e, mask, a, out=dst)
        return cell

    return _backward_by_cells(cells, 4, prepare)


def _topk_backward_functional(x, g, k, grad_out, tau, rho):
    a = grad_out / k
    b = rho * a
    planes = [(v > tau) * a + (v == tau) * b for v in _cell_planes(x, g)]
    return _assemble(planes, x, g)


class _TopKMeanTiles(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, g: Geometry, k: int):
        fwd = _topk_forward_chunked if _chunked(x) else _topk_forward_functional
        y, tau, rho = fwd(x, g, k)
        ctx.save_for_backward(x, tau, rho)
        ctx.geometry, ctx.k = g, k
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        # dY/dx_i = 1/K if x_i > tau (the K-th largest value), rho/K if x_i == tau, else 0.
        x, tau, rho = ctx.saved_tensors
        bwd = _topk_backward_chunked if _chunked(x) else _topk_backward_functional
        return bwd(x, ctx.geometry, ctx.k, grad_out, tau, rho), None, None


def topk_mean_tiles(x: torch.Tensor, g: Geometry, k: int) -> torch.Tensor:
    """Mean of the ``k`` largest values of each window (``k >= 2``); requires
    ``functional.can_tile(x, g)``."""
    return _TopKMeanTiles.apply(x, g, k)


# --------------------------------------------------------------------------------- SoftPool

def _soft_forward_chunked(x, g):
    cells = _Cells(x, g)
    y, m, s, q = cells.out(), cells.out(), cells.out(), cells.out()

    def scratch():
        return cells.io_buffers(), cells.scratch(), cells.scratch()

    def body(sl, buffers):
        io, d_buf, e_buf = buffers
        planes = cells.load(sl, io)
        mc, sc, qc = m[sl], s[sl], q[sl]
        _max_into(mc, planes)
        d, e = _fit(d_buf, mc), _fit(e_buf, mc)
        for idx, v in enumerate(planes):
            torch.sub(v, mc, out=d)  # <= 0: no overflow
            if idx == 0:
                torch.exp(d, out=sc)
                torch.mul(d, sc, out=qc)
            else:
                torch.exp(d, out=e)
                sc.add_(e)
                qc.addcmul_(d, e)
        qc.div_(sc)  # Y - m, in [-0.37 * n, 0]
        torch.add(mc, qc, out=y[sl])

    _for_chunks(cells, body, scratch)
    return y, m, s, q


def _soft_forward_functional(x, g):
    planes = _cell_planes(x, g)
    m = _window_max(planes)
    ds = [v - m for v in planes]
    es = [d.exp() for d in ds]
    s = _sum(es, x.dtype)
    q = _sum([e * d for e, d in zip(es, ds)], x.dtype) / s
    return m + q, m, s, q


def _soft_backward_chunked(x, g, grad_out, m, s, q):
    cells = _Cells(x, g)
    grad_out = in_format(grad_out, cells.format)

    def prepare(sl, bufs):
        gs_buf, c_buf, d_buf, e_buf = bufs
        go, mc = grad_out[sl], m[sl]
        gs = torch.div(go, s[sl], out=_fit(gs_buf, go))
        c = torch.sub(1.0, q[sl], out=_fit(c_buf, go))
        d, e = _fit(d_buf, go), _fit(e_buf, go)

        def cell(i, v, dst):
            torch.sub(v, mc, out=d)
            torch.exp(d, out=e)
            d.add_(c).mul_(e)
            torch.mul(d, gs, out=dst)
        return cell

    return _backward_by_cells(cells, 4, prepare)


def _soft_backward_functional(x, g, grad_out, m, s, q):
    gs, c = grad_out / s, 1.0 - q
    planes = []
    for v in _cell_planes(x, g):
        d = v - m
        planes.append(gs * d.exp() * (d + c))
    return _assemble(planes, x, g)


class _SoftPoolTiles(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, g: Geometry):
        fwd = _soft_forward_chunked if _chunked(x) else _soft_forward_functional
        y, m, s, q = fwd(x, g)
        ctx.save_for_backward(x, m, s, q)
        ctx.geometry = g
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        # dY/dx_i = e_i / s * (1 + d_i - q) with d_i = x_i - m, e_i = exp(d_i), q = Y - m.
        x, m, s, q = ctx.saved_tensors
        bwd = _soft_backward_chunked if _chunked(x) else _soft_backward_functional
        return bwd(x, ctx.geometry, grad_out, m, s, q), None


def soft_pool_tiles(x: torch.Tensor, g: Geometry) -> torch.Tensor:
    """SoftPool of each window; requires ``functional.can_tile(x, g)``."""
    return _SoftPoolTiles.apply(x, g)


# ------------------------------------------------------------------------------ max and mean

def _max_avg_forward_chunked(x, g):
    cells = _Cells(x, g)
    acc_dtype = _acc_dtype(x.dtype)
    m, a = cells.out(), cells.out()

    def scratch():
        return cells.io_buffers(), cells.scratch(acc_dtype) if acc_dtype != x.dtype else None

    def body(sl, buffers):
        io, acc = buffers
        planes = cells.load(sl, io)
        ac = a[sl]
        _max_into(m[sl], planes)
        total = ac if acc is None else _fit(acc, ac)
        if acc is None and cells.n > 1:
            torch.add(planes[0], planes[1], out=total)
            rest = planes[2:]
        else:
            total.copy_(planes[0])
            rest = planes[1:]
        for v in rest:
            total.add_(v)
        total.div_(cells.n)
        if acc is not None:
            ac.copy_(total)

    _for_chunks(cells, body, scratch)
    return m, a


def _max_avg_forward_functional(x, g):
    planes = _cell_planes(x, g)
    return _window_max(planes), (_sum(planes, _acc_dtype(x.dtype)) / len(planes)).to(x.dtype)


def _max_avg_backward_chunked(x, g, grad_m, grad_a, m):
    cells = _Cells(x, g)
    grad_m = in_format(grad_m, cells.format)
    grad_a = in_format(grad_a, cells.format)
    last = cells.n - 1

    def prepare(sl, bufs):
        rest_buf, left_buf, h_buf = bufs
        mc = m[sl]
        rest = torch.div(grad_a[sl], cells.n, out=_fit(rest_buf, mc))
        left = _fit(left_buf, mc).copy_(grad_m[sl])
        h = _fit(h_buf, mc)

        def cell(i, v, dst):
            torch.eq(v, mc, out=h).mul_(left)
            if i < last:
                left.sub_(h)
            torch.add(h, rest, out=dst)
        return cell

    return _backward_by_cells(cells, 3, prepare)


def _max_avg_backward_functional(x, g, grad_m, grad_a, m):
    planes = _cell_planes(x, g)
    rest, left = grad_a / len(planes), grad_m
    out = []
    for v in planes:
        h = (v == m) * left
        left = left - h
        out.append(h + rest)
    return _assemble(out, x, g)


class _MaxAvgTiles(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, g: Geometry):
        fwd = _max_avg_forward_chunked if _chunked(x) else _max_avg_forward_functional
        m, a = fwd(x, g)
        ctx.save_for_backward(x, m)
        ctx.geometry = g
        return m, a

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_m, grad_a):
        # Mean: grad_a / n to every cell. Max: grad_m to the first maximal cell of the window
        # in row-major order (as native max pooling): ``left`` is grad_m until a maximal
        # cell has been met, 0 afterwards.
        x, m = ctx.saved_tensors
        bwd = _max_avg_backward_chunked if _chunked(x) else _max_avg_backward_functional
        return bwd(x, ctx.geometry, grad_m, grad_a, m), None


def max_avg_tiles(x: torch.Tensor, g: Geometry) -> tuple[torch.Tensor, torch.Tensor]:
    """``(max, mean)`` of each window; requires ``functional.can_tile(x, g)``."""
    return _MaxAvgTiles.apply(x, g)

"""``poolbench-bench overhead --compile``: the training-step overhead of every method relative
to max pooling, eager and ``torch.compile``'d, side by side in one run.

Each method is built twice from the same seed: an eager model and one compiled in place
(:func:`poolbench.speed.compile_model`, inductor, ``--compile-mode``). The first step of a
compiled model compiles it; that step is timed on its own (``compile_s``: tracing plus code
generation of forward and backward, with the inductor cache as it is) and left out of the
step times. Then the usual warm-up and the interleaved round-robin timing of
:mod:`poolbench.bench.overhead` run over *all* the models, eager and compiled, so both
columns see the same drift of the machine. Ratios: eager methods against eager max
pooling, compiled methods against compiled max pooling (the overhead a compiled run
pays), and ``x eager``: a compiled method's step time over its eager step time.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from ..pooling import available_pools
from ..speed import compile_model
from .report import md_table
from .timing import fit_repeats, median_ratio

EAGER = "eager"
#: The issue's target with compile: each of the paper's methods at most 5 % over max pooling.
COMPILE_TARGET = 1.05
COLUMNS = ("compile", "compile_s", "step_ratio_vs_eager")


def _compile_entries(entries, stepper, mode: str, log) -> dict[str, float]:
    """Compile every built entry in place and run its first step (which compiles);
    seconds of that step by method. A method that fails to compile keeps the error."""
    compile_s: dict[str, float] = {}
    for e in entries:
        if e.error:
            continue
        try:
            compile_model(e.model, {"backend": "inductor", "mode": mode})
            t0 = time.perf_counter()
            stepper.run(e, 1)
            compile_s[e.method] = time.perf_counter() - t0
            log(f"  {e.method}: compiled in {compile_s[e.method]:.1f} s (first step)")
        except Exception as exc:  # noqa: BLE001 - reported in the table
            e.error = f"compile failed: {type(exc).__name__}: {exc}"
            log(f"  {e.method}: {e.error}")
    return compile_s


def bench_model(model_name: str, cfg, device, precision: str, clock: str,
                methods: Sequence[str], log) -> list[dict]:
    """Rows of every method of ``model_name``, eager then compiled (``compile`` column)."""
    from . import overhead_step as ov

    mf = ov.MEMORY_FORMATS[cfg.memory_format]
    stepper = ov._Stepper(device, precision, *ov._fixed_batch(cfg, device, mf))
    eager = ov._build_entries(model_name, methods, cfg, device, precision, mf, log)
    compiled = ov._build_entries(model_name, methods, cfg, device, precision, mf, log)
    compile_s = _compile_entries(compiled, stepper, cfg.compile_mode, log)
    est = {}
    for variant, entries in ((EAGER, eager), (cfg.compile_mode, compiled)):
        for method, s in ov._warm_up(entries, stepper, cfg.warmup, clock, log).items():
            est[(variant, method)] = s
    live_e = [e for e in eager if e.error is None]
    live_c = [e for e in compiled if e.error is None]
    for live in (live_e, live_c):
        if not live or live[0].method != ov.BASELINE:
            raise RuntimeError(f"the baseline ({ov.BASELINE}) failed on {model_name}")
    round_s = cfg.number * sum(est.values())
    repeats = fit_repeats(cfg.repeats, cfg.min_repeats, cfg.budget_s, round_s)
    log(f"  {len(live_e)} eager + {len(live_c)} compiled models, {repeats} repeats x "
        f"{cfg.number} step(s), ~{round_s:.1f} s per round, ~{round_s * repeats:.0f} s")
    ov._time_interleaved(live_e + live_c, stepper, cfg.number, repeats, clock, log)
    setting = dict(device=device.type, model=model_name, batch=cfg.batch,
                   image_size=cfg.image_size, width=cfg.width if cfg.width is not None else 64,
                   precision=precision, memory_format=cfg.memory_format, clock=clock,
                   repeats=repeats, number=cfg.number)
    rows = [{**ov._row(e, live_e[0], setting, clock), "compile": EAGER} for e in eager]
    by_method = {e.method: e for e in live_e}
    for e in compiled:
        row = {**ov._row(e, live_c[0], setting, clock), "compile": cfg.compile_mode,
               "compile_s": compile_s.get(e.method, float("nan"))}
        if e.error is None and e.method in by_method:
            row["step_ratio_vs_eager"] = median_ratio(e.steps(clock),
                                                      by_method[e.method].steps(clock))
        rows.append(row)
    return rows


def has_compiled(rows: Sequence[dict]) -> bool:
    return any(r.get("compile") not in (None, "", EAGER) for r in rows)


def side_by_side(rows: Sequence[dict]) -> tuple[list[str], list[list[str]]]:
    """Header and cells: per model and method, overhead eager vs compiled, the compiled
    step's speed-up over eager, compile time, and whether the compile target is met."""
    paper = set(available_pools(paper_only=True))
    head = ["model", "method", "eager x max", "compiled x max", "compiled x eager",
            "eager ms", "compiled ms", "compile s", "target <= 1.05"]
    cells = []
    models = list(dict.fromkeys(r["model"] for r in rows))
    for model in models:
        eager = {r["method"]: r for r in rows if r["model"] == model and r["compile"] == EAGER}
        comp = {r["method"]: r for r in rows if r["model"] == model and r["compile"] != EAGER}
        for method, c in comp.items():
            e = eager.get(method, {})
            if "step_ratio" not in c:
                cells.append([model, method, _f(e.get("step_ratio")), c.get("error", "?"),
                              "", "", "", "", ""])
                continue
            target = ("" if method not in paper or method == "max" else
                      "yes" if c["step_ratio"] <= COMPILE_TARGET else "**no**")
            cells.append([model, method, _f(e.get("step_ratio")), _f(c["step_ratio"]),
                          _f(c.get("step_ratio_vs_eager")), _f(e.get("step_ms"), 1),
                          _f(c["step_ms"], 1), _f(c.get("compile_s"), 1), target])
    return head, cells


def _f(v, digits=3) -> str:
    if v is None or v != v:  # missing or NaN
        return "n/a"
    return f"{v:.{digits}f}"


def markdown_section(rows: Sequence[dict]) -> list[str]:
    """The side-by-side section of ``overhead.md`` (empty without compiled rows)."""
    if not has_compiled(rows):
        return []
    head, cells = side_by_side(rows)
    return ["## Eager vs torch.compile, side by side", "",
            "`x max`: median over repeats of the step time over max pooling's in the same "
            "repeat and variant; `compiled x eager`: the compiled step over the eager step of "
            "the same method; `compile s`: the first compiled step (tracing, code "
            "generation, forward and backward). Target: each paper method compiled "
            f"<= {COMPILE_TARGET:.2f} x compiled max pooling.", "", md_table(head, cells), ""]

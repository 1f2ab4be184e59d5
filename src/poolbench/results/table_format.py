"""How a table is written: :class:`Table` (display cells plus the numbers behind them) as
Markdown, LaTeX (booktabs) and CSV, the cell formatters the tables share (mean ± std, signed
differences, p-values, counts; the best of a column) and Markdown and LaTeX escaping."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd


# ---- the Table object ----------------------------------------------------------------

@dataclass
class Table:
    """A table ready to write: display cells plus the numbers behind them.

    ``columns``: (group, label) per column (group ``""`` for none); ``rows``: cell text;
    ``bold``: which cells to emphasise (best per column); ``data``: numeric long form (CSV).
    """

    name: str
    title: str
    caption: str
    columns: list[tuple[str, str]]
    rows: list[list[str]]
    data: pd.DataFrame
    bold: list[list[bool]] | None = None
    notes: list[str] = field(default_factory=list)

    def _bold(self, i, j) -> bool:
        return bool(self.bold and self.bold[i][j])

    def markdown(self) -> str:
        head = [f"{g}: {c}" if g else c for g, c in self.columns]
        n_text = _n_text_cols(self.columns)
        lines = [f"**{self.title}.** {self.caption}", "",
                 "| " + " | ".join(md(h) for h in head) + " |",
                 "|" + "|".join(":---" if j < n_text else "---:" for j in range(len(head))) + "|"]
        for i, row in enumerate(self.rows):
            cells = [f"**{md(c)}**" if self._bold(i, j) and c else md(c)
                     for j, c in enumerate(row)]
            lines.append("| " + " | ".join(cells) + " |")
        if self.notes:
            lines.append("")
            lines += [f"- {n}" for n in self.notes]
        return "\n".join(lines) + "\n"

    def latex(self) -> str:
        ncol = len(self.columns)
        spec = "l" * _n_text_cols(self.columns) + "r" * (ncol - _n_text_cols(self.columns))
        out = [r"\begin{table}[t]", r"\centering", r"\small",
               rf"\caption{{{tex(self.title)}. {tex(self.caption)}}}",
               rf"\label{{tab:{self.name.replace('_', '-')}}}",
               rf"\begin{{tabular}}{{{spec}}}", r"\toprule"]
        groups = [g for g, _ in self.columns]
        if any(groups):
            spans, rules, j = [], [], 0
            while j < ncol:
                k = j
                while k + 1 < ncol and groups[k + 1] == groups[j]:
                    k += 1
                n = k - j + 1
                if groups[j]:
                    spans.append(rf"\multicolumn{{{n}}}{{c}}{{{tex(groups[j])}}}")
                    rules.append(rf"\cmidrule(lr){{{j + 1}-{k + 1}}}")
                else:
                    spans += [""] * n
                j = k + 1
            out.append(" & ".join(spans) + r" \\")
            out.append(" ".join(rules))
        out.append(" & ".join(tex(c) for _, c in self.columns) + r" \\")
        out.append(r"\midrule")
        for i, row in enumerate(self.rows):
            cells = [rf"\textbf{{{tex(c)}}}" if self._bold(i, j) and c else tex(c)
                     for j, c in enumerate(row)]
            out.append(" & ".join(cells) + r" \\")
        out += [r"\bottomrule", r"\end{tabular}"]
        if self.notes:
            out.append(r"\par\smallskip{\footnotesize " +
                       r" \\ ".join(tex(n) for n in self.notes) + "}")
        out.append(r"\end{table}")
        return "\n".join(out) + "\n"

    def csv(self) -> str:
        df = self.data.copy()
        for c in df.columns:
            if df[c].map(lambda v: isinstance(v, (dict, list))).any():
                df[c] = df[c].map(lambda v: json.dumps(v) if isinstance(v, (dict, list)) else v)
        return df.to_csv(index=False)

    def write(self, out_dir: str | Path) -> list[Path]:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        paths = []
        for ext, text in (("md", self.markdown()), ("tex", self.latex()), ("csv", self.csv())):
            p = out_dir / f"{self.name}.{ext}"
            p.write_text(text)
            paths.append(p)
        return paths


def _n_text_cols(columns) -> int:
    """How many leading columns hold text (left-aligned): the label columns, at least one."""
    n = 0
    for g, c in columns:
        if g or c.lower() not in ("method", "data", "model", "dataset", "k \\ t", "seeds"):
            break
        n += 1
    return max(1, n)


# ---- escaping ----------------------------------------------------------------------------

def md(s: str) -> str:
    """Text for a Markdown table cell (``|`` escaped)."""
    return str(s).replace("|", "\\|")


_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
        "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\^{}",
        "±": r"$\pm$", "Δ": r"$\Delta$", "†": r"\textsuperscript{\dag}", "×": r"$\times$",
        "−": "-", "—": "--", "–": "--", "≥": r"$\geq$", "≠": r"$\neq$", "<": r"$<$",
        ">": r"$>$"}


def tex(s: str) -> str:
    """Text for LaTeX: special characters escaped, unicode symbols as math."""
    return "".join(_TEX.get(ch, ch) for ch in str(s))


# ---- cell formatters -------------------------------------------------------------------

def mean_std(mean, std, digits: int = 2, scale: float = 100.0) -> str:
    if mean is None or not np.isfinite(mean):
        return "—"
    s = f"{scale * mean:.{digits}f}"
    if std is not None and np.isfinite(std):
        s += f" ± {scale * std:.{digits}f}"
    return s


def signed(x, digits: int = 2, scale: float = 100.0) -> str:
    if x is None or not np.isfinite(x):
        return "—"
    v = scale * x
    return f"{v:+.{digits}f}".replace("+-", "-") if round(v, digits) != 0 else f"{0:.{digits}f}"


def pval(p) -> str:
    if p is None or not isinstance(p, (int, float, np.floating)) or not np.isfinite(p):
        return "—"
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def best_mask(values: list[float]) -> list[bool]:
    seen = [v for v in values if v is not None and np.isfinite(v)]
    if not seen:
        return [False] * len(values)
    top = max(seen)
    return [v is not None and np.isfinite(v) and math.isclose(v, top, rel_tol=0, abs_tol=1e-12)
            for v in values]


def finite(x) -> bool:
    try:
        return x is not None and np.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def int_text(x) -> str:
    return str(int(x)) if finite(x) else "—"


def num_text(x, digits=2) -> str:
    if not finite(x):
        return "—" if not (x is not None and isinstance(x, float) and np.isinf(x)) else \
            ("∞" if x > 0 else "-∞")
    return f"{float(x):.{digits}f}"

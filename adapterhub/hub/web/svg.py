"""Server-drawn SVG: the lineage graph (parents -> adapter -> children, each node a link) and one bar chart per
metric for the compare page. Built as markup with every text escaped; no script, no style attributes (CSP)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from html import escape

from markupsafe import Markup

NODE_W, NODE_H, GAP_Y, COL_GAP = 210, 44, 14, 70


@dataclass(frozen=True)
class Node:
    label: str  # first line: a name
    sub: str  # second line: version, method or weight
    href: str | None  # None: not a page on this hub (e.g. a base that is not registered here)
    kind: str  # "parent" | "self" | "child" | "base"


def _clip(text: str, n: int = 28) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _node(x: int, y: int, node: Node) -> str:
    box = (
        f'<rect x="{x}" y="{y}" width="{NODE_W}" height="{NODE_H}" rx="6" class="node node-{node.kind}"/>'
        f'<text x="{x + 10}" y="{y + 18}" class="node-label">{escape(_clip(node.label))}</text>'
        f'<text x="{x + 10}" y="{y + 35}" class="node-sub">{escape(_clip(node.sub, 34))}</text>'
    )
    if node.href is None:
        return f"<g><title>{escape(node.label)}</title>{box}</g>"
    return f'<a href="{escape(node.href)}" class="node-link"><title>{escape(node.label)}</title>{box}</a>'


def lineage_graph(parents: list[Node], me: Node, children: list[Node]) -> Markup:
    """Three columns: parents on the left, the adapter in the middle, children on the right, joined by edges."""
    rows = max(len(parents), len(children), 1)
    height = rows * (NODE_H + GAP_Y) + GAP_Y
    cols = [c for c in (parents, [me], children) if c]
    width = len(cols) * NODE_W + (len(cols) - 1) * COL_GAP + 20
    xs = {id(c): 10 + i * (NODE_W + COL_GAP) for i, c in enumerate(cols)}

    def ys(column: list[Node]) -> list[int]:
        top = (height - len(column) * (NODE_H + GAP_Y) + GAP_Y) // 2
        return [top + i * (NODE_H + GAP_Y) for i in range(len(column))]

    me_x, me_y = xs[id(cols[1 if parents else 0])], ys([me])[0]
    parts: list[str] = []
    if parents:
        px = xs[id(parents)]
        for y in ys(parents):
            parts.append(
                f'<line x1="{px + NODE_W}" y1="{y + NODE_H // 2}" x2="{me_x}" y2="{me_y + NODE_H // 2}" class="edge" marker-end="url(#arrow)"/>'
            )
    if children:
        cx = xs[id(children)]
        for y in ys(children):
            parts.append(
                f'<line x1="{me_x + NODE_W}" y1="{me_y + NODE_H // 2}" x2="{cx}" y2="{y + NODE_H // 2}" class="edge" marker-end="url(#arrow)"/>'
            )
    for column in cols:
        for y, node in zip(ys(column), column):
            parts.append(_node(xs[id(column)], y, node))
    defs = (
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" orient="auto">'
        '<path d="M0,0 L10,5 L0,10 z" class="arrow"/></marker></defs>'
    )
    return Markup(
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" class="lineage" '
        f'role="img" aria-label="lineage graph">{defs}{"".join(parts)}</svg>'
    )


def bar_chart(metric: str, bars: list[tuple[str, float | None]], *, higher_is_better: bool = True) -> Markup:
    """Horizontal bars, one per adapter, scaled from 0 (or the lowest negative value) to the highest value."""
    label_w, bar_w, row_h = 190, 300, 26
    values = [v for _, v in bars if v is not None and math.isfinite(v)]
    lo, hi = min([0.0, *values]), max([0.0, *values])
    span = (hi - lo) or 1.0
    best = (max(values) if higher_is_better else min(values)) if values else None
    height = len(bars) * row_h + 30
    parts = [f'<text x="0" y="16" class="chart-title">{escape(metric)}{"" if higher_is_better else " (lower is better)"}</text>']
    zero_x = label_w + (0 - lo) / span * bar_w
    for i, (label, value) in enumerate(bars):
        y = 26 + i * row_h
        parts.append(
            f'<text x="{label_w - 8}" y="{y + 16}" class="bar-label" text-anchor="end">{escape(_clip(label, 26))}</text>'
        )
        if value is None or not math.isfinite(value):
            parts.append(f'<text x="{label_w + 4}" y="{y + 16}" class="bar-value">no score</text>')
            continue
        x0, x1 = sorted((zero_x, label_w + (value - lo) / span * bar_w))
        cls = "bar bar-best" if value == best else "bar"
        parts.append(
            f'<rect x="{x0:.1f}" y="{y + 3}" width="{max(x1 - x0, 1):.1f}" height="{row_h - 8}" class="{cls}"><title>{escape(label)}: {value:.4g}</title></rect>'
        )
        parts.append(f'<text x="{max(x1, zero_x) + 6:.1f}" y="{y + 16}" class="bar-value">{value:.4g}</text>')
    width = label_w + bar_w + 70
    return Markup(
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" class="chart" '
        f'role="img" aria-label="{escape(metric)} per adapter">{"".join(parts)}</svg>'
    )

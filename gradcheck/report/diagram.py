"""A graph drawn as a small inline SVG: leaves on the left, each node one column
right of its deepest input, edges as lines, the failing tensor and the op under
test marked.  Plain text in, escaped; nothing fetched."""

from __future__ import annotations

from html import escape

__all__ = ["graph_svg"]

BOX_W, BOX_H, GAP_X, GAP_Y = 118, 30, 34, 10
MAX_NODES = 40  # a bigger graph is listed, not drawn


def _depths(graph: dict) -> dict:
    depth = {leaf["name"]: 0 for leaf in graph.get("leaves", ())}
    for node in graph.get("nodes", ()):
        depth[node["name"]] = 1 + max((depth.get(i, 0) for i in node.get("inputs", ())), default=0)
    return depth


def graph_svg(graph: dict, tensor: str = "", op: str = "") -> str:
    """``graph`` (parsed Graph JSON) as an SVG element; "" for what is not a graph."""
    nodes = graph.get("nodes") or []
    leaves = graph.get("leaves") or []
    if not nodes or len(nodes) + len(leaves) > MAX_NODES:
        return ""
    depth = _depths(graph)
    columns: dict = {}
    labels = {}
    for leaf in leaves:
        columns.setdefault(0, []).append(leaf["name"])
        shape = "x".join(str(d) for d in leaf.get("shape", ())) or "scalar"
        labels[leaf["name"]] = (leaf["name"], f"{leaf.get('role', '')} [{shape}]", "leaf")
    for node in nodes:
        columns.setdefault(depth[node["name"]], []).append(node["name"])
        labels[node["name"]] = (node["name"], node.get("op", ""), "node")
    pos = {}
    for col, names in columns.items():
        for row, name in enumerate(names):
            pos[name] = (col * (BOX_W + GAP_X), row * (BOX_H + GAP_Y))
    width = (max(columns) + 1) * (BOX_W + GAP_X) - GAP_X
    height = max(len(v) for v in columns.values()) * (BOX_H + GAP_Y) - GAP_Y
    parts = [f"<svg class='graph' width='{width + 4}' height='{height + 4}' "
             f"viewBox='-2 -2 {width + 4} {height + 4}' role='img' aria-label='graph of the case'>"]
    for node in nodes:
        x1, y1 = pos[node["name"]]
        for i in node.get("inputs", ()):
            if i in pos:
                x0, y0 = pos[i]
                parts.append(f"<line x1='{x0 + BOX_W}' y1='{y0 + BOX_H / 2}' x2='{x1}' y2='{y1 + BOX_H / 2}' "
                             f"stroke='#999' stroke-width='1'/>")
    for name, (x, y) in pos.items():
        title, sub, kind = labels[name]
        hit = name == tensor
        under = kind == "node" and sub == op
        fill = "#fdecea" if hit else "#fff7e0" if under else "#f4f6f8" if kind == "leaf" else "#ffffff"
        stroke = "#c0392b" if hit else "#d68910" if under else "#7f8c8d"
        parts.append(f"<g><title>{escape(title)}: {escape(sub)}</title>"
                     f"<rect x='{x}' y='{y}' width='{BOX_W}' height='{BOX_H}' rx='4' fill='{fill}' stroke='{stroke}' "
                     f"stroke-width='{2 if hit or under else 1}'/>"
                     f"<text x='{x + 5}' y='{y + 12}' font-size='10' font-weight='bold'>{escape(title[:20])}</text>"
                     f"<text x='{x + 5}' y='{y + 25}' font-size='9' fill='#555'>{escape(sub[:22])}</text></g>")
    parts.append("</svg>")
    return "".join(parts)

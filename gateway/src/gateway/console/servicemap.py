"""The service map: the gateway and the services as boxes, the calls and messages seen between
them as arrows, laid out once from the topology so the picture does not jump about.

The gateway is on the left; each service stands in a column by how deep its dependencies go, the
ones depending on most nearest the gateway (``orders``), the ones depending on nothing furthest
(``identity``), so calls mostly run left to right. Geometry is worked out here and drawn as SVG by
the template and, on every refresh, by ``console.js`` from the same numbers.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from agora.topology import Topology
from gateway.console.metrics import EdgeKind, Flow

GATEWAY = "gateway"
NODE_WIDTH = 120
NODE_HEIGHT = 36
COLUMN = 180  # from one column's left edge to the next's
ROW = 64
MARGIN = 24
# Colours told apart on a light and a dark background; a service keeps its colour everywhere.
PALETTE = (
    "#4e79a7",
    "#f28e2b",
    "#59a14f",
    "#e15759",
    "#76b7b2",
    "#edc948",
    "#b07aa1",
    "#ff9da7",
    "#9c755f",
    "#bab0ac",
)


def colours(topology: Topology) -> dict[str, str]:
    names = [GATEWAY, *(service.name for service in topology)]
    return {name: PALETTE[index % len(PALETTE)] for index, name in enumerate(names)}


def colour_of(palette: Mapping[str, str], name: str) -> str:
    return palette.get(name) or PALETTE[sum(name.encode()) % len(PALETTE)]


@dataclass(frozen=True, slots=True)
class Node:
    name: str
    x: float
    y: float
    colour: str

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Edge(Flow):
    """A flow (its rate per second now; None before two scrapes) as an arrow on the map."""

    path: str  # SVG path data
    label_x: float
    label_y: float
    low: float = 0.0
    high: float = 0.0

    @property
    def active(self) -> bool:
        return bool(self.rate)

    @property
    def label(self) -> str:
        return "—" if self.rate is None else f"{self.rate:.1f}/s"

    def as_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "target": self.target,
            "kind": self.kind,
            "total": self.total,
            "rate": self.rate,
            "active": self.active,
            "label": self.label,
            "path": self.path,
            "label_x": self.label_x,
            "label_y": self.label_y,
        }


@dataclass(frozen=True, slots=True)
class ServiceMap:
    width: float
    height: float
    nodes: tuple[Node, ...]
    edges: tuple[Edge, ...]

    def as_json(self) -> dict[str, Any]:
        return {
            "width": self.width,
            "height": self.height,
            "node_width": NODE_WIDTH,
            "node_height": NODE_HEIGHT,
            "nodes": [node.as_json() for node in self.nodes],
            "edges": [edge.as_json() for edge in self.edges],
        }


def columns(topology: Topology) -> dict[str, int]:
    """The column of the gateway (0) and of each service."""
    depth: dict[str, int] = {}
    for service in topology.start_order():  # each after what it depends on
        depth[service.name] = 1 + max((depth[d] for d in service.depends_on), default=-1)
    deepest = max(depth.values(), default=0)
    return {GATEWAY: 0, **{name: 1 + deepest - d for name, d in depth.items()}}


def combine(flows: Iterable[Flow]) -> list[Flow]:
    """One flow per (source, target, kind), summed over the replicas that counted it."""
    totals: dict[tuple[str, str, EdgeKind], float] = defaultdict(float)
    rates: dict[tuple[str, str, EdgeKind], float | None] = {}
    for flow in flows:
        key = (flow.source, flow.target, flow.kind)
        totals[key] += flow.total
        known = rates.get(key)
        if flow.rate is not None:
            rates[key] = (known or 0.0) + flow.rate
        else:
            rates.setdefault(key, None)
    return [Flow(s, t, k, total, rates[(s, t, k)]) for (s, t, k), total in totals.items()]


def draw(topology: Topology, flows: Sequence[Flow]) -> ServiceMap:
    column_of = columns(topology)
    names = [GATEWAY, *(service.name for service in topology)]
    strangers = sorted({name for flow in flows for name in (flow.source, flow.target)} - set(names))
    last = max(column_of.values()) + 1
    for name in strangers:  # a peer outside the topology: a column of its own, on the right
        column_of[name] = last
        names.append(name)
    in_column: dict[int, list[str]] = defaultdict(list)
    for name in names:
        in_column[column_of[name]].append(name)
    tallest = max(len(members) for members in in_column.values())
    boxes = tallest * ROW - (ROW - NODE_HEIGHT)
    width = 2 * MARGIN + max(in_column) * COLUMN + NODE_WIDTH
    palette = colours(topology)
    ordered = sorted(flows, key=lambda f: (f.source, f.target, f.kind))

    def place(top: float, height: float) -> tuple[dict[str, Node], list[Edge]]:
        nodes: dict[str, Node] = {}
        for column, members in in_column.items():
            # Each column centred on the same line, so the gateway sits level with the middle.
            first = top + (boxes - (len(members) * ROW - (ROW - NODE_HEIGHT))) / 2
            for row, name in enumerate(members):
                x = MARGIN + column * COLUMN
                nodes[name] = Node(name, x, first + row * ROW, colour_of(palette, name))
        return nodes, _edges(nodes, ordered)

    # Long arrows arc over (or under) the boxes between: make room for them above and below.
    _, trial = place(MARGIN, 2 * MARGIN + boxes)
    above = max([MARGIN, *(MARGIN - edge.low for edge in trial)])
    below = max([MARGIN, *(edge.high - (MARGIN + boxes) for edge in trial)])
    height = above + boxes + below
    nodes, edges = place(above, height)
    return ServiceMap(width, height, tuple(nodes.values()), tuple(edges))


def _sides(source: Node, target: Node) -> tuple[str, str]:
    """Which side of each box an arrow leaves and enters by."""
    if target.x > source.x:
        return "right", "left"
    if target.x < source.x:
        return "left", "right"
    return "right", "right"  # same column (or itself): round the right-hand side


def _edges(nodes: Mapping[str, Node], flows: Sequence[Flow]) -> list[Edge]:
    """The arrows, each leaving and entering its boxes at a point of its own: the arrows on
    one side of a box are spread down that side in the order of the boxes at their other end,
    so seven arrows out of the gateway fan out rather than start from one point."""
    ends: dict[tuple[str, str], list[tuple[float, int, int]]] = defaultdict(list)
    for index, flow in enumerate(flows):
        source, target = nodes[flow.source], nodes[flow.target]
        out, into = _sides(source, target)
        ends[(source.name, out)].append((target.y, index, 0))
        ends[(target.name, into)].append((source.y, index, 1))
    offsets: dict[tuple[int, int], float] = {}
    for members in ends.values():
        members.sort()
        for rank, (_, index, end) in enumerate(members):
            offsets[(index, end)] = NODE_HEIGHT * (rank + 1) / (len(members) + 1)
    return [
        _edge(nodes[flow.source], nodes[flow.target], flow, offsets[(i, 0)], offsets[(i, 1)])
        for i, flow in enumerate(flows)
    ]


def _edge(source: Node, target: Node, flow: Flow, start: float, end: float) -> Edge:
    """A curve from one box to the other, ``start`` and ``end`` down their sides. Rightward
    curves bow up and leftward down, so a call and its reply do not lie on each other; messages
    bow further than calls, and arrows that pass other columns further still, to clear the boxes
    on the way."""
    y1, y2 = source.y + start, target.y + end
    out, into = _sides(source, target)
    x1 = source.x + (NODE_WIDTH if out == "right" else 0)
    x2 = target.x + (NODE_WIDTH if into == "right" else 0)
    passed = max(1, round(abs(target.x - source.x) / COLUMN))
    bow = (14 if flow.kind == "http" else 30) + 26 * (passed - 1)
    if x1 == x2:
        c1 = (x1 + 40 + bow, y1)
        c2 = (x2 + 40 + bow, y2)
    else:
        bow = bow if x2 > x1 else -bow
        reach = (x2 - x1) / 2
        c1 = (x1 + reach, y1 - bow)
        c2 = (x2 - reach, y2 - bow)
    path = f"M{x1:.1f},{y1:.1f} C{c1[0]:.1f},{c1[1]:.1f} {c2[0]:.1f},{c2[1]:.1f} {x2:.1f},{y2:.1f}"
    # The curve's midpoint (a cubic Bezier at t = 1/2).
    label_x = (x1 + 3 * c1[0] + 3 * c2[0] + x2) / 8
    label_y = (y1 + 3 * c1[1] + 3 * c2[1] + y2) / 8
    return Edge(
        flow.source,
        flow.target,
        flow.kind,
        flow.total,
        flow.rate,
        path=path,
        label_x=round(label_x, 1),
        label_y=round(label_y - 4, 1),
        # How far up and down the curve and its label reach (a Bezier stays inside its
        # control points; the label's text stands about 12 units above its line).
        low=min(y1, y2, c1[1], c2[1], label_y - 16),
        high=max(y1, y2, c1[1], c2[1], label_y + 4),
    )

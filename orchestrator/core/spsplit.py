"""Top-down half of :func:`orchestrator.core.decomposition.decompose`: splitting what the
merges left into components, series factors and regions, a small piece at a time."""

from __future__ import annotations

from collections.abc import Iterator

from orchestrator.core.spmerge import Item, Merger, Part

# --- top-down: what the merges left -------------------------------------------------------


class _Set:
    """A part being split: the nodes labelled ``label``, its sources and sinks (within
    the part), how many nodes, one of them, and all of them while that is free to know."""

    __slots__ = ("label", "nodes", "seed", "sinks", "size", "sources")

    def __init__(self, label: int, sources: set[int], sinks: set[int], size: int,
                 seed: int, nodes: list[int] | None) -> None:
        self.label = label
        self.sources = sources
        self.sinks = sinks
        self.size = size
        self.seed = seed
        self.nodes = nodes
        """Every node, while the part has shed none (else ``None``)."""


def _sweep(s: _Set, sp: Splitter, forward: bool, done: list[int]) -> Iterator[bool]:
    """Kahn's order through a part from its sources (or, ``forward`` false, backwards from
    its sinks): each ``next`` moves one node into the prefix (appended to ``done``) and
    tells whether the nodes so far precede all the rest.  Call it while ``done`` holds
    fewer than all of the part's nodes.

    The prefix ``P`` precedes the rest ``Q`` exactly when the reduction's edges across the
    cut join every sink of ``P`` to every source of ``Q`` and no other node: no node of
    ``P`` has children on both sides (``bad_p``), no node of ``Q`` parents on both sides
    (``bad_q``), and the crossing edges number ``|sinks of P| * |sources of Q|``; the
    sources of ``Q`` are the nodes Kahn's order has ready.  A generator, so that its state
    stays in local variables from one node to the next.
    """
    lab, size, label = s.label, s.size, sp.label
    if forward:
        up, down, in_, out = sp.parents, sp.children, sp.indeg, sp.outdeg
        ready = list(s.sources)
    else:
        up, down, in_, out = sp.children, sp.parents, sp.outdeg, sp.indeg
        ready = list(s.sinks)
    above: dict[int, int] = {}  # children (forward) in the prefix
    below: dict[int, int] = {}  # parents (forward) in the prefix
    sinks_p = bad_p = bad_q = crossing = 0
    while True:
        v = ready.pop()
        done.append(v)
        crossing += out[v] - in_[v]
        # a node is "bad" while some but not all of its edges on v's side cross the cut
        for p in up[v]:
            if label[p] == lab:
                now = above.get(p, 0) + 1
                above[p] = now
                if now == 1:
                    sinks_p -= 1
                    if out[p] > 1:
                        bad_p += 1
                elif now == out[p]:
                    bad_p -= 1
        sinks_p += 1
        for z in down[v]:
            if label[z] == lab:
                now = below.get(z, 0) + 1
                below[z] = now
                if now == in_[z]:
                    ready.append(z)
                    if now > 1:
                        bad_q -= 1
                elif now == 1:
                    bad_q += 1
        yield (len(done) < size and bad_p == 0 and bad_q == 0
               and crossing == sinks_p * len(ready))


class Splitter:
    """The top-down split of what the merges left (see :mod:`.decomposition`).

    Parts nest, so one label, in-degree and out-degree per node describe each node's
    current part.  A part sheds small pieces and keeps its label: components are found
    by searches from every source run in lockstep, which stop once all but one have
    finished; series factors by two sweeps, from the front and from the back, run in
    lockstep until either finds a cut.  So a step costs what it cuts off, not the size of
    the part, and diamonds nested around a region cost no more than side by side.  Only a
    part that turns out connected with many sources, or a region, is searched whole.
    """

    def __init__(self, m: Merger) -> None:
        n = len(m.alive)
        self.item = m.item
        self.parents = m.parents
        self.children = m.children
        self.label = [0] * n
        self.indeg = [0] * n
        self.outdeg = [0] * n
        self.labels = 0

    def split(self, rest: list[int]) -> Item:
        self.labels += 1
        lab = self.labels
        label, indeg, outdeg = self.label, self.indeg, self.outdeg
        for x in rest:
            label[x] = lab
            indeg[x] = len(self.parents[x])
            outdeg[x] = len(self.children[x])
        whole = _Set(lab, {x for x in rest if not indeg[x]},
                     {x for x in rest if not outdeg[x]}, len(rest), rest[0], rest)
        root = Part("S", [0], -1)  # a holder: the answer lands in root.parts[0]
        # (part, holder, slot in holder.parts, known to be connected)
        self.stack: list[tuple[_Set, Part, int, bool]] = [(whole, root, 0, False)]
        while self.stack:
            self._part(*self.stack.pop())
        return root.parts[0]

    def _part(self, s: _Set, holder: Part, slot: int, connected: bool) -> None:
        if s.size == 1:
            holder.parts[slot] = self.item[s.seed]
            return
        if not connected:
            comps = self._components(s)
            if len(comps) > 1:
                part = Part("P", [0] * len(comps), -1)
                holder.parts[slot] = part
                self.stack.extend((c, part, i, True) for i, c in enumerate(comps))
                return
        # connected: peel series factors off either end until one is left
        front: list[Item] = []
        back: list[Item] = []
        middle: Item
        first = True
        while True:
            if s.size == 1:
                middle = self.item[s.seed]
                break
            if not first:  # the rest of a series may be one disconnected factor
                comps = self._components(s)
                if len(comps) > 1:
                    middle = Part("P", [0] * len(comps), -1)
                    self.stack.extend((c, middle, i, True) for i, c in enumerate(comps))
                    break
            cut = self._cut(s)
            if cut is None:
                region = Part("R", [self.item[x] for x in self._members(s)], -1)
                if first:  # connected, not a series: a region
                    holder.parts[slot] = region
                    return
                middle = region
                break
            at_front, nodes = cut
            piece = self._peel(s, nodes)
            box = Part("S", [0], -1)  # the factor's own tree lands here (and is spliced)
            self.stack.append((piece, box, 0, False))
            (front if at_front else back).append(box)
            first = False
        front.append(middle)
        front.extend(reversed(back))
        holder.parts[slot] = Part("S", front, -1)

    def _cut(self, s: _Set) -> tuple[bool, list[int]] | None:
        """The first or the last series factor of ``s``, whichever is found first (true
        for the first), or ``None`` when ``s`` has no series cut."""
        front_done: list[int] = []
        back_done: list[int] = []
        front = _sweep(s, self, True, front_done)
        back = _sweep(s, self, False, back_done)
        # a sweep from one end has tested every cut within its reach: together they
        # have tested them all once they cover the part
        last = s.size - 1
        while len(front_done) + len(back_done) < last:
            if next(front):
                return True, front_done
            if len(front_done) + len(back_done) >= last:
                break
            if next(back):
                return False, back_done
        return None

    def _peel(self, s: _Set, nodes: list[int]) -> _Set:
        """Take ``nodes`` out of ``s`` as a part of its own (cost: their edges)."""
        self.labels += 1
        lab, old = self.labels, s.label
        label, indeg, outdeg = self.label, self.indeg, self.outdeg
        for x in nodes:
            label[x] = lab
        for x in nodes:
            for p in self.parents[x]:
                if label[p] == old:
                    outdeg[p] -= 1
                    indeg[x] -= 1
                    if not outdeg[p]:
                        s.sinks.add(p)
            for c in self.children[x]:
                if label[c] == old:
                    indeg[c] -= 1
                    outdeg[x] -= 1
                    if not indeg[c]:
                        s.sources.add(c)
        s.sources.difference_update(nodes)
        s.sinks.difference_update(nodes)
        s.size -= len(nodes)
        s.nodes = None
        if label[s.seed] != old:
            s.seed = next(iter(s.sources))
        return _Set(lab, {x for x in nodes if not indeg[x]},
                    {x for x in nodes if not outdeg[x]}, len(nodes), nodes[0], nodes)

    def _components(self, s: _Set) -> list[_Set]:
        """The weakly connected components of ``s``: ``[s]`` when it is connected, else
        new parts, the last of which may be ``s`` itself (what is left of it).

        A search starts from every source (every component has one) and they advance
        in lockstep, one node each per round; searches that meet merge.  A search that
        runs out has found a whole component; once at most one is still running, what is
        left is one component.
        """
        seeds = list(s.sources)
        if len(seeds) == 1:
            return [s]
        lab, label = s.label, self.label
        parents, children = self.parents, self.children
        k = len(seeds)
        boss = list(range(k))  # union-find over searches

        def find(g: int) -> int:
            while boss[g] != g:
                boss[g] = boss[boss[g]]
                g = boss[g]
            return g

        owner = {x: i for i, x in enumerate(seeds)}
        queue: list[list[int]] = [[x] for x in seeds]
        members: list[list[int]] = [[x] for x in seeds]
        running = list(range(k))
        while True:
            running = [g for g in running if boss[g] == g and queue[g]]
            if len(running) <= 1:
                break
            for g in running:
                g = find(g)
                if not queue[g]:
                    continue
                y = queue[g].pop()
                for nbrs in (parents[y], children[y]):
                    for z in nbrs:
                        if label[z] != lab:
                            continue
                        o = owner.get(z)
                        if o is None:
                            owner[z] = g
                            queue[g].append(z)
                            members[g].append(z)
                            continue
                        h = find(o)
                        if h == g:
                            continue
                        big, small = (g, h) if len(members[g]) >= len(members[h]) else (h, g)
                        boss[small] = big
                        queue[big].extend(queue[small])
                        members[big].extend(members[small])
                        queue[small] = []
                        members[small] = []
                        g = big
        roots = [g for g in range(k) if boss[g] == g]
        if len(roots) == 1:
            return [s]
        out: list[_Set] = []
        for g in roots:
            if queue[g]:
                continue  # still running: the rest of s
            nodes = members[g]
            self.labels += 1
            for x in nodes:
                label[x] = self.labels
            out.append(_Set(self.labels, {x for x in nodes if not self.indeg[x]},
                            {x for x in nodes if not self.outdeg[x]}, len(nodes), nodes[0],
                            nodes))
            s.sources.difference_update(nodes)
            s.sinks.difference_update(nodes)
            s.size -= len(nodes)
            s.nodes = None
        if s.size:
            if label[s.seed] != lab:
                s.seed = next(iter(s.sources))
            out.append(s)
        return out

    def _members(self, s: _Set) -> list[int]:
        """Every node of ``s`` (a search from one of them, unless ``s`` knows them)."""
        if s.nodes is not None:
            return s.nodes
        lab, label = s.label, self.label
        seen = {s.seed}
        stack = [s.seed]
        while stack:
            y = stack.pop()
            for nbrs in (self.parents[y], self.children[y]):
                for z in nbrs:
                    if label[z] == lab and z not in seen:
                        seen.add(z)
                        stack.append(z)
        return list(seen)

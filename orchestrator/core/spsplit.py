"""Top-down half of :func:`orchestrator.core.decomposition.decompose`: splitting what the
merges left into components, series factors and regions, a small piece at a time."""

from __future__ import annotations

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


class _Sweep:
    """Kahn's order through a part from its sources (or, ``forward`` false, backwards from
    its sinks), testing after each node whether the nodes so far precede all the rest.

    The prefix ``P`` precedes the rest ``Q`` exactly when the reduction's edges across the
    cut join every sink of ``P`` to every source of ``Q`` and no other node: no node of
    ``P`` has children on both sides (``bad_p``), no node of ``Q`` parents on both sides
    (``bad_q``), and the crossing edges number ``|sinks of P| * |sources of Q|``; the
    sources of ``Q`` are the nodes Kahn's order has ready.
    """

    def __init__(self, s: _Set, sp: Splitter, forward: bool) -> None:
        self.lab = s.label
        self.size = s.size
        self.label = sp.label
        if forward:
            self.up, self.down, self.in_, self.out = sp.parents, sp.children, sp.indeg, sp.outdeg
            self.ready = list(s.sources)
        else:
            self.up, self.down, self.in_, self.out = sp.children, sp.parents, sp.outdeg, sp.indeg
            self.ready = list(s.sinks)
        self.done: list[int] = []
        self.above: dict[int, int] = {}  # children (forward) in the prefix
        self.below: dict[int, int] = {}  # parents (forward) in the prefix
        self.sinks_p = self.bad_p = self.bad_q = self.crossing = 0

    def step(self) -> bool:
        """Move one node into the prefix; true if the prefix now precedes the rest."""
        label, lab, in_, out = self.label, self.lab, self.in_, self.out
        v = self.ready.pop()
        self.done.append(v)
        self.crossing += out[v] - in_[v]
        above, below = self.above, self.below
        bad_p = self.bad_p
        for p in self.up[v]:
            if label[p] != lab:
                continue
            had = above.get(p, 0)
            above[p] = had + 1
            if had == 0:
                self.sinks_p -= 1
            bad_p += (had + 1 < out[p]) - (0 < had < out[p])
        self.sinks_p += 1
        self.bad_p = bad_p
        bad_q = self.bad_q
        for z in self.down[v]:
            if label[z] != lab:
                continue
            had = below.get(z, 0)
            below[z] = had + 1
            if had + 1 == in_[z]:
                self.ready.append(z)
            bad_q += (had + 1 < in_[z]) - (0 < had < in_[z])
        self.bad_q = bad_q
        return (len(self.done) < self.size and bad_p == 0 and bad_q == 0
                and self.crossing == self.sinks_p * len(self.ready))


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
        front = _Sweep(s, self, True)
        back = _Sweep(s, self, False)
        # a sweep from one end has tested every cut within its reach: together they
        # have tested them all once they cover the part
        while len(front.done) + len(back.done) < s.size - 1:
            if front.step():
                return True, front.done
            if len(front.done) + len(back.done) >= s.size - 1:
                break
            if back.step():
                return False, back.done
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

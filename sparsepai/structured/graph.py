"""The channel dependency graph: which output channels of which layers share their fate.

A tensor with channels is described as a list of *segments* along one dimension: each segment is
the whole output of one channel *space*, and a space starts as the output channels of one
convolution or linear layer (its *producer*). Spaces joined by an elementwise sum or product
(residual connections, squeeze-and-excitation gating) are merged into one *group*: one stream
of channels written by every producer in it. Layers whose per-channel parameters follow the
channels (norms, depthwise convolutions, per-channel scales) are *members*; layers that read
the channels as inputs are *reads*. Channels that reach the model's output, or an operation
the graph does not understand, are *dead*: their group is not prunable (never silently wrong).

Two builders fill this model: :mod:`~sparsepai.structured.opgraph` (the default) walks the ATen
operations of a ``torch.export`` capture on an example input, so any module is seen as the ops
it performs; :mod:`~sparsepai.structured.fxgraph` (the fallback when no example input is known)
walks a ``torch.fx`` trace over known module types. :func:`~sparsepai.structured.analysis.analyse`
picks the builder and caches graphs per architecture, so ``sp.slim``/``sp.apply_masks`` after
``sp.prune`` reuse the graph the capture built.
"""

from __future__ import annotations

import dataclasses


class TraceError(RuntimeError):
    """The model (or one of its modules) cannot be captured."""


@dataclasses.dataclass(frozen=True)
class Seg:
    """One channel space inside a tensor: the whole output of ``space``."""

    space: int
    length: int
    origin: str | None  # the producer this tensor came from directly (None after a sum)


@dataclasses.dataclass
class Member:
    """A layer whose per-channel tensors follow channels ``offset .. offset+length`` of a group,
    attributed to producer ``origin`` (None: the group's stream).

    ``kind`` is ``"norm"`` (a norm layer), ``"depthwise"`` (a depthwise convolution) or
    ``"scale"`` (a per-channel parameter multiplied or added in). ``tensors`` are
    ``(full parameter or buffer name, axis)`` pairs to narrow, ``width`` the layer's channels.
    ``offset`` counts the layer's channels, ``length`` units of the group, each ``expand``
    consecutive channels of the layer (e.g. a norm after a grouped convolution whose groups are
    the units), the whole repeated ``tiles`` times (a norm after a grouped convolution pruned
    consistently within its groups: unit ``u`` is channel ``u`` of every group); see
    :func:`spread`.
    """

    module: str
    kind: str
    group: int
    offset: int
    length: int
    origin: str | None
    tensors: tuple = ()
    width: int = 0
    expand: int = 1
    tiles: int = 1

    @property
    def span(self) -> int:
        """The layer's channels this record covers."""
        return self.length * self.expand * self.tiles


@dataclasses.dataclass
class Read:
    """Input channels ``[0, length)`` of ``group`` are read by ``module`` at input positions
    ``col_offset + c * factor .. + factor`` (``factor`` > 1 after a flatten), that block
    repeated ``tiles`` times (see :func:`spread`)."""

    module: str
    group: int
    col_offset: int
    length: int
    factor: int
    tiles: int = 1

    @property
    def span(self) -> int:
        """The input columns this record covers."""
        return self.length * self.factor * self.tiles


@dataclasses.dataclass
class Group:
    """Coupled channels: one stream of ``size`` channels (units) written by every producer in
    ``producers`` (each writes all ``size`` of them). A producer in ``expand`` writes
    ``expand[p]`` consecutive output rows per unit (an attention unit: a key/value head with its
    query heads, whose rows are kept or pruned together); the others one row per unit. A
    producer in ``tiles`` writes that block ``tiles[p]`` times over (a grouped convolution
    pruned consistently within its groups: unit ``u`` is row ``u`` of every group)."""

    id: int
    size: int
    producers: list
    members: list
    prunable: bool
    expand: dict = dataclasses.field(default_factory=dict)
    tiles: dict = dataclasses.field(default_factory=dict)

    def rows(self, producer: str) -> int:
        """Output rows of ``producer`` per unit of the group (in each tile)."""
        return self.expand.get(producer, 1)

    def width(self, producer: str) -> int:
        """Output rows of ``producer``."""
        return self.size * self.rows(producer) * self.tiles.get(producer, 1)

    def spread(self, producer: str, units):
        """A per-unit vector of the group as one entry per output row of ``producer``."""
        return spread(units, self.rows(producer), self.tiles.get(producer, 1))

    def fold(self, producer: str, rows):
        """Per-row values of ``producer`` summed into one per unit (the inverse of
        :meth:`spread` for sums)."""
        return rows.reshape(self.tiles.get(producer, 1), self.size, -1).sum((0, 2))


def spread(units, expand: int = 1, tiles: int = 1):
    """Unit ``u`` of a vector over a group's units as entries ``u * expand .. + expand`` of a
    block, the block repeated ``tiles`` times: entry ``i`` belongs to unit
    ``(i // expand) % len(units)``."""
    out = units.repeat_interleave(expand) if expand != 1 else units
    return out.repeat(tiles) if tiles != 1 else out


@dataclasses.dataclass
class ChannelGraph:
    """The analysis of one model: groups (by id), reads of each consumer, producer table.

    ``method`` says which builder made it (``"export"`` or ``"fx"``). ``sizes``: ``(module,
    attribute, group id)`` for integer attributes that the forward reads as a number of the
    group's channels (e.g. GPT-2's ``split_size``, the width of each of the query, key and
    value parts of its fused projection): slim scales them with the kept units."""

    groups: dict
    reads: list
    producer_group: dict  # producer module name -> group id
    method: str = "export"
    sizes: list = dataclasses.field(default_factory=list)
    norm_streams: bool = False  # built with the norm_streams approximation (see analyse)

    def prunable_groups(self) -> list:
        return [g for g in self.groups.values() if g.prunable and g.producers]


class Builder:
    """Union-find over channel spaces, and the raw records the walkers collect."""

    def __init__(self):
        self.parent: list[int] = []
        self.scale: list[int] = []  # channel c of a space is channel c // scale of its parent
        self.length: list[int] = []
        self.dead: set[int] = set()
        self.producer_space: dict[str, int] = {}
        self.members: list = []  # (module, kind, segs, tensors, width)
        self.reads: list = []  # (module, segs, n_in)
        self.sizes: list = []  # (module, attribute, space)

    def new_space(self, n: int) -> int:
        self.parent.append(len(self.parent))
        self.scale.append(1)
        self.length.append(n)
        return len(self.parent) - 1

    def producer(self, name: str, n: int) -> int:
        """The space of ``name``'s outputs (one per module, even if it is called twice)."""
        if name not in self.producer_space:
            self.producer_space[name] = self.new_space(n)
        return self.producer_space[name]

    def find(self, s: int) -> int:
        path = []
        while self.parent[s] != s:
            path.append(s)
            s = self.parent[s]
        for node in reversed(path):  # compress, keeping the scale to the root
            p = self.parent[node]
            if p != s:
                self.scale[node] *= self.scale[p]
                self.parent[node] = s
        return s

    def ratio(self, s: int) -> int:
        """Channels of space ``s`` per channel of its root."""
        return self.scale[s] if self.find(s) != s else 1

    def link(self, a: int, b: int, e: int = 1) -> None:
        """Channel ``c`` of space ``a`` shares its fate with channel ``(c // e) % len(b)`` of
        ``b`` (``e == 1`` and equal lengths: an elementwise coupling; ``len(a) == e * len(b)``:
        ``e`` consecutive channels of ``a`` per channel of ``b``; ``len(a) > e * len(b)``: that
        pattern repeated, as channel ``c`` of every group of a grouped convolution).

        Every space maps to its root as ``(c // ratio) % len(root)``; two such maps compose
        into one of the same form, so a link joins the coarser root under the finer one with
        the ratio between them, or, where no such ratio exists, makes both dead."""
        ra, rb = self.find(a), self.find(b)
        ka, kb = self.ratio(a), e * self.ratio(b)  # channel c of a -> c // k % len(root)
        if ra == rb:
            if ka != kb:
                self.dead.update((ra, rb))
            return
        la, lb = self.length[ra], self.length[rb]
        if kb % ka == 0 and la % (kb // ka * lb) == 0:
            self.parent[ra], self.scale[ra] = rb, kb // ka
        elif ka % kb == 0 and lb % (ka // kb * la) == 0:
            self.parent[rb], self.scale[rb] = ra, ka // kb
            ra, rb = rb, ra
        else:
            self.dead.update((ra, rb))  # not a whole number of channels per unit
            return
        if ra in self.dead:
            self.dead.add(rb)

    def place(self, s: int) -> tuple:
        """``(root, ratio, tiles)`` of space ``s``: channel ``c`` is unit
        ``(c // ratio) % len(root)``, the pattern repeated ``tiles`` times."""
        r, k = self.find(s), self.ratio(s)
        return r, k, self.length[s] // (k * self.length[r])

    def union(self, a: int, b: int) -> None:
        self.link(a, b, 1)

    def kill_segs(self, segs) -> None:
        for s in segs:
            self.dead.add(self.find(s.space))

    def couple_segs(self, seg_lists) -> bool:
        """Union the spaces of equally laid out segment lists; False if the layouts differ."""
        shape = [s.length for s in seg_lists[0]]
        if any([s.length for s in segs] != shape for segs in seg_lists):
            return False
        for segs in seg_lists[1:]:
            for a, b in zip(seg_lists[0], segs):
                self.union(a.space, b.space)
        return True

    def finish(self, method: str) -> ChannelGraph:
        # a module met twice with different channels (a shared layer) cannot be narrowed
        # consistently: its channels stay
        for records in (self.members, self.reads):
            seen: dict = {}
            for rec in records:
                segs = rec[2] if len(rec) == 5 else rec[1]
                key = tuple(self.find(s.space) for s in segs)
                if seen.setdefault(_key(rec), key) != key:
                    for other in records:
                        if _key(other) == _key(rec):
                            self.kill_segs(other[2] if len(other) == 5 else other[1])
        groups: dict[int, Group] = {}
        producer_group = {}

        def group(r):
            return groups.setdefault(r, Group(r, self.length[r], [], [], r not in self.dead))

        for name, sp in self.producer_space.items():
            r, k, t = self.place(sp)
            group(r).producers.append(name)
            if k != 1:
                group(r).expand[name] = k
            if t != 1:
                group(r).tiles[name] = t
            producer_group[name] = r
        done = set()
        for rec in self.members:
            name, kind, segs, tensors, width = rec
            if _key(rec) in done:
                continue
            done.add(_key(rec))
            off = 0
            for s in segs:
                r, k, t = self.place(s.space)
                group(r).members.append(Member(name, kind, r, off, self.length[r], s.origin,
                                               tuple(tensors), width, k, t))
                off += s.length
        reads = []
        done = set()
        for name, segs, n_in in self.reads:
            if name in done:
                continue
            done.add(name)
            factor = n_in // sum(s.length for s in segs)
            off = 0
            for s in segs:
                r, k, t = self.place(s.space)
                group(r)
                reads.append(Read(name, r, off * factor, self.length[r], factor * k, t))
                off += s.length
        for g in groups.values():  # a group read or normed but never written is not ours
            g.prunable = g.prunable and bool(g.producers)
        sizes = sorted({(m, a, self.find(sp)) for m, a, sp in self.sizes})
        return ChannelGraph(groups, reads, producer_group, method, sizes)


def _key(rec):
    """Records of one layer: a read or member module (and the tensors a member narrows)."""
    return (rec[0], tuple(rec[3])) if len(rec) == 5 else rec[0]


def flat_args(args):
    """The leaves of nested tuples, lists and dicts (the arguments of a graph node), in order."""
    for a in args:
        if isinstance(a, (tuple, list)):
            yield from flat_args(a)
        elif isinstance(a, dict):
            yield from flat_args(tuple(a.values()))
        else:
            yield a

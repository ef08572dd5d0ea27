"""Which step path each masked tensor takes: measured on the first steps, or forced.

Two paths update a masked CPU tensor to the same bits (the same float32 math per element, no FMA
contraction):

* ``"dense"``: state in the parameter's shape; the kernel streams through every mask word that
  keeps something, as the unmasked step does, so it costs what a step at density 1 costs;
* ``"sparse"``: compact state (the kept entries only); the kernel visits kept entries only. It
  moves fewer bytes, but its scattered accesses may wait on memory longer than streaming does:
  which one wins depends on the density, the tensor's size and the machine (cache, bandwidth,
  latency, vector width), and no fixed threshold holds on every machine (measured: 0.78x of
  the dense step on one machine, 1.05x on another).

``path="auto"`` measures: after the step that creates the state, the next ``2 * SAMPLES`` steps
run each candidate tensor alone, timed, in one layout or the other (interleaved, so a slow phase
of a shared machine hits both alike), then every tensor commits to the layout with the lower
fastest sample (the least disturbed one: on a shared machine a stall only ever adds time, and a
median of three still picks the wrong layout when two samples of one layout hit stalls). Those steps are real steps (both paths give the same update), so measuring costs only the
layout switches and the per-tensor calls. ``"sparse"`` and ``"dense"`` force a path (tests,
reproducible timings); the environment variable ``SPARSEPAI_OPTIM_PATH`` sets the default.
"""

from __future__ import annotations

import os
import time

PATHS = ("auto", "sparse", "dense")
ENV = "SPARSEPAI_OPTIM_PATH"
SAMPLES = 3  # timed steps per layout and tensor
# The layout of each measuring step: interleaved, and only three switches (each one rewrites the
# tensor's state) before the commit.
SCHEDULE = (False, True, True, False, False, True)
assert len(SCHEDULE) == 2 * SAMPLES and sum(SCHEDULE) == SAMPLES


def resolve_path(owner: str, path) -> str:
    """The path an optimizer takes: ``path``, else ``$SPARSEPAI_OPTIM_PATH``, else ``"auto"``.

    Raises:
        ValueError: naming ``owner`` and the argument (or the variable), for other values.
    """
    if path is None:
        path = os.environ.get(ENV) or "auto"
        where = f"${ENV}"
    else:
        where = "path"
    if path not in PATHS:
        raise ValueError(f"{owner}: {where} must be one of {', '.join(map(repr, PATHS))}, got "
                         f"{path!r}")
    return path


class PathChooser:
    """Per tensor layout decisions of one optimizer (for the tensors that may take either).

    Args:
        path: ``"auto"``, ``"sparse"`` or ``"dense"``.
        clock: seconds, monotonic (tests pass a fake one).
    """

    def __init__(self, path: str, clock=time.perf_counter):
        self.path = path
        self.clock = clock
        self.steps = 0  # steps taken since the masks were (re)set, up to the commit
        self.times: dict = {}  # tensor -> ([dense seconds], [sparse seconds])
        self.decided: dict = {}  # tensor -> True (sparse) / False (dense)

    def measuring(self) -> bool:
        """Whether the coming step measures (steps 1 .. 2 * SAMPLES of an "auto" optimizer)."""
        return self.path == "auto" and 1 <= self.steps <= len(SCHEDULE)

    def compact(self, p) -> bool:
        """Whether ``p`` has compact state in the coming step."""
        if self.path != "auto":
            return self.path == "sparse"
        if self.measuring():
            return SCHEDULE[self.steps - 1]
        return self.decided.get(p, False)

    def record(self, p, seconds: float) -> None:
        """One timed step of ``p`` in the layout of the current measuring step."""
        self.times.setdefault(p, ([], []))[SCHEDULE[self.steps - 1]].append(seconds)

    def end_step(self) -> bool:
        """Counts a step; commits after the last measuring one. Returns whether some tensor
        takes another layout in the next step than in this one (the optimizer then relayouts)."""
        if self.path != "auto" or self.steps > len(SCHEDULE):
            # decided: the count stops, so a compiled step sees a constant (traced once)
            return False
        was = SCHEDULE[self.steps - 1] if self.measuring() else False
        self.steps += 1
        if self.measuring():
            return SCHEDULE[self.steps - 1] != was
        if self.steps == len(SCHEDULE) + 1:  # the last measuring step ended: commit
            # sparse only where strictly faster: a sparse step never costs more than a dense one
            self.decided = {p: bool(s) and bool(d) and min(s) < min(d)
                            for p, (d, s) in self.times.items()}
            return True
        return False

    def reset(self) -> None:
        """Measure again from the next step (the masks changed)."""
        self.__init__(self.path, self.clock)

    def path_of(self, p) -> str:
        """``"sparse"``, ``"dense"``, or ``"measuring"`` (auto, before the commit)."""
        if self.path != "auto":
            return self.path
        if self.steps <= len(SCHEDULE):
            return "measuring"
        return "sparse" if self.decided.get(p, False) else "dense"

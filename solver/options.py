"""How to solve: solver choice, limits and mode."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

SolverName = Literal["cbc", "highs"]
Mode = Literal["full", "incremental"]


@dataclass(frozen=True)
class SolveOptions:
    #: ``"cbc"`` (bundled with PuLP) or ``"highs"`` (needs ``highspy``).
    solver: SolverName = "cbc"
    #: Wall-clock limit for the MIP solver itself (model building is not counted).
    time_limit_s: float = 30.0
    #: Stop once the proven relative gap is at most this.
    gap_rel: float = 0.005
    #: ``"full"`` re-optimises every slice (moves bounded by ``migration_budget``);
    #: ``"incremental"`` keeps every slice whose current placement is complete and valid
    #: fixed and places only new or changed slices against it.
    mode: Mode = "full"
    #: Full mode: at most this many already-running NFs may move (``None``: no limit).
    migration_budget: int | None = None
    #: Start the MIP from the baseline heuristic's placement.
    warm_start: bool = True
    #: Keep at most this many (host, flavour) candidates per NF, the most promising first
    #: (a heuristic restriction for very large instances; ``None`` keeps all, exact).
    max_candidates: int | None = None
    #: Threads the MIP solver may use (``None``: the solver's default).
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.solver not in ("cbc", "highs"):
            raise ValueError(f"SolveOptions.solver: unknown solver {self.solver!r}; use 'cbc' or 'highs'")
        if self.mode not in ("full", "incremental"):
            raise ValueError(f"SolveOptions.mode: unknown mode {self.mode!r}; use 'full' or 'incremental'")
        if not self.time_limit_s > 0:
            raise ValueError(f"SolveOptions.time_limit_s must be positive, got {self.time_limit_s!r}")
        if not 0 <= self.gap_rel < 1:
            raise ValueError(f"SolveOptions.gap_rel must be in [0, 1), got {self.gap_rel!r}")
        if self.migration_budget is not None and self.migration_budget < 0:
            raise ValueError(f"SolveOptions.migration_budget must be >= 0, got {self.migration_budget!r}")
        if self.max_candidates is not None and self.max_candidates < 1:
            raise ValueError(f"SolveOptions.max_candidates must be >= 1, got {self.max_candidates!r}")

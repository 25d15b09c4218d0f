"""How to solve: solver choice, limits and mode."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Literal

from .model import Weights

SolverName = Literal["auto", "cbc", "highs"]
Mode = Literal["full", "incremental"]
ModelBuild = Literal["direct", "pulp"]


@dataclass(frozen=True)
class SolveOptions:
    #: ``"auto"`` (default: HiGHS when ``highspy`` imports, else CBC; resolved when the options are
    #: made, so ``solver`` always reads ``"cbc"`` or ``"highs"`` afterwards), ``"cbc"`` (bundled with
    #: PuLP) or ``"highs"`` (needs ``highspy``). HiGHS is the default because it runs in-process
    #: (CBC needs the model written to and read from files) and did better on the product-path
    #: cases measured: faster on wildfire, and a full-model gap where CBC stated none
    #: (docs/benchmarks.md).
    solver: SolverName = "auto"
    #: Wall-clock limit for the whole of ``place()``: pruning, model building, every solver round,
    #: re-checks and diagnosis (the baseline heuristic, which every answer is measured against,
    #: always runs to the end). See docs/solver.md, "Status and guarantees".
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
    #: Keep at most this many (host, flavour) candidates per NF, the most promising first: a
    #: heuristic restriction, off by default (``None`` keeps every option the safe pruning leaves).
    #: When it cuts any option the placement says ``Guarantee.RESTRICTED`` with
    #: ``"candidate cap k=<n>"``; the baseline's own choices are always kept (so the warm start
    #: stays a point of the model).
    max_candidates: int | None = None
    #: How the model reaches HiGHS: ``"direct"`` (default) builds it as arrays and passes them in one
    #: call (solver/matrix.py); ``"pulp"`` builds a PuLP problem (the portable path, always used
    #: with CBC). Same model either way; the direct build was faster on every case measured
    #: (docs/benchmarks.md).
    model_build: ModelBuild = "direct"
    #: Threads the MIP solver may use (``None``: the solver's default).
    threads: int | None = None
    #: The objective's weights for problems the control plane builds (``flyslice plan/up/operator
    #: --weights``); ``None`` keeps :class:`Weights`' defaults. ``place()`` itself reads
    #: ``Problem.weights``: the control plane copies these into every Problem it builds, so the solve
    #: and every later judgement of it (re-optimisation, checks) use the same objective.
    weights: Weights | None = None

    def __post_init__(self) -> None:
        if self.solver not in ("auto", "cbc", "highs"):
            raise ValueError(
                f"SolveOptions.solver: unknown solver {self.solver!r}; use 'auto', 'cbc' or 'highs'"
            )
        if self.solver == "auto":
            object.__setattr__(self, "solver", "highs" if highspy_imports() else "cbc")
        if self.model_build not in ("direct", "pulp"):
            raise ValueError(
                f"SolveOptions.model_build: unknown value {self.model_build!r}; use 'direct' or 'pulp'"
            )
        if self.mode not in ("full", "incremental"):
            raise ValueError(f"SolveOptions.mode: unknown mode {self.mode!r}; use 'full' or 'incremental'")
        if not self.time_limit_s > 0:
            raise ValueError(f"SolveOptions.time_limit_s must be positive, got {self.time_limit_s!r}")
        if not 0 <= self.gap_rel < 1:
            raise ValueError(f"SolveOptions.gap_rel must be in [0, 1), got {self.gap_rel!r}")
        if self.migration_budget is not None and self.migration_budget < 0:
            raise ValueError(f"SolveOptions.migration_budget must be >= 0, got {self.migration_budget!r}")
        if self.weights is not None:
            for name in ("resource", "latency", "migration", "rejection"):
                value = getattr(self.weights, name)
                if not (isinstance(value, int | float) and 0 <= value < float("inf")):
                    raise ValueError(
                        f"SolveOptions.weights.{name} must be a finite number >= 0, got {value!r}"
                    )
            if not self.weights.rejection > 0:
                raise ValueError(
                    "SolveOptions.weights.rejection must be > 0 (admission must be worth something)"
                )
        if self.max_candidates is not None and self.max_candidates < 1:
            raise ValueError(f"SolveOptions.max_candidates must be >= 1, got {self.max_candidates!r}")

    @property
    def direct(self) -> bool:
        """Whether ``ilp.build`` writes the model as arrays for HiGHS (see ``model_build``)."""
        return self.solver == "highs" and self.model_build == "direct"


@functools.cache
def highspy_imports() -> bool:
    """Whether ``highspy`` (HiGHS's Python binding) can be imported here; checked once."""
    try:
        import highspy  # noqa: F401
    except (ImportError, OSError):  # OSError: a wheel whose shared library does not load
        return False
    return True

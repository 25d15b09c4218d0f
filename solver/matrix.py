"""The placement model as arrays, handed to HiGHS in one call (the default with HiGHS).

``ilp.build`` writes its variables and rows either into a PuLP ``LpProblem`` (the portable path:
CBC, or HiGHS through PuLP) or into a :class:`MatrixModel`: plain column objects and row-wise
coefficient lists, passed to HiGHS as one ``HighsLp`` (``passModel``) instead of PuLP's per-column
and per-row calls. Both describe the same model; tests/solver/test_direct_build.py checks they reach
the same optimum. A :class:`Column` mimics the few ``pulp.LpVariable`` attributes the model code
reads and writes (``upBound``, ``varValue``, ``setInitialValue``), so ilp.py and sharing_ilp.py stay
one formulation.

Measured on the 200-host x 100-slice x 5-NF product-path instance (docs/benchmarks.md): PuLP spent
seconds per round outside HiGHS (building ``LpVariable``/``LpConstraint`` objects, re-collecting and
sorting its variables four times a round, per-column ``addCol`` calls, reading the answer back).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import pulp

#: Row senses, the same numbers as PuLP's (ilp.py passes PuLP's constants to either model).
LE = pulp.LpConstraintLE
GE = pulp.LpConstraintGE
EQ = pulp.LpConstraintEQ


class Column:
    """One variable of a :class:`MatrixModel`; compares by identity, like a PuLP variable."""

    __slots__ = ("index", "integer", "lowBound", "name", "upBound", "varValue")

    def __init__(self, index: int, name: str, low: float | None, up: float | None, integer: bool) -> None:
        self.index = index
        self.name = name
        self.lowBound = low
        self.upBound = up
        self.integer = integer
        #: The solved value (or the MIP start once ``setInitialValue`` set it), as in PuLP.
        self.varValue: float | None = None

    def setInitialValue(self, value: float) -> None:
        """PuLP's name: ilp.py and sharing_ilp.py set MIP starts through it on either model."""
        self.varValue = value

    def __repr__(self) -> str:
        return self.name


class MatrixModel:
    """Columns, row-wise coefficients and an objective to minimise."""

    def __init__(self) -> None:
        self.columns: list[Column] = []
        self.row_start: list[int] = [0]
        self.row_index: list[int] = []
        self.row_value: list[float] = []
        self.row_lower: list[float] = []
        self.row_upper: list[float] = []
        self.objective: dict[Column, float] = {}

    def add_variable(
        self, name: str, low: float | None = None, up: float | None = None, cat: str = pulp.LpContinuous
    ) -> Column:
        """A new column (``cat`` as PuLP spells it; a binary gets bounds [0, 1] as in PuLP)."""
        if cat == pulp.LpBinary:
            low, up = 0, 1
        col = Column(len(self.columns), name, low, up, cat in (pulp.LpBinary, pulp.LpInteger))
        self.columns.append(col)
        return col

    def add_row(
        self, terms: Mapping[Column, float] | Iterable[tuple[Column, float]], sense: int, rhs: float
    ) -> None:
        """``sum(c * v) <sense> rhs``; repeated columns are summed, zero coefficients dropped (as PuLP)."""
        if isinstance(terms, Mapping):
            cols: Iterable[Column] = terms.keys()
            values = list(terms.values())
        else:
            pairs = list(terms)
            cols = [v for v, _ in pairs]
            values = [c for _, c in pairs]
        index = [v.index for v in cols]
        if len(set(index)) != len(index):
            merged: dict[int, float] = {}
            for i, c in zip(index, values, strict=True):
                merged[i] = merged.get(i, 0.0) + c
            index, values = list(merged), list(merged.values())
        if 0 in values:
            kept = [(i, c) for i, c in zip(index, values, strict=True) if c != 0]
            index, values = [i for i, _ in kept], [c for _, c in kept]
        self.row_index.extend(index)
        self.row_value.extend(values)
        self.row_start.append(len(self.row_index))
        self.row_lower.append(-math.inf if sense == LE else rhs)
        self.row_upper.append(math.inf if sense == GE else rhs)

    def set_objective(self, terms: Mapping[Column, float]) -> None:
        self.objective = dict(terms)

    @property
    def num_rows(self) -> int:
        return len(self.row_lower)

    def value(self) -> float | None:
        """The objective at the columns' current values (``None`` while one is unset)."""
        total = 0.0
        for v, c in self.objective.items():
            if v.varValue is None:
                return None
            total += c * v.varValue
        return total

    def highs_lp(self) -> Any:
        """The model as a ``highspy.HighsLp`` (row-wise matrix), for ``Highs.passModel``."""
        import highspy
        import numpy as np

        n = len(self.columns)
        lp = highspy.HighsLp()
        lp.num_col_ = n
        lp.num_row_ = self.num_rows
        cost = np.zeros(n)
        for v, c in self.objective.items():
            cost[v.index] += c
        lp.col_cost_ = cost
        inf = highspy.kHighsInf
        lp.col_lower_ = np.array(
            [-inf if v.lowBound is None else v.lowBound for v in self.columns], dtype=float
        )
        lp.col_upper_ = np.array([inf if v.upBound is None else v.upBound for v in self.columns], dtype=float)
        lp.row_lower_ = np.clip(np.array(self.row_lower, dtype=float), -inf, inf)
        lp.row_upper_ = np.clip(np.array(self.row_upper, dtype=float), -inf, inf)
        lp.a_matrix_.format_ = highspy.MatrixFormat.kRowwise
        lp.a_matrix_.num_col_ = n
        lp.a_matrix_.num_row_ = self.num_rows
        lp.a_matrix_.start_ = np.array(self.row_start, dtype=np.int32)
        lp.a_matrix_.index_ = np.array(self.row_index, dtype=np.int32)
        lp.a_matrix_.value_ = np.array(self.row_value, dtype=float)
        if any(v.integer for v in self.columns):
            kinds = (highspy.HighsVarType.kContinuous, highspy.HighsVarType.kInteger)
            lp.integrality_ = [kinds[v.integer] for v in self.columns]
        return lp

    def start_values(self) -> tuple[Any, Any]:
        """Indices and values of the columns with a value (the MIP start), as numpy arrays."""
        import numpy as np

        known = [(v.index, v.varValue) for v in self.columns if v.varValue is not None]
        return (
            np.array([i for i, _ in known], dtype=np.int32),
            np.array([x for _, x in known], dtype=float),
        )

    def read(self, values: Iterable[float]) -> None:
        """Set every column's ``varValue`` from the solver's column values."""
        for v, x in zip(self.columns, values, strict=False):
            v.varValue = float(x)


def add_row_to(prob: Any, terms: Any, sense: int, rhs: float, name: str) -> None:
    """Add the row ``sum(c * v) <sense> rhs`` to either model (``name`` is kept by PuLP only)."""
    if isinstance(prob, MatrixModel):
        prob.add_row(terms, sense, rhs)
    else:
        prob.addConstraint(pulp.LpConstraint(pulp.LpAffineExpression(terms), sense, name, rhs))

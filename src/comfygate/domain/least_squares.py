"""Ordinary least squares by a QR decomposition (modified Gram-Schmidt), in floats.

A few columns and up to ~10^5 rows, so plain Python suffices (the domain takes no
numpy), and a column that adds nothing to the ones before it is found as the
decomposition reaches it: it is not fitted. Pure.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass

RANK_TOLERANCE = 1e-9
"""A column whose part not explained by the columns before it is this small a fraction
of its own norm adds nothing: it is not fitted."""


@dataclass(frozen=True, slots=True)
class LeastSquares:
    """Coefficients (None for a column not fitted) and the fit's quality."""

    coefficients: tuple[float | None, ...]
    stderr: tuple[float | None, ...]
    fitted: tuple[float, ...]
    r2: float | None
    """None when every observation is the same (nothing to explain)."""
    rmse: float


def dot(a: Sequence[float], b: Sequence[float]) -> float:
    return math.fsum(map(operator.mul, a, b))


def least_squares(columns: Sequence[Sequence[float]], y: Sequence[float]) -> LeastSquares:
    """Ordinary least squares of ``y`` on ``columns`` (the first one all ones).

    A column that lies in the span of those before it is not fitted: its coefficient
    and standard error are None. Standard errors are the classical ones,
    ``sigma^2 (X'X)^-1`` with ``sigma^2 = RSS / (n - p)``.
    """
    n = len(y)
    basis: list[list[float]] = []  # orthonormal columns, Q
    kept: list[int] = []
    r: list[list[float]] = []  # rows of the upper triangular R, over kept columns
    for j, column in enumerate(columns):
        v = [float(x) for x in column]
        norm0 = math.sqrt(dot(v, v))
        coeffs = []
        for q in basis:
            c = dot(q, v)
            v = [vi - c * qi for vi, qi in zip(v, q, strict=True)]
            coeffs.append(c)
        norm = math.sqrt(dot(v, v))
        if norm0 == 0 or norm <= RANK_TOLERANCE * norm0:
            continue
        for row, c in zip(r, coeffs, strict=True):
            row.append(c)
        r.append([0.0] * len(basis) + [norm])
        basis.append([vi / norm for vi in v])
        kept.append(j)
    p = len(kept)
    qty = [dot(q, y) for q in basis]
    beta = [0.0] * p
    for i in reversed(range(p)):
        beta[i] = (qty[i] - math.fsum(r[i][k] * beta[k] for k in range(i + 1, p))) / r[i][i]
    fitted = [0.0] * n  # the projection of y on the columns: sum of (q'y) q
    for q, c in zip(basis, qty, strict=True):
        fitted = [f + c * qi for f, qi in zip(fitted, q, strict=True)]
    rss = math.fsum((yi - fi) ** 2 for yi, fi in zip(y, fitted, strict=True))
    mean = math.fsum(y) / n
    tss = math.fsum((yi - mean) ** 2 for yi in y)
    sigma2 = rss / (n - p) if n > p else math.nan
    inverse = _upper_inverse(r)
    errors = [math.sqrt(sigma2 * dot(row, row)) if n > p else None for row in inverse]
    out_coeffs: list[float | None] = [None] * len(columns)
    out_errors: list[float | None] = [None] * len(columns)
    for i, j in enumerate(kept):
        out_coeffs[j], out_errors[j] = beta[i], errors[i]
    return LeastSquares(
        coefficients=tuple(out_coeffs),
        stderr=tuple(out_errors),
        fitted=tuple(fitted),
        r2=1 - rss / tss if tss > 0 else None,
        rmse=math.sqrt(rss / n),
    )


def _upper_inverse(r: Sequence[Sequence[float]]) -> list[list[float]]:
    """The inverse of the upper triangular ``r``, as rows; ``(X'X)^-1 = R^-1 R^-T``, so
    the variance of coefficient ``i`` is sigma^2 times the squared norm of row ``i``."""
    p = len(r)
    inverse = [[0.0] * p for _ in range(p)]
    for col in range(p):
        for i in reversed(range(col + 1)):
            unit = 1.0 if i == col else 0.0
            acc = unit - math.fsum(r[i][k] * inverse[k][col] for k in range(i + 1, col + 1))
            inverse[i][col] = acc / r[i][i]
    return inverse

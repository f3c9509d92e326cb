"""Chi-square tests for the assignment tests, in plain ``math`` (no scipy in the project).

``chi2_sf(x, df)`` is the upper tail P(X >= x) of a chi-square with an integer ``df``, i.e. the
regularized upper incomplete gamma Q(df/2, x/2), in the closed forms that integer ``df`` allows
(Abramowitz & Stegun 26.4.4 and 26.4.5):

- even df = 2k: Q = exp(-x/2) * sum_{j<k} (x/2)^j / j!          (df=2: exp(-x/2))
- odd df = 2k+1: Q = erfc(sqrt(x/2)) + exp(-x/2) * sum_{j=1..k} (x/2)^(j-1/2) / Gamma(j+1/2)
                                                                 (df=1: erfc(sqrt(x/2)))

Exact for the df used here (1, 2, 4); checked against table values in the tests.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def chi2_sf(x: float, df: int) -> float:
    """P(chi-square with ``df`` degrees of freedom >= ``x``)."""
    if df < 1:
        raise ValueError("df must be a positive integer")
    if x <= 0:
        return 1.0
    half = x / 2
    if df % 2 == 0:
        terms = (half**j / math.factorial(j) for j in range(df // 2))
        return math.exp(-half) * math.fsum(terms)
    terms = (half ** (j - 0.5) / math.gamma(j + 0.5) for j in range(1, df // 2 + 1))
    return math.erfc(math.sqrt(half)) + math.exp(-half) * math.fsum(terms)


def goodness_of_fit(observed: Sequence[int], weights: Sequence[float]) -> float:
    """p-value of Pearson's test of ``observed`` counts against the expected split ``weights``
    (the sample-ratio-mismatch check; df = arms - 1)."""
    total, weight_sum = sum(observed), math.fsum(weights)
    expected = [total * w / weight_sum for w in weights]
    x = math.fsum((o - e) ** 2 / e for o, e in zip(observed, expected, strict=True))
    return chi2_sf(x, len(observed) - 1)


def independence(table: Sequence[Sequence[int]]) -> float:
    """p-value of Pearson's test of independence of an r x c contingency table (no continuity
    correction; df = (r-1)(c-1))."""
    rows = [sum(r) for r in table]
    cols = [sum(c) for c in zip(*table, strict=True)]
    total = sum(rows)
    x = math.fsum(
        (table[i][j] - rows[i] * cols[j] / total) ** 2 / (rows[i] * cols[j] / total)
        for i in range(len(rows))
        for j in range(len(cols))
    )
    return chi2_sf(x, (len(rows) - 1) * (len(cols) - 1))

"""Budget-optimal ranks: the multiple-choice knapsack of docs/METRICS.md 'Rank selection', solved exactly.

Module l picks a rank r_l ∈ {0..R_l} at cost r_l·c_l, c_l = m_l + n_l parameters, and gains the energy
g_l(r_l) = Σ_{i≤r_l} σ²_{l,i}. Maximize Σ g_l(r_l) subject to Σ r_l·c_l ≤ B.

Three facts make an exact solver fast for real models:

1. The gains are concave (σ descending), so the problem is a 0/1 knapsack over *items* (l, i) of value
   σ²_{l,i} and weight c_l: an optimal item set can always be taken as a prefix within each module,
   since a module's items share one weight and the earlier ones are worth at least as much.
2. Modules with equal c_l form a *cost class*. Inside a class, spending N rank units optimally means
   taking the N largest σ² of the merged class, so each class has one concave value V_c(N) and the
   problem has one integer variable N_c per class — a transformer has a handful of classes
   (q/o, k/v, the three MLP shapes, embeddings), however many layers it has.
3. The LP relaxation is solved by the greedy order σ²/c (Dantzig 1957) with a break ratio λ, and gives
   the upper bound UB = λB + Σ_c P_c(N*_c), P_c(N) = V_c(N) − λ·c·N. Any feasible choice is worth at most
   UB − Σ_c pen_c(N_c), pen_c = P_c(N*_c) − P_c(N_c) ≥ 0 (the Lagrangian reduced-cost bound; the
   "core" idea of Pisinger 1995, "A minimal algorithm for the multiple-choice knapsack problem").
   With a lower bound LB from the greedy, only N_c with pen_c(N_c) ≤ UB − LB can be optimal: a short
   interval around the LP solution. A depth-first search over those intervals, ordered by penalty and
   pruned by the same bound, proves optimality.

``greedy`` (ratio order, skipping items that no longer fit) is the approximation docs/METRICS.md describes;
``solve`` returns the exact optimum with ``exact=True``, or — past ``max_nodes`` evaluated
combinations — the best allocation found with ``exact=False`` and its proven bound.
Pure: numpy arrays in, an ``Allocation`` out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# Relative slack of the floating-point comparisons: allocations within this fraction of the upper
# bound are treated as equal, so "exact" means optimal up to the rounding of the σ² sums.
REL_TOL = 1e-12


@dataclass(frozen=True)
class Allocation:
    """Ranks chosen for every module under a parameter budget.

    ``gain`` is Σ_l Σ_{i≤r_l} σ²_{l,i}; ``upper_bound`` the LP bound no allocation can beat; ``exact``
    whether ``gain`` is proven optimal (to ``REL_TOL``); ``nodes`` the combinations the search evaluated.
    """

    ranks: np.ndarray  # (L,) int64
    cost: int
    gain: float
    upper_bound: float
    exact: bool
    method: str
    nodes: int = 0


@dataclass
class _Class:
    """One cost class: its unit cost, merged σ² (descending), their modules, and prefix sums V(N)."""

    weight: int
    values: np.ndarray  # (n,) σ², descending
    owners: np.ndarray  # (n,) module index of each value
    prefix: np.ndarray  # (n + 1,) V(N) = sum of the N largest values


class RankKnapsack:
    """The budget problem for one set of modules, prepared once and solved for any budget.

    Args:
        gains: per module, its σ² (descending; trailing zeros are ignored — they cost and gain nothing).
        costs: per module, c_l = m_l + n_l, the parameters one unit of LoRA rank costs.
    """

    def __init__(self, gains: Sequence[np.ndarray], costs: Sequence[int]):
        if len(gains) != len(costs):
            raise ValueError(f"gains and costs differ in length: {len(gains)} vs {len(costs)}")
        self.n_modules = len(gains)
        self.costs = np.asarray(costs, dtype=np.int64).reshape(-1)
        if np.any(self.costs <= 0):
            raise ValueError("every module's unit cost m + n must be positive")
        self.max_ranks = np.zeros(self.n_modules, dtype=np.int64)
        per_weight: dict[int, list[tuple[np.ndarray, int]]] = {}
        for l, (g, c) in enumerate(zip(gains, self.costs)):
            g = np.asarray(g, dtype=np.float64).reshape(-1)
            if g.size and (np.any(np.diff(g) > 1e-12 * max(g[0], 1e-300)) or g[-1] < 0):
                raise ValueError(f"gains of module {l} must be non-negative and descending")
            g = g[g > 0]
            self.max_ranks[l] = g.size
            per_weight.setdefault(int(c), []).append((g, l))
        self.classes: list[_Class] = []
        for w, parts in sorted(per_weight.items()):
            values = np.concatenate([g for g, _ in parts]) if parts else np.zeros(0)
            owners = np.concatenate([np.full(g.size, l, dtype=np.int64) for g, l in parts])
            order = np.argsort(-values, kind="stable")
            values, owners = values[order], owners[order]
            self.classes.append(_Class(w, values, owners, np.concatenate([[0.0], np.cumsum(values)])))
        # all items in greedy (ratio) order, for the LP bound and the greedy allocation
        # (within a class the ratio order is the value order, so each class is taken largest first)
        ratios = np.concatenate([np.zeros(0)] + [c.values / c.weight for c in self.classes])
        item_class = np.concatenate(
            [np.zeros(0, np.int64)]
            + [np.full(c.values.size, k, dtype=np.int64) for k, c in enumerate(self.classes)]
        )
        order = np.argsort(-ratios, kind="stable")
        self._ratio, self._item_class = ratios[order], item_class[order]
        weights = np.array([c.weight for c in self.classes] or [1], dtype=np.int64)
        self._item_weight = weights[self._item_class]
        self._item_value = self._ratio * self._item_weight
        self._cum_weight = np.cumsum(self._item_weight)
        self._cum_value = np.cumsum(self._item_value)
        self.total_gain = float(sum(c.prefix[-1] for c in self.classes))
        self.total_cost = int(self._cum_weight[-1]) if self._cum_weight.size else 0

    # ---- helpers -----------------------------------------------------------------------------

    def _ranks_of(self, counts: Sequence[int]) -> np.ndarray:
        """Per-module ranks from the number of items taken in each class (the largest ones)."""
        ranks = np.zeros(self.n_modules, dtype=np.int64)
        for c, n in zip(self.classes, counts):
            if n:
                ranks += np.bincount(c.owners[: int(n)], minlength=self.n_modules)
        return ranks

    def _allocation(
        self, counts: Sequence[int], upper: float, exact: bool, method: str, nodes: int = 0
    ) -> Allocation:
        gain = float(sum(c.prefix[int(n)] for c, n in zip(self.classes, counts)))
        cost = int(sum(c.weight * int(n) for c, n in zip(self.classes, counts)))
        return Allocation(self._ranks_of(counts), cost, gain, upper, exact, method, nodes)

    def _check_budget(self, budget: int) -> int:
        if budget < 0:
            raise ValueError(f"budget must be non-negative, got {budget}")
        return int(budget)

    # ---- LP relaxation and greedy --------------------------------------------------------------

    def lp(self, budget: int) -> tuple[float, float, np.ndarray]:
        """(UB, λ, N*): the LP relaxation's value, its break ratio, and the items per class with ratio > λ."""
        budget = self._check_budget(budget)
        n_take = int(np.searchsorted(self._cum_weight, budget, side="right"))  # whole items that fit
        counts = np.bincount(self._item_class[:n_take], minlength=len(self.classes))
        if n_take == self._ratio.size:  # everything fits
            return self.total_gain, 0.0, counts
        lam = float(self._ratio[n_take])
        before_w = int(self._cum_weight[n_take - 1]) if n_take else 0
        before_v = float(self._cum_value[n_take - 1]) if n_take else 0.0
        upper = before_v + (budget - before_w) * lam
        # N*: items with ratio strictly above λ (ties at λ have zero reduced cost either way)
        above = self._ratio > lam
        star = np.bincount(self._item_class[above], minlength=len(self.classes))
        return upper, lam, star

    def greedy(self, budget: int) -> Allocation:
        """Items in σ²/c order, each taken when it still fits (docs/METRICS.md 'greedy on σ²/(m+n)').

        Within a module the items share one weight, so a skipped item is never followed by a later
        one of the same module: the result is a valid rank per module.
        """
        budget = self._check_budget(budget)
        upper, _, _ = self.lp(budget)
        counts = self._greedy_counts(budget)
        exact = upper - self._value(counts) <= REL_TOL * max(upper, 1e-300)
        return self._allocation(counts, upper, exact, "greedy")

    def _greedy_counts(self, budget: int) -> np.ndarray:
        """Items taken per class by the greedy (within a class, ratio order is value order)."""
        n_take = int(np.searchsorted(self._cum_weight, budget, side="right"))
        counts = np.bincount(self._item_class[:n_take], minlength=len(self.classes)).astype(np.int64)
        left = budget - (int(self._cum_weight[n_take - 1]) if n_take else 0)
        pos = n_take
        while pos < self._ratio.size:  # fill the remainder: at most (largest c)/(smallest c) + classes steps
            fits = np.nonzero(self._item_weight[pos:] <= left)[0]
            if fits.size == 0:
                break
            pos += int(fits[0])
            counts[self._item_class[pos]] += 1
            left -= int(self._item_weight[pos])
            pos += 1
        return counts

    def _value(self, counts: Sequence[int]) -> float:
        return float(sum(c.prefix[int(n)] for c, n in zip(self.classes, counts)))

    # ---- exact -------------------------------------------------------------------------------

    def solve(self, budget: int, max_nodes: int = 20_000_000) -> Allocation:
        """The exact optimum by the reduced-cost search described in the module docstring.

        Args:
            budget: B, parameters.
            max_nodes: a cap on evaluated class combinations; past it the best allocation found so far
                is returned with ``exact=False`` (never reached on transformer-shaped problems).
        """
        budget = self._check_budget(budget)
        upper, lam, star = self.lp(budget)
        counts = self._greedy_counts(budget)
        best = self._value(counts)
        tol = REL_TOL * max(upper, 1e-300)
        if upper - best <= tol:
            return self._allocation(counts, upper, True, "exact")
        # reduced-cost penalty pen_c(N) of every count in each class; only pen ≤ UB − LB can be optimal
        pens, order = [], []
        for k, c in enumerate(self.classes):
            p = c.prefix - lam * c.weight * np.arange(c.values.size + 1)  # P_c(N), concave
            pen = np.maximum(p[int(star[k])] - p, 0.0)
            ok = np.nonzero(pen <= upper - best + tol)[0]
            pens.append(pen)
            order.append(ok[np.argsort(pen[ok], kind="stable")])  # candidates, smallest penalty first
        seq = sorted(range(len(self.classes)), key=lambda k: order[k].size)  # the widest two go last
        search = _Search(self.classes, pens, order, seq, upper, tol, max_nodes, best, counts)
        search.run(budget)
        return self._allocation(search.best_counts, upper, not search.truncated, "exact", search.nodes)


class _Search:
    """Depth-first search over class counts, pruned by UB − Σ penalties ≤ best (module docstring, fact 3)."""

    def __init__(self, classes, pens, order, seq, upper, tol, max_nodes, best, best_counts):
        self.classes, self.pens, self.order, self.seq = classes, pens, order, seq
        self.upper, self.tol, self.max_nodes = upper, tol, max_nodes
        self.best, self.best_counts = best, np.array(best_counts, dtype=np.int64)
        self.nodes = 0
        self.truncated = False

    def run(self, budget: int) -> None:
        self._visit(0, budget, 0.0, 0.0, np.zeros(len(self.classes), dtype=np.int64))

    def _visit(self, depth: int, left: int, penalty: float, value: float, counts: np.ndarray) -> None:
        if len(self.seq) - depth <= 2:
            self._last_two(depth, left, penalty, value, counts)
            return
        k = self.seq[depth]
        c = self.classes[k]
        for n in self.order[k]:
            if self.nodes >= self.max_nodes:
                self.truncated = True
                return
            pen = penalty + self.pens[k][n]
            if self.upper - pen <= self.best + self.tol:
                break  # candidates are in penalty order: every later one is pruned too
            cost = c.weight * int(n)
            if cost > left:
                continue
            self.nodes += 1
            counts[k] = n
            self._visit(depth + 1, left - cost, pen, value + c.prefix[n], counts)
        counts[k] = 0

    def _last_two(self, depth: int, left: int, penalty: float, value: float, counts: np.ndarray) -> None:
        """The last one or two classes at once: each candidate count of the next-to-last, the last filled."""
        last = self.classes[self.seq[-1]]
        if len(self.seq) - depth == 2:
            k = self.seq[depth]
            c = self.classes[k]
            cand = self.order[k]
            cand = cand[
                (self.upper - (penalty + self.pens[k][cand]) > self.best + self.tol)
                & (c.weight * cand <= left)
            ]
            spent, gained = c.weight * cand, c.prefix[cand]
        else:  # a single class left
            k, cand = None, np.zeros(1, dtype=np.int64)
            spent, gained = np.zeros(1, dtype=np.int64), np.zeros(1)
        self.nodes += int(cand.size)
        if cand.size == 0:
            return
        n_last = np.minimum((left - spent) // last.weight, last.values.size)  # V is increasing: fill it
        vals = value + gained + last.prefix[n_last]
        i = int(np.argmax(vals))
        if vals[i] > self.best + self.tol:
            self.best = float(vals[i])
            self.best_counts = counts.copy()
            if k is not None:
                self.best_counts[k] = cand[i]
            self.best_counts[self.seq[-1]] = n_last[i]

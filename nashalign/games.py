"""Constructors for the preference games people reach for, each returning a :class:`PreferenceGame`.

Conventions (SPEC.md section 0): ``P[x, y, y'] = P(y > y' | x)``, ``P + P^T = 1``, ``diag(P) = 1/2``,
skew part ``A = P - 1/2``.  Every constructor builds ``P`` in float64 numpy and makes it exactly
complementary (``P[y', y] = 1 - P[y, y']``); use ``game.to("torch")`` for a torch game.

* :func:`rock_paper_scissors`, :func:`cyclic` -- intransitive games with a known (uniform) equilibrium.
* :func:`bradley_terry` -- transitive preferences from rewards; the equilibrium is the best response.
* :func:`population`, :func:`condorcet` -- mixtures of Bradley-Terry raters; intransitive in general.
* :func:`gpm` -- the General Preference Model (skew-symmetric embedding scores).
* :func:`random_game` -- EGPO's random games (uniform lower triangle).
* :func:`from_counts`, :func:`sample_games` -- estimates (and Beta-posterior draws) from pairwise counts.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np
from scipy.special import expit

from nashalign import _validation as V
from nashalign import _xp
from nashalign.game import PreferenceGame

__all__ = [
    "bradley_terry",
    "condorcet",
    "cyclic",
    "from_counts",
    "gpm",
    "population",
    "random_game",
    "rock_paper_scissors",
    "sample_games",
]

Seed = int | np.random.Generator | None


# ----------------------------------------------------------------------------------------- helpers
def _real_array(x: Any, name: str) -> np.ndarray:
    """float64 numpy copy of a numeric array (numpy, torch or nested sequence), finite and not empty."""
    arr = V.as_float_array(x, name)
    arr = np.array(_xp.to_numpy(arr), dtype=np.float64)
    if arr.ndim and 0 in arr.shape:
        raise ValueError(f"{name} is empty (shape {arr.shape}): every axis needs at least one entry.")
    if arr.size and not np.all(np.isfinite(arr)):
        bad = np.argwhere(~np.isfinite(arr))[:3].tolist()
        raise ValueError(f"{name} has non-finite values (NaN or inf) at indices {bad}; pass finite numbers.")
    return arr


def _complementary(P: np.ndarray) -> np.ndarray:
    """Make ``P + P^T = 1`` and ``diag = 1/2`` hold exactly by keeping the strict lower triangle."""
    n = P.shape[-1]
    low = np.tril(np.ones((n, n), dtype=bool), -1)
    out = np.where(low, P, 1.0 - np.swapaxes(P, -1, -2))
    idx = np.arange(n)
    out[..., idx, idx] = 0.5
    return out


def _check_prob(value: Any, name: str, hint: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r} ({type(value).__name__}).")
    v = float(value)
    if not (0.0 <= v <= 1.0):
        raise ValueError(f"{name} must lie in [0, 1], got {value!r}. {hint}")
    return v


def _check_int(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r} ({type(value).__name__}).")
    if int(value) < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}.")
    return int(value)


def _rng(seed: Seed) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is None or (isinstance(seed, numbers.Integral) and not isinstance(seed, bool)):
        if seed is not None and int(seed) < 0:
            raise ValueError(f"seed must be >= 0 (numpy seeds are non-negative), got {seed}.")
        return np.random.default_rng(seed)
    raise TypeError(f"seed must be an int, a numpy Generator or None, got {seed!r}.")


# ----------------------------------------------------------------------------------------- cyclic games
def rock_paper_scissors(eps: float = 1.0, ref: Any = None) -> PreferenceGame:
    """Rock-paper-scissors as a preference game (SPEC.md section 0).

    Index 0 = rock, 1 = paper, 2 = scissors; paper beats rock, scissors beat paper, rock beats scissors:

        A = (eps/2) [[0, -1, 1], [1, 0, -1], [-1, 1, 0]],   P = 1/2 + A.

    ``eps = 1`` gives deterministic wins, smaller ``eps`` noisier ones.  The unique Nash equilibrium is
    uniform for every ``eps > 0`` (with ``eps = 0`` every policy is one).

    Args:
        eps: win margin in ``[0, 1]``; ``P(paper > rock) = (1 + eps)/2``.
        ref: reference policy ``mu`` (uniform if omitted).

    Examples:
        >>> from nashalign.games import rock_paper_scissors
        >>> rock_paper_scissors(eps=0.5).P[0].tolist()
        [[0.5, 0.25, 0.75], [0.75, 0.5, 0.25], [0.25, 0.75, 0.5]]
    """
    eps = _check_prob(eps, "eps", "It is the win margin: P(paper > rock) = (1 + eps)/2.")
    S = np.array([[0.0, -1.0, 1.0], [1.0, 0.0, -1.0], [-1.0, 1.0, 0.0]])
    return PreferenceGame(0.5 + 0.5 * eps * S, ref=ref)


def cyclic(n: int, eps: float = 1.0, ref: Any = None) -> PreferenceGame:
    """Generalised rock-paper-scissors on ``n`` responses: each response beats the ``(n-1)//2`` before it.

    With ``k = (n - 1) // 2`` and indices mod ``n``: ``A[y, y-d] = eps/2`` and ``A[y-d, y] = -eps/2`` for
    ``d = 1..k`` (response ``y`` beats the ``k`` responses preceding it cyclically, and loses to the ``k``
    following it), every other off-diagonal entry 0 (a tie), ``P = 1/2 + A``.  The orientation follows
    :func:`rock_paper_scissors` (paper = 1 beats rock = 0), so ``cyclic(3)`` *is* rock-paper-scissors.
    ``A`` is circulant with zero row sums, so the uniform policy is always a Nash equilibrium.

    * odd ``n`` (a regular tournament): every pair is decided, each response beats exactly half of the
      others, and the uniform policy is the *unique* equilibrium for ``eps > 0``.
    * even ``n``: each response ties with its opposite ``y + n/2``.  Uniform is still an equilibrium but
      no longer the only one: for ``n = 4``, ``(1/2, 0, 1/2, 0)`` is one too; for ``n = 2`` the two
      responses tie and every policy is an equilibrium.

    Args:
        n: number of responses, ``>= 2``.
        eps: win margin in ``[0, 1]``.
        ref: reference policy ``mu`` (uniform if omitted).

    Examples:
        >>> from nashalign.games import cyclic
        >>> (cyclic(5).P[0] - 0.5)[0].tolist()    # response 0 beats 4 and 3, loses to 1 and 2
        [0.0, -0.5, -0.5, 0.5, 0.5]
    """
    n = _check_int(n, "n", 2)
    eps = _check_prob(eps, "eps", "It is the win margin of each decided pair.")
    d = (np.arange(n)[:, None] - np.arange(n)[None, :]) % n  # (n, n): y - y' mod n
    k = (n - 1) // 2
    sign = np.where((d >= 1) & (d <= k), 1.0, 0.0) - np.where((d >= n - k) & (d <= n - 1), 1.0, 0.0)
    return PreferenceGame(0.5 + 0.5 * eps * sign, ref=ref)


# ----------------------------------------------------------------------------------------- reward models
def _bt_matrix(r: np.ndarray, beta: float) -> np.ndarray:
    with np.errstate(over="ignore"):  # a tiny beta: +-inf logits, whose sigmoid is exactly 0 or 1
        return _complementary(expit((r[..., :, None] - r[..., None, :]) / beta))


def bradley_terry(rewards: Any, beta: float = 1.0, ref: Any = None) -> PreferenceGame:
    """Bradley-Terry preferences from rewards: ``P(y > y') = sigmoid((r(y) - r(y'))/beta)``.

    Transitive: a response with the highest reward is a Condorcet winner, so the Nash equilibrium is
    the pure strategy on ``argmax_y r(y)`` (with tied maxima: any mixture of them).  This is the preference model
    behind reward-model RLHF and DPO, and behind TRL's Nash-MD (which reads ``sigmoid(r1 - r2)`` off a
    reward model).

    Args:
        rewards: ``(n,)`` for one context or ``(C, n)``.
        beta: temperature ``> 0``.
        ref: reference policy ``mu`` (uniform if omitted).

    Examples:
        >>> from nashalign.games import bradley_terry
        >>> g = bradley_terry([0.0, 1.0])
        >>> round(float(g.P[0, 1, 0]), 6)        # sigmoid(1)
        0.731059
    """
    r = _real_array(rewards, "rewards")
    if r.ndim not in (1, 2) or r.shape[-1] < 1:
        raise ValueError(
            f"rewards must have shape (n,) for one context or (C, n) for C contexts; got {r.shape}."
        )
    beta = V.check_positive(beta, "beta", hint="It is the Bradley-Terry temperature.")
    return PreferenceGame(_bt_matrix(r, beta), ref=ref)


def population(rewards: Any, weights: Any = None, beta: float = 1.0, ref: Any = None) -> PreferenceGame:
    """A population of ``K`` Bradley-Terry raters: ``P = sum_k w_k sigmoid((r_k(y) - r_k(y'))/beta)``.

    Each rater alone is transitive, but their average need not be: this is how intransitive human
    preferences arise from individually consistent people (the Condorcet paradox, see
    :func:`condorcet`), and why NLHF targets the minimax winner rather than a reward maximiser.

    Args:
        rewards: ``(K, n)`` (one context) or ``(K, C, n)``: rater ``k``'s reward for each response.
        weights: ``(K,)`` non-negative, summing to 1; uniform if omitted.
        beta: temperature ``> 0`` shared by the raters.
        ref: reference policy ``mu`` (uniform if omitted).

    Examples:
        >>> from nashalign.games import population
        >>> g = population([[1.0, 0.0], [0.0, 3.0]], weights=[0.75, 0.25])
        >>> round(float(g.P[0, 0, 1]), 6)       # 0.75 sigmoid(1) + 0.25 sigmoid(-3)
        0.56015
    """
    r = _real_array(rewards, "rewards")
    if r.ndim not in (2, 3) or r.shape[-1] < 1:
        raise ValueError(
            f"rewards must have shape (K, n) (K raters, one context) or (K, C, n); got {r.shape}. "
            "For a single rater use bradley_terry."
        )
    K = r.shape[0]
    if weights is None:
        w = np.full(K, 1.0 / K)
    else:
        w = _real_array(weights, "weights")
        if w.shape != (K,):
            raise ValueError(f"weights must have shape ({K},), one per rater (rewards has {K}); got {w.shape}.")
        if (w < 0).any():
            raise ValueError(f"weights must be non-negative; got min {w.min():.6g}.")
        if abs(w.sum() - 1.0) > 1e-9:
            raise ValueError(f"weights must sum to 1, got {w.sum():.12g}: pass weights / weights.sum().")
    beta = V.check_positive(beta, "beta", hint="It is the Bradley-Terry temperature.")
    P = np.tensordot(w, _bt_matrix(r, beta), axes=1)  # (n, n) or (C, n, n)
    return PreferenceGame(_complementary(P), ref=ref)


def condorcet(strength: float = 5.0, ref: Any = None) -> PreferenceGame:
    """The Condorcet paradox as a population game: three raters whose majority preference is cyclic.

    Raters rank three responses ``a > b > c``, ``b > c > a`` and ``c > a > b``; as Bradley-Terry raters
    with rewards ``strength * (2, 1, 0)`` cyclically permuted and equal weights (:func:`population`),
    every pairwise majority is 2 to 1, so ``P(a > b) = P(b > c) = P(c > a) > 1/2``: a cycle, with the
    uniform policy as the unique Nash equilibrium (the game is circulant).  As ``strength -> inf`` the
    cycle margin tends to ``2/3``.

    Args:
        strength: reward gap between consecutive ranks, ``> 0``.
        ref: reference policy ``mu`` (uniform if omitted).

    Examples:
        >>> from nashalign.games import condorcet
        >>> g = condorcet(strength=5.0)
        >>> [round(float(g.P[0, i, (i + 1) % 3]), 4) for i in range(3)]     # a>b, b>c, c>a
        [0.6622, 0.6622, 0.6622]
    """
    s = V.check_positive(strength, "strength", hint="It is the reward gap between ranks.")
    base = np.array([2.0, 1.0, 0.0])
    rewards = s * np.stack([np.roll(base, k) for k in range(3)])  # (3 raters, 3 responses)
    return population(rewards, ref=ref)


def gpm(embeddings: Any, eigenvalues: Any = None, beta: float = 1.0, ref: Any = None) -> PreferenceGame:
    """General Preference Model (Zhang et al., arXiv 2410.02197; SPEC.md section 10, GPM).

    Each response has an embedding ``v_y`` in ``R^{2k}``, normalised to unit length here.  With the
    block-diagonal skew operator ``R = diag_l( lambda_l [[0, -1], [1, 0]] )``, ``lambda_l >= 0``, the
    score ``s(y > y') = <R v_y, v_y'> = sum_l lambda_l (v_y[2l] v_y'[2l+1] - v_y[2l+1] v_y'[2l])`` is
    skew-symmetric and

        P(y > y') = sigmoid( s(y > y') / beta ),

    so ``P + P^T = 1`` holds and cyclic preferences are representable (``k = 1`` with three embeddings
    at 120 degrees is rock-paper-scissors-like).

    Args:
        embeddings: ``(n, 2k)`` or ``(C, n, 2k)``; rows must be non-zero (they are L2-normalised).
        eigenvalues: ``lambda``, ``(k,)`` or ``(C, k)``, non-negative; all ones if omitted.
        beta: temperature ``> 0`` (the GPM reward models use 0.1).
        ref: reference policy ``mu`` (uniform if omitted).

    Examples:
        >>> import numpy as np
        >>> from nashalign.games import gpm
        >>> ang = 2 * np.pi * np.arange(3) / 3
        >>> g = gpm(np.stack([np.cos(ang), np.sin(ang)], -1), beta=0.1)
        >>> round(float(g.P[0, 0, 1]), 4), round(float(g.P[0, 1, 2]), 4), round(float(g.P[0, 2, 0]), 4)
        (0.9998, 0.9998, 0.9998)
    """
    v = _real_array(embeddings, "embeddings")
    if v.ndim not in (2, 3) or v.shape[-1] % 2 or v.shape[-1] == 0:
        raise ValueError(
            f"embeddings must have shape (n, 2k) or (C, n, 2k) with an even, non-zero last dimension; got "
            f"{v.shape}."
        )
    norm = np.linalg.norm(v, axis=-1, keepdims=True)
    if (norm == 0).any():
        raise ValueError("embeddings has an all-zero row; every response needs a non-zero embedding.")
    v = v / norm
    k = v.shape[-1] // 2
    if eigenvalues is None:
        lam = np.ones(k)
    else:
        lam = _real_array(eigenvalues, "eigenvalues")
        if lam.shape[-1:] != (k,) or lam.ndim not in (1, 2):
            raise ValueError(
                f"eigenvalues must have shape ({k},) or (C, {k}), one per 2-D block of the embeddings; got "
                f"{lam.shape}."
            )
        if (lam < 0).any():
            raise ValueError(f"eigenvalues must be >= 0 (they scale skew blocks); got min {lam.min():.6g}.")
        if lam.ndim == 2 and (v.ndim != 3 or lam.shape[0] != v.shape[0]):
            raise ValueError(
                f"per-context eigenvalues {lam.shape} need embeddings of shape ({lam.shape[0]}, n, {2 * k})."
            )
    beta = V.check_positive(beta, "beta", hint="It is the GPM temperature.")
    even, odd = v[..., 0::2], v[..., 1::2]  # (..., n, k)
    lam_b = lam[..., None, :]  # broadcast over responses
    score = np.einsum("...ik,...jk->...ij", lam_b * even, odd) - np.einsum("...ik,...jk->...ij", lam_b * odd, even)
    with np.errstate(over="ignore"):  # a tiny beta: +-inf logits, whose sigmoid is exactly 0 or 1
        P = _complementary(expit(score / beta))
    return PreferenceGame(P, ref=ref)


# ----------------------------------------------------------------------------------------- random games
def random_game(
    n: int, num_contexts: int | None = None, seed: Seed = None, ref: Any = None
) -> PreferenceGame:
    """A random preference game as in EGPO's simulations (SPEC.md 5.4).

    For ``i > j``: ``P[i, j] = u ~ U(0, 1)`` i.i.d., ``P[j, i] = 1 - u``; ``diag(P) = 1/2``.  Such games
    are generic: with probability one the Nash equilibrium is unique (its support has odd size, about
    half the responses).

    Args:
        n: number of responses, ``>= 1``.
        num_contexts: ``None`` (default) gives a single-context game built from an ``(n, n)`` matrix, so
            results come back as ``(n,)``; an integer ``C >= 1`` gives a ``(C, n, n)`` game (even for
            ``C = 1``) whose results are ``(C, n)``.
        seed: int, numpy ``Generator`` or None.
        ref: reference policy: None (uniform), ``"random"`` (``mu = softmax(z)`` with logits
            ``z ~ N(0, 1)`` per context, as EGPO initialises its reference), or probabilities.

    Examples:
        >>> from nashalign.games import random_game
        >>> g = random_game(4, num_contexts=2, seed=0, ref="random")
        >>> g.P.shape, g.ref.shape, bool(abs(g.ref.sum(-1) - 1).max() < 1e-12)
        ((2, 4, 4), (2, 4), True)
    """
    n = _check_int(n, "n", 1)
    if num_contexts is not None:
        num_contexts = _check_int(num_contexts, "num_contexts", 1)
    rng = _rng(seed)
    C = 1 if num_contexts is None else num_contexts
    P = _complementary(rng.uniform(size=(C, n, n)))
    if isinstance(ref, str):
        if ref != "random":
            raise ValueError(f"ref must be None, 'random' or an array of probabilities; got {ref!r}.")
        logits = rng.normal(size=(C, n))
        ref = np.exp(_xp.log_normalize(logits))
        if num_contexts is None:
            ref = ref[0]
    return PreferenceGame(P[0] if num_contexts is None else P, ref=ref)


# ----------------------------------------------------------------------------------------- from data
def _check_counts(wins: Any, smoothing: Any) -> tuple[np.ndarray, float]:
    w = _real_array(wins, "wins")
    if w.ndim not in (2, 3) or w.shape[-1] != w.shape[-2]:
        raise ValueError(
            f"wins must be a square count matrix (n, n) or (C, n, n) with wins[y, y'] = number of times y "
            f"beat y'; got shape {w.shape}."
        )
    if (w < 0).any():
        raise ValueError(f"wins must hold non-negative counts; got min {w.min():.6g}.")
    s = V.check_positive(
        smoothing, "smoothing", allow_zero=True, hint="It is the pseudo-count added to each side of a pair."
    )
    return w, s


def from_counts(
    wins: Any, smoothing: float = 1.0, ref: Any = None, return_stderr: bool = False
) -> PreferenceGame | tuple[PreferenceGame, np.ndarray]:
    """Estimate ``P`` from pairwise comparison counts, with additive (Beta-prior) smoothing.

    With ``w[y, y']`` = times ``y`` beat ``y'`` (the diagonal is ignored) and pseudo-count ``s``:

        P_hat[y, y'] = (w[y, y'] + s) / (w[y, y'] + w[y', y] + 2 s),    diag = 1/2,

    the posterior mean under independent ``Beta(s, s)`` priors per pair (``s = 1``: Laplace's rule), so
    ``P_hat + P_hat^T = 1`` exactly.  A pair never compared gets 1/2 (with ``s = 0`` too).  Half a win
    per tie is the usual way to feed ties in.

    Uncertainty: ``return_stderr=True`` also returns the posterior standard deviation of each entry,
    ``sqrt(a b / ((a + b)^2 (a + b + 1)))`` with ``a = w[y, y'] + s``, ``b = w[y', y] + s`` (0 on the
    diagonal; 0.5/sqrt(3) ~ 0.29 when nothing is known).  To see how uncertain the *equilibrium* is,
    draw games from the posterior with :func:`sample_games` and solve them all at once.

    Args:
        wins: ``(n, n)`` or ``(C, n, n)`` non-negative counts (fractional counts allowed).
        smoothing: pseudo-count ``s >= 0``.
        ref: reference policy ``mu`` (uniform if omitted).
        return_stderr: also return the per-entry standard errors, same shape as ``wins``.

    Examples:
        >>> from nashalign.games import from_counts
        >>> g, se = from_counts([[0, 8], [2, 0]], smoothing=1.0, return_stderr=True)
        >>> g.P[0].tolist()
        [[0.5, 0.75], [0.25, 0.5]]
        >>> round(float(se[0, 1]), 4)
        0.1201
    """
    w, s = _check_counts(wins, smoothing)
    a = w + s
    b = np.swapaxes(w, -1, -2) + s
    tot = a + b
    with np.errstate(invalid="ignore", divide="ignore"):
        P = np.where(tot > 0, a / np.where(tot > 0, tot, 1.0), 0.5)
    P = _complementary(P)
    game = PreferenceGame(P, ref=ref)
    if not return_stderr:
        return game
    with np.errstate(invalid="ignore", divide="ignore"):
        var = np.where(tot > 0, a * b / (np.where(tot > 0, tot, 1.0) ** 2 * (tot + 1)), 1.0 / 12.0)
    se = np.sqrt(var)
    idx = np.arange(w.shape[-1])
    se[..., idx, idx] = 0.0
    return game, se


def sample_games(
    wins: Any, num_samples: int, smoothing: float = 1.0, seed: Seed = None, ref: Any = None
) -> PreferenceGame:
    """Draw preference games from the Beta posterior of pairwise counts (see :func:`from_counts`).

    For each pair ``y > y'`` independently, ``P[y, y'] ~ Beta(w[y, y'] + s, w[y', y] + s)`` and
    ``P[y', y] = 1 - P[y, y']`` (with ``s = 0``: a pair with no data gets
    ``U(0, 1)``, one-sided data a point mass at 0 or 1).  The draws are
    stacked as contexts, so one batched :func:`~nashalign.equilibrium.solve_nash` call gives the
    posterior distribution of the equilibrium.

    Args:
        wins: ``(n, n)`` or ``(C, n, n)`` non-negative counts.
        num_samples: number of posterior draws ``K >= 1``.
        smoothing: prior pseudo-count ``s >= 0``.
        seed: int, numpy ``Generator`` or None.
        ref: reference policy ``(n,)`` shared by all draws (uniform if omitted).

    Returns:
        A game with ``K`` contexts (``(n, n)`` counts) or ``K * C`` contexts ordered draw-major
        (context ``k * C + c`` is draw ``k`` of context ``c``).

    Examples:
        >>> import numpy as np
        >>> from nashalign.games import sample_games
        >>> g = sample_games([[0, 30], [10, 0]], num_samples=1000, seed=0)
        >>> g.P.shape, round(float(np.mean(g.P[:, 0, 1])), 2)      # posterior mean 31/42
        ((1000, 2, 2), 0.74)
    """
    w, s = _check_counts(wins, smoothing)
    K = _check_int(num_samples, "num_samples", 1)
    rng = _rng(seed)
    w3 = w if w.ndim == 3 else w[None]  # (C, n, n)
    a = np.broadcast_to(w3 + s, (K, *w3.shape))
    b = np.broadcast_to(np.swapaxes(w3, -1, -2) + s, (K, *w3.shape))
    # Beta(0, b) and Beta(a, 0) (smoothing 0, one-sided data) are point masses at 0 and 1.
    draws = rng.beta(np.where(a > 0, a, 1.0), np.where(b > 0, b, 1.0))  # (K, C, n, n)
    draws = np.where((a == 0) & (b > 0), 0.0, np.where((b == 0) & (a > 0), 1.0, draws))
    P = _complementary(draws).reshape(-1, w3.shape[-1], w3.shape[-1])
    return PreferenceGame(P, ref=ref)

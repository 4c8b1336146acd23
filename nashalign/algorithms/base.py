"""The algorithm contract: hyperparameters in a frozen object, everything that changes in a :class:`State`.

One iteration of every algorithm is (DESIGN.md 4.4)::

    for phase in range(alg.phases):
        opps   = alg.opponents(state, phase)          # whom the signal is measured against
        signal = sum(o.coef * P(. > o.logq) for o in opps)   # exact, or estimated from samples
        state  = alg.update(state, signal, phase)     # the exact step, written once in log space

and ``alg.loss(LossInputs)`` is the torch lift of the same step: over a softmax table with exact
weights, its minimiser (or, for ``lift == "gradient_step"`` algorithms, one SGD step on it) reproduces
``update``.  The driver (:func:`nashalign.solve`) and the LLM trainer own the loop, averaging,
recording and checkpoints; an algorithm never averages or damps on its own.
"""

from __future__ import annotations

import math
import numbers
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, ClassVar

import numpy as np

from nashalign import _xp
from nashalign._validation import check_positive, check_step_size, check_tau
from nashalign.algorithms import _blocks, _losses

Array = Any
Schedule = Callable[[int], float]

#: Opponent kinds, i.e. which policy the signal is measured against.  The LLM trainer maps each kind
#: to a sampler: "current" = pi_t (the iterate at the start of the iteration), "mixture" = the
#: geometric mixture pi_t^{1-w} mu^w (token-level for LMs), "previous" = pi_{t-1}, "half" = the
#: extragradient half-step policy, "ema" = the policy with exponentially averaged logits/parameters.
OPPONENT_KINDS = ("current", "mixture", "previous", "half", "ema")


@dataclass(frozen=True)
class State:
    """Everything that changes between iterations (plain arrays, so it checkpoints as data).

    Attributes:
        t: number of completed iterations.
        logp: ``(C, n)`` log-probabilities of the current iterate ``pi_t``.
        logmu: ``(C, n)`` log-probabilities of the reference ``mu``.
        memory: algorithm-specific arrays (previous iterate, half step, EMA logits, ...).
    """

    t: int
    logp: Array
    logmu: Array
    memory: Mapping[str, Array] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Numpy copy for checkpoints: ``{"t", "logp", "logmu", "memory/<key>"...}``."""
        out: dict[str, Any] = {"t": np.asarray(self.t), "logp": _xp.to_numpy(self.logp), "logmu": _xp.to_numpy(self.logmu)}
        for k, v in self.memory.items():
            out[f"memory/{k}"] = _xp.to_numpy(v)
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], like: Array | None = None) -> State:
        """Inverse of :meth:`to_dict`; arrays are moved to the library/device/dtype of ``like``."""

        def conv(x: Any) -> Array:
            return _xp.like(np.asarray(x), like) if like is not None else np.asarray(x)

        mem = {k.split("/", 1)[1]: conv(v) for k, v in d.items() if k.startswith("memory/")}
        return cls(int(np.asarray(d["t"])), conv(d["logp"]), conv(d["logmu"]), mem)


class _Placeholder(Mapping):
    """Memory that has every key (a placeholder array), for :meth:`Algorithm.neural_opponents`."""

    def __init__(self, value: Array) -> None:
        self._value = value

    def __getitem__(self, key: str) -> Array:
        return self._value

    def __iter__(self):
        return iter(())

    def __len__(self) -> int:
        return 0


@dataclass(frozen=True)
class Opponent:
    """One term ``coef * P(. > q)`` of the signal.

    Attributes:
        kind: one of :data:`OPPONENT_KINDS` (how a neural trainer samples ``q``).
        coef: its coefficient in the signal (e.g. 2 and -1 for optimistic rules).
        logq: the tabular ``(C, n)`` log-policy ``log q``.
        mix: for ``kind == "mixture"``, the weight ``w`` on ``mu`` in ``q ∝ pi_t^{1-w} mu^w``;
            for ``kind == "ema"``, the EMA rate.
    """

    kind: str
    coef: float
    logq: Array
    mix: float = 0.0


@dataclass
class LossInputs:
    """What any policy can give the loss, for a batch of ``B`` rows of ``K`` responses each.

    Attributes:
        logp: ``(B, K)`` log ``pi_theta(y | x)`` of the policy being trained (sequence log-probs for LMs).
        logp_anchor: ``(B, K)`` log ``pi_t(y | x)``, the iterate at the start of the iteration (no grad).
        logp_ref: ``(B, K)`` log ``mu(y | x)`` of the reference (no grad).
        signal: ``(B, K)`` estimates of ``s(y) = sum_j c_j P(y > q_j)`` for each response; any per-row
            constant is allowed for pairwise forms (e.g. INPO's ``(P(y > y'), 1/2)`` for a pair from ``q``).
        weights: ``(B,)`` row weights: probabilities when responses are enumerated exactly, ``None``
            (uniform) when they are sampled.
        logp_behavior: ``(B, K)`` log-probs under the policy that drew the responses (policy-gradient
            form only; defaults to ``logp_anchor``).
        step: the iteration ``t`` (for step-size schedules).
        logp_previous: ``(B, K)`` log ``pi_{t-1}(y | x)``, the iterate of the previous iteration (no grad);
            only for algorithms with ``uses_previous = True`` (APO, MNPO), whose anchor involves it.
    """

    logp: Any
    logp_anchor: Any
    logp_ref: Any
    signal: Any
    weights: Any = None
    logp_behavior: Any = None
    step: int = 0
    logp_previous: Any = None


@dataclass
class LossOutput:
    """A scalar ``loss`` to minimise plus named ``terms`` for logging (detached)."""

    loss: Any
    terms: dict[str, Any]


@dataclass(frozen=True)
class Algorithm(ABC):
    """Base of every algorithm: frozen hyperparameters ``eta`` (step size or schedule) and ``tau`` (KL strength).

    Subclasses are final dataclasses with a ``name`` registered in :data:`nashalign.algorithms.ALGORITHMS`.

    Class attributes:
        name: registry key.
        phases: steps per iteration (2 for extragradient).
        reference: the paper (authors, title, arXiv id).
        tau_rule: ``"any"``, ``"positive"`` (needs ``tau > 0``) or ``"zero"`` (an unregularised rule).
        lift: ``"minimizer"`` (the loss minimiser is the step) or ``"gradient_step"`` (one SGD step is).
        forms: loss forms this algorithm accepts; the first is the default.
        estimator: the default sampled-feedback estimator (``"opponent"``, ``"pair"`` or ``"winrate"``).
        uses_previous: the loss reads ``LossInputs.logp_previous`` (``log pi_{t-1}``, kept in
            ``state.memory["prev"]``): the trainer keeps the previous iterate and scores the responses under it.
    """

    eta: float | Schedule = 0.1
    tau: float = 0.0

    name: ClassVar[str] = ""
    phases: ClassVar[int] = 1
    reference: ClassVar[str] = ""
    tau_rule: ClassVar[str] = "any"
    lift: ClassVar[str] = "minimizer"
    forms: ClassVar[tuple[str, ...]] = ("regression",)
    estimator: ClassVar[str] = "opponent"
    uses_previous: ClassVar[bool] = False

    def __post_init__(self) -> None:
        _check_field_types(self)
        if callable(self.eta):
            self.step_size(0)  # a schedule must give a valid eta_0 (a negative or non-numeric one raises here)
        else:
            object.__setattr__(self, "eta", check_positive(self.eta, "eta", hint="eta is the step size."))
        tau = check_tau(self.tau)
        object.__setattr__(self, "tau", tau)
        if self.tau_rule == "positive" and tau <= 0:
            raise ValueError(
                f"{self.name} needs a regularised game: tau must be > 0, got {self.tau!r}. Pass tau=0.01 "
                "(or larger), or use an unregularised rule such as 'mwu'/'omwu'/'egpo' with tau=0."
            )
        if self.tau_rule == "zero" and tau != 0:
            raise ValueError(
                f"{self.name} is the unregularised rule: tau must be 0, got {self.tau!r}. For the "
                "KL-regularised game use 'omd' (or 'inpo', 'egpo', 'nash_md')."
            )

    # ------------------------------------------------------------------ properties read by every sampled path
    @property
    def loss_form(self) -> str:
        """The loss form in use (``"regression"`` for rules without a ``form`` field)."""
        return getattr(self, "form", None) or "regression"

    @property
    def pairwise(self) -> bool:
        """True when the loss takes ``(R, 2)`` pair rows (pairwise forms), False for per-response rows."""
        return self.loss_form in _losses.PAIR_FORMS

    @property
    def on_policy(self) -> bool:
        """True when the loss needs the responses drawn from ``pi_t`` itself (the policy-gradient form's
        importance weights use the behaviour log-probs, which only ``pi_t`` responses provide everywhere)."""
        return self.loss_form == "pg"

    # ------------------------------------------------------------------ hyperparameters
    def step_size(self, t: int) -> float:
        """``eta_t``: the constant step, or the schedule evaluated at ``t`` (checked: a finite real ``> 0``)."""
        if callable(self.eta):
            return check_step_size(self.eta(t), t)
        return float(self.eta)

    def hyperparameters(self) -> dict[str, Any]:
        """Field values (schedules by ``repr``), for records and configs."""
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            out[f.name] = v if isinstance(v, (int, float, str, bool, type(None))) else repr(v)
        return out

    def replace(self, **changes: Any) -> Algorithm:
        """A copy with some hyperparameters changed (validated again)."""
        return replace(self, **changes)

    # ------------------------------------------------------------------ the contract
    def neural_opponents(self, t: int, phase: int = 0) -> tuple[Opponent, ...]:
        """The opponents of ``phase`` at iteration ``t`` as *specifications* (kind, coef, mix) for neural trainers.

        Neural policies have no tabular ``logq``; the trainer maps each :attr:`Opponent.kind` to a sampler
        (current policy, token-level mixture with ``mu`` of weight ``mix``, previous iterate, half step, EMA).
        Computed by calling :meth:`opponents` on a 1x1 placeholder state, so it cannot drift from the tabular rule.
        """
        z = np.zeros((1, 1))
        st = State(int(t), z, z, _Placeholder(z))
        return tuple(Opponent(o.kind, float(o.coef), None, float(o.mix)) for o in self.opponents(st, phase))

    @abstractmethod
    def init(self, logp0: Array, logmu: Array) -> State:
        """The state at ``t = 0`` from the initial log-policy ``(C, n)`` and the reference ``(C, n)``."""

    @abstractmethod
    def opponents(self, state: State, phase: int = 0) -> tuple[Opponent, ...]:
        """The opponents whose win rates make up the signal of ``phase``."""

    @abstractmethod
    def update(self, state: State, signal: Array, phase: int = 0) -> State:
        """The exact step given ``signal = sum_j c_j P(. > q_j)`` (``(C, n)``): written once, in log space."""

    @abstractmethod
    def accept(self, state: State, logp_new: Array, phase: int = 0) -> State:
        """Place a new log-policy (the exact target, or a trained policy in sampled mode) into the state."""

    @abstractmethod
    def loss(self, inputs: LossInputs) -> LossOutput:
        """The torch lift of ``update`` (see :class:`LossInputs`)."""

    @abstractmethod
    def loss_anchor(self, inputs: LossInputs) -> Any:
        """The anchor ``a`` the loss regresses against, as a ``(B, K)`` tensor."""


@dataclass(frozen=True)
class MirrorAlgorithm(Algorithm):
    """Rules of the form (M): ``log pi_{t+1} = normalize(a_t + eta_t s_t)``, ``a_t = (1 - eta tau) log pi_t + eta tau log mu``.

    Subclasses name their opponents (and, for several phases, where each phase's result goes); the
    exact ``update`` and the torch ``loss`` both come from :func:`._blocks.prox_anchor` and the
    signal, so the tabular step and its neural lift cannot drift apart.

    ``form`` picks the loss form (:mod:`._losses`): ``"regression"`` (pairwise square),
    ``"logistic"`` (DNO's soft-label logistic), ``"pg"`` (importance-weighted proximal policy
    gradient), or a paper's heuristic (``"sppo"``, ``"contrastive"``).
    """

    form: str | None = None
    max_log_ratio: float = 20.0

    def __post_init__(self) -> None:
        super().__post_init__()
        form = self.forms[0] if self.form is None else self.form
        if form not in self.forms:
            raise ValueError(f"{self.name}: unknown loss form {form!r}; choose one of {list(self.forms)}.")
        object.__setattr__(self, "form", form)
        if not callable(self.eta) and self.tau * float(self.eta) > 1 + 1e-12:
            raise ValueError(
                f"{self.name}: eta * tau must be <= 1 (the anchor (1 - eta tau) log pi_t + eta tau log mu is a "
                f"geometric mixture); got eta={self.eta}, tau={self.tau}. Lower eta below 1/tau = {1 / self.tau:.4g}."
            )

    # ------------------------------------------------------------ shared definition
    def anchor(self, logp: Array, logmu: Array, t: int) -> Array:
        """``a_t = (1 - eta_t tau) log pi_t + eta_t tau log mu`` (numpy, torch, any shape)."""
        return _blocks.prox_anchor(logp, logmu, self.step_size(t), self.tau)

    def init_memory(self, logp0: Array, logmu: Array) -> dict[str, Array]:
        """Extra state at ``t = 0`` (none by default)."""
        return {}

    def init(self, logp0: Array, logmu: Array) -> State:
        return State(0, logp0, logmu, self.init_memory(logp0, logmu))

    def target(self, state: State, signal: Array, phase: int = 0) -> Array:
        """The exact step's result (rule M) for ``phase``; ``(C, n)`` log-probabilities."""
        eta = self.step_size(state.t)
        if self.tau * eta > 1 + 1e-12:
            raise ValueError(
                f"{self.name}: the schedule gave eta_{state.t} = {eta:.4g} with tau = {self.tau}: eta * tau must be <= 1."
            )
        return _blocks.mirror_step(self.anchor(state.logp, state.logmu, state.t), eta, signal)

    def update(self, state: State, signal: Array, phase: int = 0) -> State:
        return self.accept(state, self.target(state, signal, phase), phase)

    def accept(self, state: State, logp_new: Array, phase: int = 0) -> State:
        return State(state.t + 1, logp_new, state.logmu, self.next_memory(state, logp_new))

    def next_memory(self, state: State, logp_new: Array) -> dict[str, Array]:
        """Memory after an iteration (none by default)."""
        return {}

    def loss_anchor(self, inputs: LossInputs) -> Any:
        return self.anchor(inputs.logp_anchor, inputs.logp_ref, inputs.step)

    def loss(self, inputs: LossInputs) -> LossOutput:
        inputs = without_zero_weight_terms(inputs)
        eta = self.step_size(inputs.step)
        anchor = self.loss_anchor(inputs)
        fn = _losses.FORMS[self.form]
        if self.form == "pg":
            behavior = inputs.logp_anchor if inputs.logp_behavior is None else inputs.logp_behavior
            out = fn(inputs.logp, anchor, inputs.signal, eta, inputs.weights, behavior, self.max_log_ratio)
        else:
            out = fn(inputs.logp, anchor, inputs.signal, eta, inputs.weights)
        loss = out.pop("loss")
        return LossOutput(loss, {"loss": loss.detach(), **{k: v.detach() for k, v in out.items()}})


def _check_field_types(alg: Algorithm) -> None:
    """Every hyperparameter declared ``float`` is a real number (not NaN) and every one declared ``str`` a string
    (``None`` where the annotation allows it), so a subclass's range checks see numbers; ``eta`` may be a schedule."""
    for f in fields(alg):
        v, ann = getattr(alg, f.name), str(f.type)
        if f.name == "eta" or (v is None and "None" in ann):
            continue
        label = f"{alg.name or type(alg).__name__}: {f.name}"
        if ann.startswith("float") or ann.startswith("int"):
            if isinstance(v, bool) or not isinstance(v, numbers.Real):
                raise TypeError(f"{label} must be a real number, got {v!r} ({type(v).__name__}).")
            if math.isnan(float(v)):
                raise ValueError(f"{label} must be a number, got NaN.")
        elif ann.startswith("str") and not isinstance(v, str):
            raise TypeError(f"{label} must be a string, got {v!r} ({type(v).__name__}).")


def without_zero_weight_terms(inputs: LossInputs) -> LossInputs:
    """Zero the inputs of weight-0 rows/responses so they add neither NaN to the loss nor to its gradient.

    An exact enumeration over a policy with a zero-probability response gives rows of weight 0 whose anchor
    is ``-inf``; ``0 * inf`` would make the whole loss NaN.  Replacing those entries by 0 before any arithmetic
    keeps the loss value (weight 0) and gives them a zero gradient.
    """
    w = inputs.weights
    if w is None:
        return inputs
    import torch

    zero = (w == 0) if w.ndim == inputs.logp.ndim else (w == 0).unsqueeze(-1)
    if not bool(zero.any()):
        return inputs
    zero = zero.expand(inputs.logp.shape)

    def fix(x: Any) -> Any:
        return None if x is None else torch.where(zero, torch.zeros((), dtype=x.dtype, device=x.device), x)

    return replace(
        inputs, logp=fix(inputs.logp), logp_anchor=fix(inputs.logp_anchor), logp_ref=fix(inputs.logp_ref),
        signal=fix(inputs.signal), logp_behavior=fix(inputs.logp_behavior), logp_previous=fix(inputs.logp_previous),
    )


def current(state: State) -> Opponent:
    """The opponent ``q = pi_t`` (self-play)."""
    return Opponent("current", 1.0, state.logp)


def response_prompts(index: Any, prompt: Any, num_responses: int) -> Any:
    """``(N,)`` the row prompt of each response: ``out[index[r, j]] = prompt[r]`` (0 for responses in no row)."""
    import torch

    out = torch.zeros(num_responses, dtype=torch.long, device=index.device)
    out[index.reshape(-1)] = prompt.to(index.device).unsqueeze(-1).expand_as(index).reshape(-1)
    return out


def feedback_inputs(
    alg: Algorithm,
    feedback: Any,
    logp_anchor: Any,
    logp_ref: Any,
    *,
    step: int = 0,
    weights: Any = None,
    logp_previous: Any = None,
) -> LossInputs:
    """The ONE feedback-to-:class:`LossInputs` builder of the sampled paths (tabular sampled mode and LLM trainer).

    Args:
        alg: the algorithm (its :attr:`Algorithm.on_policy` decides whether off-policy responses are allowed).
        feedback: a :class:`nashalign.estimators.Feedback` (``index (R, K)`` into its ``N`` responses).
        logp_anchor: ``(N,)`` ``log pi_t(y)`` per response, or ``None`` when the caller reads it off the
            gradient pass (then ``logp_anchor``/``logp_behavior`` are filled per minibatch).
        logp_ref: ``(N,)`` ``log mu(y)`` per response.
        step: the iteration ``t``.
        weights: ``(R,)`` row weights when the rows enumerate responses exactly (probabilities); ``None`` for
            sampled rows (uniform).
        logp_previous: ``(N,)`` ``log pi_{t-1}(y)`` per response, for :attr:`Algorithm.uses_previous`
            algorithms (APO, MNPO); ``None`` otherwise.

    Returns:
        ``(R, K)`` inputs with ``logp = None`` (the caller puts ``log pi_theta`` there): anchor and reference
        gathered by ``feedback.index``, the signal, the behaviour log-probs (``pi_t``'s when the responses
        come from it, else None: only on-policy forms use them) and ``log pi_{t-1}`` when given.

    Raises:
        ValueError: an on-policy loss form (:attr:`Algorithm.on_policy`) with responses from another policy.
    """
    idx = feedback.index.to(logp_ref.device)
    anchor = None if logp_anchor is None else logp_anchor[idx]
    ref = logp_ref[idx]
    signal = feedback.signal.to(device=ref.device, dtype=ref.dtype)
    if feedback.behavior != "current" and alg.on_policy:
        raise ValueError(
            f"{alg.name}: the policy-gradient form needs responses from pi_t, but the responses come from the "
            f"'{feedback.behavior}' opponent; use estimator='opponent' (trainer.estimator=opponent)."
        )
    behavior = anchor if feedback.behavior == "current" else None
    if weights is not None:
        weights = weights.to(device=ref.device, dtype=ref.dtype)
    previous = None if logp_previous is None else logp_previous[idx]
    return LossInputs(None, anchor, ref, signal, weights, behavior, step, previous)

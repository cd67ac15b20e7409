"""KL regularisation toward a reference policy: estimators, terms, controllers.

Per-token estimators of KL(π_θ ‖ π_ref) from the log-probabilities of the
sampled tokens, with ``δ = logp - ref_logp`` (verl ``kl_penalty``,
``kl_penalty_forward``; loss reference §4.1):

========  ===================================================  ============
name      value                                                aliases
========  ===================================================  ============
``k1``    ``δ``                                                ``kl``
``k2``    ``δ² / 2``                                           ``mse``
``k3``    ``x = clip(-δ, ±20)``; ``clip(e^x - x - 1, ±10)``    ``low_var_kl``
``abs``   ``|δ|``
``X+``    the value of ``X`` with the gradient of ``k2``
========  ===================================================  ============

The ``+`` (straight-through) forms are ``δ²/2 - sg(δ²/2) + sg(X)``; every
name and alias takes the suffix (verl-project/verl#6058: verl advertised them
but raised NotImplementedError). ``k3`` is verl's clamped ``low_var_kl`` by
default; ``clamp=False`` gives TRL's unclamped k3 (TRL has only k3).

The KL enters either the loss (:func:`kl_penalty`, current log-probs, with
the loss's aggregation) or the reward (:func:`kl_in_reward`, old log-probs,
no gradient); its coefficient is fixed or adaptive
(:func:`fixed_kl_controller`, :func:`adaptive_kl_controller`).
"""

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from jaxrl_group import _checks
from jaxrl_group.losses import _aggregation
from jaxrl_group.losses import _common

Deferred = _aggregation.Deferred

_BASES = ("k1", "k2", "k3", "abs")
KL_ESTIMATORS = _BASES + tuple(f"{b}+" for b in _BASES)
KL_ALIASES = {"kl": "k1", "mse": "k2", "low_var_kl": "k3"}
_KNOWN = KL_ESTIMATORS + tuple(KL_ALIASES) + tuple(f"{a}+" for a in KL_ALIASES)

# verl's clamps for k3 (``low_var_kl``): on the log-ratio and on the result.
K3_LOG_RATIO_CLAMP = 20.0
K3_VALUE_CLAMP = 10.0


def resolve_estimator(estimator: str, what: str) -> tuple[str, bool]:
  """Returns (base name, straight-through?) or raises naming the known ones."""
  if not isinstance(estimator, str) or estimator not in _KNOWN:
    raise ValueError(
        f"{what}: unknown estimator {estimator!r}; known estimators: "
        f"{', '.join(KL_ESTIMATORS)} (aliases: "
        f"{', '.join(f'{a}->{b}' for a, b in KL_ALIASES.items())}, each "
        f"also with the '+' suffix).")
  straight_through = estimator.endswith("+")
  base = estimator[:-1] if straight_through else estimator
  return KL_ALIASES.get(base, base), straight_through


def _base_kl(delta: jax.Array, base: str, clamp: bool) -> jax.Array:
  if base == "k1":
    return delta
  if base == "k2":
    return 0.5 * jnp.square(delta)
  if base == "abs":
    return delta * jnp.sign(delta)  # |δ| with gradient sign(δ), 0 at δ = 0
  x = -delta  # log(π_ref / π_θ)
  if clamp:
    x = jnp.clip(x, -K3_LOG_RATIO_CLAMP, K3_LOG_RATIO_CLAMP)
  kl = jnp.exp(x) - x - 1
  if clamp:
    kl = jnp.clip(kl, -K3_VALUE_CLAMP, K3_VALUE_CLAMP)
  return kl


def kl_estimate(logp_BxGxT: jax.typing.ArrayLike,
                ref_logp_BxGxT: jax.typing.ArrayLike, *,
                estimator: str, clamp: bool = True) -> jax.Array:
  """Per-token estimate of KL(π_θ ‖ π_ref) from sampled-token log-probs.

  verl ``kl_penalty`` (loss reference §4.1); ``δ = logp - ref_logp``:
  ``k1`` = δ, ``k2`` = δ²/2, ``k3`` = ``e^x - x - 1`` with ``x = -δ``
  (Schulman's k3; the GRPO paper's KL, arXiv 2402.03300), ``abs`` = |δ|
  (gradient sign(δ), 0 at δ = 0 as in torch), and
  the straight-through ``k1+``, ``k2+``, ``k3+``, ``abs+``: the base value
  with the gradient of k2, ``δ²/2 - sg(δ²/2) + sg(base)``, so the gradient
  wrt ``logp`` is δ whatever the value. Aliases as in verl: ``kl`` -> k1,
  ``mse`` -> k2, ``low_var_kl`` -> k3 (also with ``+``).

  Elementwise: any shape works as long as both inputs share it (the names
  say the usual ``[B, G, T]``). No gradient is stopped here: ``ref_logp``
  normally carries none.

  Args:
    logp_BxGxT: log-probs of the sampled tokens under the policy.
    ref_logp_BxGxT: log-probs under the reference policy, same shape.
    estimator: one of ``KL_ESTIMATORS`` or an alias (``KL_ALIASES``).
    clamp: k3 only (and ``k3+``): True (default) is verl's ``low_var_kl``,
      ``x`` clamped to [-20, 20] and the value to [-10, 10], finite for any
      log-ratio (and a zero gradient where a clamp binds); False is TRL's
      unclamped k3 (``exp(ref - logp) - (ref - logp) - 1``), which overflows
      for ``ref - logp`` beyond ~88 in float32. Ignored by the others.

  Returns:
    The per-token estimate, shape of the inputs.
  """
  what = "kl_estimate"
  base, straight_through = resolve_estimator(estimator, what)
  _checks.check_floating("logp_BxGxT", logp_BxGxT, what=what)
  _checks.check_floating("ref_logp_BxGxT", ref_logp_BxGxT, what=what)
  if jnp.shape(logp_BxGxT) != jnp.shape(ref_logp_BxGxT):
    raise ValueError(
        f"{what}: ref_logp_BxGxT must have the shape of logp_BxGxT "
        f"{jnp.shape(logp_BxGxT)}, got {jnp.shape(ref_logp_BxGxT)}.")
  delta = jnp.asarray(logp_BxGxT) - jnp.asarray(ref_logp_BxGxT)
  kl = _base_kl(delta, base, clamp)
  if not straight_through:
    return kl
  k2 = 0.5 * jnp.square(delta)
  sg = jax.lax.stop_gradient
  return k2 - sg(k2) + sg(kl)


def _masked_inputs(what, logp_name, logp, ref_logp, mask):
  """Checks the inputs and zeroes both log-probs at masked tokens.

  Padding can hold any value (-inf, garbage); replacing it before the
  estimator keeps masked tokens out of the value and the gradient (no
  ``0 * inf`` NaN through the masked branch).
  """
  _common.check_tokens(what, mask, **{logp_name: logp},
                       ref_logp_BxGxT=ref_logp)
  mask = jnp.asarray(mask)
  return (jnp.where(mask, logp, 0), jnp.where(mask, ref_logp, 0), mask)


def kl_penalty(logp_BxGxT: jax.typing.ArrayLike,
               ref_logp_BxGxT: jax.typing.ArrayLike,
               mask_BxGxT: jax.typing.ArrayLike, *,
               estimator: str, coef: float | jax.Array, mode: str,
               norm_constant: float | None = None,
               clamp: bool = True) -> Deferred:
  """The KL term of the loss: ``coef * agg(kl(logp, ref_logp), M, mode)``.

  verl ``actor.use_kl_loss`` (``kl_loss_type`` default ``low_var_kl``,
  ``kl_loss_coef`` 0.001), aggregated with the loss's ``loss_agg_mode``; TRL
  ``beta`` > 0 adds ``beta * k3`` (unclamped: ``clamp=False``) to the
  per-token loss inside the same aggregation; the GRPO paper (arXiv
  2402.03300) uses k3 with β = 0.04. Uses the **current** log-probs, so the
  gradient flows through ``logp``. Pass the loss's ``mode`` (and
  ``norm_constant``): the Deferred then has the loss's weight. Every valid
  token contributes, including those of zero-advantage groups (verl's and
  TRL's default; huggingface/trl#7068): mask them out in ``mask_BxGxT`` to
  exclude them.

  Args:
    logp_BxGxT: current policy log-probs of the sampled tokens.
    ref_logp_BxGxT: reference policy log-probs.
    mask_BxGxT: bool, valid tokens; masked tokens contribute neither value
      nor gradient whatever their log-probs.
    estimator: see :func:`kl_estimate`.
    coef: the KL coefficient β; may be traced (a controller's ``coef``).
    mode: an aggregation mode of ``_aggregation.AGGREGATIONS``.
    norm_constant: C for ``seq_mean_token_sum_norm``.
    clamp: k3's clamps (see :func:`kl_estimate`).

  Returns:
    ``Deferred(coef * total, weight)``; ``.value`` is added to the loss.
  """
  what = "kl_penalty"
  resolve_estimator(estimator, what)
  logp, ref_logp, mask = _masked_inputs(what, "logp_BxGxT", logp_BxGxT,
                                        ref_logp_BxGxT, mask_BxGxT)
  kl = kl_estimate(logp, ref_logp, estimator=estimator, clamp=clamp)
  agg = _aggregation.aggregate(kl, mask, mode, norm_constant=norm_constant)
  return Deferred(coef * agg.total, agg.weight)


class KLInReward(NamedTuple):
  """The output of :func:`kl_in_reward`."""

  penalty_BxGxT: jax.Array  # coef * kl per token, 0 at masked tokens
  penalty_BxG: jax.Array  # penalty_BxGxT summed over each sequence
  kl_mean: Deferred  # unscaled kl, seq-mean-token-mean (verl's current_kl)


def kl_in_reward(old_logp_BxGxT: jax.typing.ArrayLike,
                 ref_logp_BxGxT: jax.typing.ArrayLike,
                 mask_BxGxT: jax.typing.ArrayLike, *,
                 coef: float | jax.Array, estimator: str = "k1",
                 clamp: bool = True) -> KLInReward:
  """The KL penalty folded into the rewards, from the old log-probs.

  verl ``algorithm.use_kl_in_reward`` (``kl_penalty`` default ``kl`` = k1):
  ``r_t <- score_t - β kl(old_logp, ref_logp)_t m_t``; REINFORCE++ (k1 in the
  reward); TRL RLOO: k1 summed over the sequence and subtracted from the
  outcome reward (β = 0.05). The caller subtracts ``penalty_BxGxT`` from
  token rewards or ``penalty_BxG`` from outcome rewards. Both log-probs are
  under ``stop_gradient``: the reward carries no gradient.

  Args:
    old_logp_BxGxT: log-probs of the behaviour (rollout) policy.
    ref_logp_BxGxT: log-probs of the reference policy.
    mask_BxGxT: bool, valid tokens.
    coef: β; may be traced (e.g. a KL controller's ``state.coef``).
    estimator: see :func:`kl_estimate` (default ``k1``, verl's ``kl``);
      a ``+`` form has the base's value here, since no gradient flows.
    clamp: k3's clamps (see :func:`kl_estimate`).

  Returns:
    ``KLInReward(penalty_BxGxT, penalty_BxG, kl_mean)``; ``kl_mean`` is the
    unscaled KL averaged per sequence and then over non-empty sequences, the
    ``current_kl`` verl feeds to :func:`adaptive_kl_controller`.
  """
  what = "kl_in_reward"
  resolve_estimator(estimator, what)
  sg = jax.lax.stop_gradient
  logp, ref_logp, mask = _masked_inputs(what, "old_logp_BxGxT",
                                        old_logp_BxGxT, ref_logp_BxGxT,
                                        mask_BxGxT)
  kl = kl_estimate(sg(logp), sg(ref_logp), estimator=estimator, clamp=clamp)
  kl = jnp.where(mask, kl, 0)
  penalty = coef * kl
  kl_mean = _aggregation.aggregate(kl, mask, "seq_mean_token_mean")
  return KLInReward(penalty, jnp.sum(penalty, axis=-1), kl_mean)


class KLControllerState(NamedTuple):
  """State of a KL coefficient controller."""

  coef: jax.Array  # shape=(), dtype=float32; the current β


class KLController(NamedTuple):
  """An ``(init, update)`` pair of a KL coefficient controller.

  Attributes:
    init: ``init() -> KLControllerState``.
    update: ``update(current_kl, n_steps, state) -> KLControllerState``.
  """

  init: Callable[[], KLControllerState]
  update: Callable[[jax.typing.ArrayLike, jax.typing.ArrayLike,
                    KLControllerState], KLControllerState]


def _scalar(what, name, x):
  if jnp.ndim(x) != 0:
    raise ValueError(f"{what}: {name} must be a scalar, got shape "
                     f"{jnp.shape(x)}.")
  return jnp.asarray(x, jnp.float32)


def adaptive_kl_controller(*, init_coef: float = 0.001,
                           target_kl: float = 0.1,
                           horizon: float = 10000) -> KLController:
  """The adaptive KL coefficient of verl ``algorithm.kl_ctrl.type=adaptive``.

  After Ziegler et al. (arXiv 1909.08593), as in verl's
  ``AdaptiveKLController``: ``e = clip(current_kl / target_kl - 1, -0.2,
  0.2)`` and ``coef <- coef * (1 + e * n_steps / horizon)``. verl passes
  ``n_steps`` = the batch size (number of sequences) and ``current_kl`` = the
  seq-mean-token-mean KL of the batch (``kl_in_reward(...).kl_mean.value``).
  Keep the state in the train state (loss reference §4.3). Defaults are
  verl's: ``kl_coef`` 0.001, ``target_kl`` 0.1, ``horizon`` 10000.

  Args:
    init_coef: the initial β (>= 0).
    target_kl: the KL the controller steers to (> 0).
    horizon: the number of ``n_steps`` over which the coefficient can move by
      a factor of about e^(±0.2) (> 0).

  Returns:
    ``KLController(init, update)``, both jittable.
  """
  what = "adaptive_kl_controller"
  _checks.check_nonnegative("init_coef", init_coef, what=what)
  for name, v in (("target_kl", target_kl), ("horizon", horizon)):
    if _checks.is_concrete(v) and not float(v) > 0:
      raise ValueError(f"{what}: {name} must be > 0, got {v!r}.")

  def init_fn() -> KLControllerState:
    return KLControllerState(coef=jnp.asarray(init_coef, jnp.float32))

  def update_fn(current_kl, n_steps, state):
    kl = _scalar(what, "current_kl", current_kl)
    n = _scalar(what, "n_steps", n_steps)
    error = jnp.clip(kl / target_kl - 1, -0.2, 0.2)
    coef = state.coef * (1 + error * n / horizon)
    return KLControllerState(coef=coef.astype(jnp.float32))

  return KLController(init=init_fn, update=update_fn)


def fixed_kl_controller(coef: float) -> KLController:
  """A constant KL coefficient (verl ``algorithm.kl_ctrl.type=fixed``).

  Same interface as :func:`adaptive_kl_controller`; ``update`` ignores its
  inputs and returns the state unchanged.

  Args:
    coef: β (>= 0).

  Returns:
    ``KLController(init, update)``.
  """
  what = "fixed_kl_controller"
  _checks.check_nonnegative("coef", coef, what=what)

  def init_fn() -> KLControllerState:
    return KLControllerState(coef=jnp.asarray(coef, jnp.float32))

  def update_fn(current_kl, n_steps, state):
    _scalar(what, "current_kl", current_kl)
    _scalar(what, "n_steps", n_steps)
    return state

  return KLController(init=init_fn, update=update_fn)

"""Builds the full policy objective (surrogate + KL + entropy) from a config.

All terms share one aggregation mode and one token mask, so they share one
weight: the objective is a single ``Deferred`` whose micro-batch parts
combine exactly. Names and options are checked when the objective is built,
before anything is traced or compiled.
"""

import inspect
from typing import Any, Callable, Mapping, NamedTuple

import jax

from jaxrl_group import _checks
from jaxrl_group.losses import _aggregation
from jaxrl_group.losses import _entropy
from jaxrl_group.losses import _kl
from jaxrl_group.losses._aggregation import Deferred
from jaxrl_group.losses._surrogates import FIXED_AGGREGATION
from jaxrl_group.losses._surrogates import SURROGATES

# The recognised config keys with their defaults. Any other key is an error
# (a field that does nothing must fail loudly).
DEFAULTS: dict[str, Any] = {
    "surrogate": "ppo_clip",
    "surrogate_kwargs": {},
    "aggregation": "seq_mean_token_mean",
    "norm_constant": None,
    "kl_coef": 0.0,
    "kl_estimator": "k3",
    "entropy_coef": 0.0,
}


class LossInputs(NamedTuple):
  """Per-token inputs of the objective; optional ones may be None."""

  logp_BxGxT: jax.Array  # current policy, with gradient
  old_logp_BxGxT: jax.Array | None  # behaviour policy (None: reinforce)
  adv: jax.Array  # [B, G] or [B, G, T] advantages
  mask_BxGxT: jax.Array  # bool, valid tokens
  ref_logp_BxGxT: jax.Array | None = None  # needed when kl_coef != 0
  entropy_BxGxT: jax.Array | None = None  # needed when entropy_coef != 0
  is_weights_BxGxT: jax.Array | None = None  # rollout correction weights
  key: jax.Array | None = None  # PRNG key (clip_cov)


Objective = Callable[[LossInputs], tuple[Deferred, dict[str, Deferred]]]


def _as_dict(config: Mapping[str, Any] | Any) -> dict[str, Any]:
  if hasattr(config, "to_dict"):  # ml_collections.ConfigDict
    config = config.to_dict()
  return dict(config)


def _is_on(coef) -> bool:
  return not (_checks.is_concrete(coef) and coef == 0)


def make_objective(config: Mapping[str, Any] | Any = None) -> Objective:
  """Returns ``objective(inputs) -> (loss, metrics)`` from a config.

  Example::

    objective = make_objective({"surrogate": "ppo_clip",
                                "surrogate_kwargs": {"eps_high": 0.28},
                                "aggregation": "token_mean",
                                "kl_coef": 0.04})
    loss, metrics = objective(LossInputs(logp, old_logp, adv, mask,
                                         ref_logp_BxGxT=ref_logp))
    loss.value  # differentiate this; combine micro-batch parts first

  Args:
    config: a dict or ``ConfigDict`` with keys of ``DEFAULTS``:
      ``surrogate`` (a name of ``SURROGATES``), ``surrogate_kwargs`` (its
      keyword arguments), ``aggregation`` (a mode of ``AGGREGATIONS``),
      ``norm_constant`` (C of ``seq_mean_token_sum_norm``), ``kl_coef`` and
      ``kl_estimator`` (KL to the reference policy in the loss),
      ``entropy_coef`` (entropy bonus).

  Returns:
    The objective. ``loss`` is a ``Deferred``; ``metrics`` maps names to
    ``Deferred`` token means (and the loss terms).

  Raises:
    ValueError: an unknown key, surrogate, keyword, aggregation or KL
      estimator (the message lists the known ones), or an aggregation the
      surrogate's definition fixes otherwise.
  """
  what = "make_objective"
  cfg = _as_dict(config or {})
  unknown = sorted(set(cfg) - set(DEFAULTS))
  if unknown:
    raise ValueError(f"{what}: unknown config keys {unknown}; known keys: "
                     f"{sorted(DEFAULTS)}.")
  cfg = {**DEFAULTS, **cfg}
  name, mode = cfg["surrogate"], cfg["aggregation"]
  if name not in SURROGATES:
    raise ValueError(f"{what}: unknown surrogate {name!r}; known: "
                     f"{', '.join(sorted(SURROGATES))}.")
  _checks.check_choice("aggregation", mode, _aggregation.AGGREGATIONS,
                       what=what)
  fixed = FIXED_AGGREGATION.get(name)
  if fixed is not None and mode != fixed:
    raise ValueError(
        f"{what}: surrogate {name!r} fixes the aggregation to {fixed!r} (its "
        f"definition's form), got aggregation={mode!r}; set "
        f"aggregation={fixed!r}.")
  if mode == "seq_mean_token_sum_norm" and cfg["norm_constant"] is None:
    raise ValueError(f"{what}: aggregation 'seq_mean_token_sum_norm' needs "
                     "norm_constant (Dr.GRPO's C, e.g. the maximum "
                     "completion length).")
  surrogate = SURROGATES[name]
  kwargs = dict(cfg["surrogate_kwargs"] or {})
  params = inspect.signature(surrogate).parameters
  allowed = sorted(p for p, v in params.items()
                   if v.kind == v.KEYWORD_ONLY and p != "key")
  bad = sorted(set(kwargs) - set(allowed))
  if bad:
    raise ValueError(f"{what}: surrogate {name!r} has no options {bad}; its "
                     f"options: {allowed}.")
  takes_key = "key" in params
  kl_coef, ent_coef = cfg["kl_coef"], cfg["entropy_coef"]
  kl_on, ent_on = _is_on(kl_coef), _is_on(ent_coef)
  if kl_on:
    _kl.resolve_estimator(cfg["kl_estimator"], what)
  agg_kw = dict(mode=mode, norm_constant=cfg["norm_constant"])

  def objective(inputs: LossInputs) -> tuple[Deferred, dict[str, Deferred]]:
    mask = inputs.mask_BxGxT
    extra = {"key": inputs.key} if takes_key else {}
    loss_tok, metrics = surrogate(inputs.logp_BxGxT, inputs.old_logp_BxGxT,
                                  inputs.adv, mask, **kwargs, **extra)
    if inputs.is_weights_BxGxT is not None:
      loss_tok = loss_tok * jax.lax.stop_gradient(inputs.is_weights_BxGxT)
    policy = _aggregation.aggregate(loss_tok, mask, **agg_kw)
    metrics = dict(metrics, policy_loss=policy)
    total = policy.total
    if kl_on:
      if inputs.ref_logp_BxGxT is None:
        raise ValueError(f"{what}: kl_coef is {kl_coef} but "
                         "ref_logp_BxGxT is None; pass the reference "
                         "policy's log-probs or set kl_coef=0.")
      kl = _kl.kl_penalty(inputs.logp_BxGxT, inputs.ref_logp_BxGxT, mask,
                          estimator=cfg["kl_estimator"], coef=kl_coef,
                          **agg_kw)
      metrics["kl_loss"] = kl
      metrics["kl"] = _aggregation.token_mean(
          _kl.kl_estimate(inputs.logp_BxGxT, inputs.ref_logp_BxGxT,
                          estimator=cfg["kl_estimator"]), mask)
      total = total + kl.total
    if ent_on:
      if inputs.entropy_BxGxT is None:
        raise ValueError(f"{what}: entropy_coef is {ent_coef} but "
                         "entropy_BxGxT is None; pass the per-token entropy "
                         "or set entropy_coef=0.")
      ent = _entropy.entropy_bonus(inputs.entropy_BxGxT, mask, coef=ent_coef,
                                   **agg_kw)
      metrics["entropy_loss"] = ent
      total = total + ent.total
    if inputs.entropy_BxGxT is not None:
      metrics["entropy"] = _aggregation.token_mean(inputs.entropy_BxGxT, mask)
    loss = Deferred(total, policy.weight)
    metrics["loss"] = loss
    return loss, metrics

  return objective

"""The estimator registry: names to factories, with what each one needs.

``REGISTRY`` maps a name to its factory; ``INFO`` records, per name, the
minimum group size, the context inputs it requires, the input layout and
whether the output is per sample ``[B, G]`` or per token ``[B, G, T]``. The
train step uses ``INFO`` to reject a config before anything is compiled.
"""

from typing import Any, Callable, NamedTuple

from jaxrl_group.advantages._base import AdvantageTransform

Factory = Callable[..., AdvantageTransform]


class EstimatorInfo(NamedTuple):
  """What an estimator needs and gives.

  Attributes:
    name: the registry name.
    factory: the function building the transform from keyword arguments.
    min_group_size: the smallest G the estimator accepts.
    requires: context inputs it needs in ``update(..., **ctx)``.
    input_name: the shape-suffixed name of its main input.
    token_level: True if it returns ``[B, G, T]`` advantages.
    stateful: True if its state carries memory across steps.
  """

  name: str
  factory: Factory
  min_group_size: int = 1
  requires: tuple[str, ...] = ()
  input_name: str = "rewards_BxG"
  token_level: bool = False
  stateful: bool = False


REGISTRY: dict[str, Factory] = {}
INFO: dict[str, EstimatorInfo] = {}

# Keyword presets reproducing a peer library's conventions exactly.
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    # verl core_algos loop estimators (compute_*_outcome_advantage):
    # unbiased std, (s - mean) / (std + 1e-6), singleton -> mean 0, std 1.
    "verl": {
        "grpo": dict(std="unbiased", eps=1e-6, eps_placement="std",
                     std_floor=0.0, singleton="raw"),
        "dr_grpo": dict(singleton="raw"),
        "rloo": dict(singleton="raw"),
        "opo": dict(singleton="raw"),
        "gpg": dict(singleton="raw"),
        "grpo_passk": dict(std="unbiased", eps=1e-6),
        "reinforce_pp_baseline": dict(singleton="raw", eps=1e-8),
        "reinforce_pp": dict(eps=1e-8),
        "gae": dict(eps=1e-8),
        "optimal_token_baseline": dict(eps=1e-8, handle_zero_tail=True,
                                       singleton="raw"),
        "batch_whiten": dict(std="unbiased", eps=1e-8, eps_placement="var"),
    },
    # verl grpo_vectorized / rloo_vectorized: variance floored at 1e-6
    # (std >= 1e-3) and then + 1e-6; rloo singletons give 0. The float32
    # E[x^2] - E[x]^2 of verl#6348 is deliberately not reproduced.
    "verl_vectorized": {
        "grpo": dict(std="unbiased", eps=1e-6, eps_placement="std",
                     std_floor=1e-3, singleton="raw"),
        "rloo": dict(singleton="zero"),
    },
    # TRL GRPOTrainer / RLOOTrainer: unbiased nanstd, + 1e-4, NaN -> 0 (so a
    # singleton group gives 0).
    "trl": {
        "grpo": dict(std="unbiased", eps=1e-4, eps_placement="std",
                     std_floor=0.0, singleton="zero"),
        "dr_grpo": dict(singleton="zero"),
        "batch_std": dict(std="unbiased", eps=1e-4, singleton="zero"),
        "rloo": dict(singleton="zero"),
        "gdpo": dict(std="unbiased", eps=1e-4),
    },
}


def register(name: str, *, min_group_size: int = 1,
             requires: tuple[str, ...] = (), input_name: str = "rewards_BxG",
             token_level: bool = False, stateful: bool = False,
             ) -> Callable[[Factory], Factory]:
  """Decorator adding a factory to ``REGISTRY`` under ``name``.

  Example::

    @register("my_estimator", min_group_size=2)
    def my_estimator(*, eps=1e-6) -> AdvantageTransform: ...
  """

  def deco(factory: Factory) -> Factory:
    if name in REGISTRY:
      raise ValueError(f"advantage estimator {name!r} is already registered.")
    REGISTRY[name] = factory
    INFO[name] = EstimatorInfo(name, factory, min_group_size, tuple(requires),
                               input_name, token_level, stateful)
    return factory

  return deco


def _unknown(name: str) -> ValueError:
  return ValueError(
      f"unknown advantage estimator {name!r}; known names: "
      f"{', '.join(sorted(REGISTRY))}.")


def info(name: str) -> EstimatorInfo:
  """Returns the ``EstimatorInfo`` of a registered name."""
  if name not in INFO:
    raise _unknown(name)
  return INFO[name]


def get(name: str, *, preset: str | None = None,
        **kwargs: Any) -> AdvantageTransform:
  """Builds the registered estimator ``name`` with ``kwargs``.

  Args:
    name: a key of ``REGISTRY``.
    preset: optional key of ``PRESETS`` (``"verl"``, ``"verl_vectorized"``,
      ``"trl"``) whose conventions are applied first; ``kwargs`` override it.
    **kwargs: the factory's keyword arguments.

  Returns:
    The ``AdvantageTransform``.

  Raises:
    ValueError: unknown name or preset (the message lists the known ones).
  """
  if name not in REGISTRY:
    raise _unknown(name)
  if preset is not None:
    if preset not in PRESETS:
      raise ValueError(f"unknown preset {preset!r}; known presets: "
                       f"{', '.join(sorted(PRESETS))}.")
    if name not in PRESETS[preset]:
      raise ValueError(
          f"preset {preset!r} has no conventions for {name!r}; it covers "
          f"{', '.join(sorted(PRESETS[preset]))}.")
    kwargs = {**PRESETS[preset][name], **kwargs}
  try:
    return REGISTRY[name](**kwargs)
  except TypeError as e:
    raise TypeError(f"advantage estimator {name!r}: {e}") from e

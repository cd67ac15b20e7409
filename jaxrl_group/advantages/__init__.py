"""Group-relative advantage estimators as composable ``(init, update)`` pairs.

Example::

  from jaxrl_group import advantages as adv

  tx = adv.get("grpo")                      # or adv.grpo(eps=1e-4)
  state = tx.init(rewards_BxG)
  adv_BxG, state = tx.update(rewards_BxG, state, mask_BxG=mask_BxG)
"""

from jaxrl_group.advantages._base import AdvantageTransform
from jaxrl_group.advantages._base import CONTEXT_KEYS
from jaxrl_group.advantages._base import EmptyState
from jaxrl_group.advantages._base import InitFn
from jaxrl_group.advantages._base import MissingContextError
from jaxrl_group.advantages._base import stateless
from jaxrl_group.advantages._base import UpdateFn
from jaxrl_group.advantages._combining import chain
from jaxrl_group.advantages._combining import named_chain
from jaxrl_group.advantages._group import batch_whiten
from jaxrl_group.advantages._group import center
from jaxrl_group.advantages._group import clip
from jaxrl_group.advantages._group import scale
from jaxrl_group.advantages._grouping import factorize
from jaxrl_group.advantages._grouping import group_by
from jaxrl_group.advantages._grouping import GroupedRows
from jaxrl_group.advantages._grouping import Grouping
from jaxrl_group.advantages._grouping import ungroup
from jaxrl_group.advantages._inject import inject_hyperparams
from jaxrl_group.advantages._inject import InjectHyperparamsState
from jaxrl_group.advantages._outcome import batch_std
from jaxrl_group.advantages._outcome import dr_grpo
from jaxrl_group.advantages._outcome import gdpo
from jaxrl_group.advantages._outcome import gpg
from jaxrl_group.advantages._outcome import grpo
from jaxrl_group.advantages._outcome import grpo_passk
from jaxrl_group.advantages._outcome import opo
from jaxrl_group.advantages._outcome import remax
from jaxrl_group.advantages._outcome import rloo
from jaxrl_group.advantages._registry import EstimatorInfo
from jaxrl_group.advantages._registry import get
from jaxrl_group.advantages._registry import info
from jaxrl_group.advantages._registry import INFO
from jaxrl_group.advantages._registry import PRESETS
from jaxrl_group.advantages._registry import register
from jaxrl_group.advantages._registry import REGISTRY
from jaxrl_group.advantages._token import gae
from jaxrl_group.advantages._token import optimal_token_baseline
from jaxrl_group.advantages._token import reinforce_pp
from jaxrl_group.advantages._token import reinforce_pp_baseline

# Published estimators, one module each (_est_<name>.py), registered on import.
import importlib as _importlib  # pylint: disable=g-import-not-at-top
import pkgutil as _pkgutil  # pylint: disable=g-import-not-at-top
for _module in _pkgutil.iter_modules(__path__):
  if _module.name.startswith("_est_"):
    _importlib.import_module(f"{__name__}.{_module.name}")

__all__ = (
    "AdvantageTransform",
    "CONTEXT_KEYS",
    "EmptyState",
    "EstimatorInfo",
    "GroupedRows",
    "Grouping",
    "INFO",
    "InitFn",
    "InjectHyperparamsState",
    "MissingContextError",
    "PRESETS",
    "REGISTRY",
    "UpdateFn",
    "batch_std",
    "batch_whiten",
    "center",
    "chain",
    "clip",
    "dr_grpo",
    "factorize",
    "gae",
    "gdpo",
    "get",
    "gpg",
    "group_by",
    "grpo",
    "grpo_passk",
    "info",
    "inject_hyperparams",
    "named_chain",
    "opo",
    "optimal_token_baseline",
    "register",
    "reinforce_pp",
    "reinforce_pp_baseline",
    "remax",
    "rloo",
    "scale",
    "stateless",
    "ungroup",
)

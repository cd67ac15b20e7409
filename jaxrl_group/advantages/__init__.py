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

# Published estimators, one module each.
from jaxrl_group.advantages._est_aapo import aapo
from jaxrl_group.advantages._est_canon import CanonState
from jaxrl_group.advantages._est_canon import canon
from jaxrl_group.advantages._est_capo import CapoState
from jaxrl_group.advantages._est_capo import capo
from jaxrl_group.advantages._est_copo import copo
from jaxrl_group.advantages._est_dcpo import DcpoState
from jaxrl_group.advantages._est_dcpo import dcpo
from jaxrl_group.advantages._est_difficulty_weight import difficulty_weight
from jaxrl_group.advantages._est_edge_eda import edge_eda
from jaxrl_group.advantages._est_group_baseline import group_baseline
from jaxrl_group.advantages._est_group_robust import GroupRobustState
from jaxrl_group.advantages._est_group_robust import group_robust
from jaxrl_group.advantages._est_hapo import hapo
from jaxrl_group.advantages._est_ktae import ktae
from jaxrl_group.advantages._est_mapo import mapo
from jaxrl_group.advantages._est_ngrpo import ngrpo
from jaxrl_group.advantages._est_oblr_baseline import oblr_baseline
from jaxrl_group.advantages._est_pshw import pshw
from jaxrl_group.advantages._est_pvpo import PvpoState
from jaxrl_group.advantages._est_pvpo import pvpo
from jaxrl_group.advantages._est_qae import qae
from jaxrl_group.advantages._est_s_grpo import s_grpo
from jaxrl_group.advantages._est_sgpo_graded import sgpo_graded
from jaxrl_group.advantages._est_srpo_bonus import srpo_bonus
from jaxrl_group.advantages._est_v05_baseline import v05_baseline

__all__ = (
    "aapo",
    "AdvantageTransform",
    "batch_std",
    "batch_whiten",
    "canon",
    "CanonState",
    "capo",
    "CapoState",
    "center",
    "chain",
    "clip",
    "CONTEXT_KEYS",
    "copo",
    "dcpo",
    "DcpoState",
    "difficulty_weight",
    "dr_grpo",
    "edge_eda",
    "EmptyState",
    "EstimatorInfo",
    "factorize",
    "gae",
    "gdpo",
    "get",
    "gpg",
    "group_baseline",
    "group_by",
    "group_robust",
    "GroupedRows",
    "Grouping",
    "GroupRobustState",
    "grpo",
    "grpo_passk",
    "hapo",
    "INFO",
    "info",
    "InitFn",
    "inject_hyperparams",
    "InjectHyperparamsState",
    "ktae",
    "mapo",
    "MissingContextError",
    "named_chain",
    "ngrpo",
    "oblr_baseline",
    "opo",
    "optimal_token_baseline",
    "PRESETS",
    "pshw",
    "pvpo",
    "PvpoState",
    "qae",
    "register",
    "REGISTRY",
    "reinforce_pp",
    "reinforce_pp_baseline",
    "remax",
    "rloo",
    "s_grpo",
    "scale",
    "sgpo_graded",
    "srpo_bonus",
    "stateless",
    "ungroup",
    "UpdateFn",
    "v05_baseline",
)

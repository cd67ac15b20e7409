"""Policy losses, KL and entropy terms, and exact loss aggregation.

Every per-token loss returns ``(loss_BxGxT, metrics)``; ``aggregate`` reduces
it to a deferred ``(total, weight)`` pair whose micro-batch and device parts
combine exactly; ``make_objective`` assembles surrogate, KL and entropy terms
from a config. See ``reference/losses.md`` for the formulas.
"""

from jaxrl_group.losses._aggregation import AGGREGATIONS
from jaxrl_group.losses._aggregation import Deferred
from jaxrl_group.losses._aggregation import aggregate
from jaxrl_group.losses._aggregation import combine
from jaxrl_group.losses._aggregation import token_mean
from jaxrl_group.losses._composer import DEFAULTS
from jaxrl_group.losses._composer import LossInputs
from jaxrl_group.losses._composer import make_objective
from jaxrl_group.losses._correction import IS_LEVELS
from jaxrl_group.losses._correction import IS_MODES
from jaxrl_group.losses._correction import REJECTION_MODES
from jaxrl_group.losses._correction import importance_weights
from jaxrl_group.losses._correction import opsm_mask
from jaxrl_group.losses._correction import rejection_mask
from jaxrl_group.losses._entropy import AdaptiveEntropyCoef
from jaxrl_group.losses._entropy import AdaptiveEntropyCoefState
from jaxrl_group.losses._entropy import adaptive_entropy_coef
from jaxrl_group.losses._entropy import entropy_bonus
from jaxrl_group.losses._entropy import entropy_from_logits
from jaxrl_group.losses._entropy import entropy_from_logits_chunked
from jaxrl_group.losses._entropy import targeted_entropy
from jaxrl_group.losses._entropy import top_entropy_mask
from jaxrl_group.losses._kl import KL_ALIASES
from jaxrl_group.losses._kl import KL_ESTIMATORS
from jaxrl_group.losses._kl import KLController
from jaxrl_group.losses._kl import KLControllerState
from jaxrl_group.losses._kl import KLInReward
from jaxrl_group.losses._kl import adaptive_kl_controller
from jaxrl_group.losses._kl import fixed_kl_controller
from jaxrl_group.losses._kl import kl_estimate
from jaxrl_group.losses._kl import kl_in_reward
from jaxrl_group.losses._kl import kl_penalty
from jaxrl_group.losses._length import SHAPING_FORMS
from jaxrl_group.losses._length import is_truncated
from jaxrl_group.losses._length import mask_truncated_completions
from jaxrl_group.losses._length import overlong_filter_mask
from jaxrl_group.losses._length import overlong_reward_shaping
from jaxrl_group.losses._logprobs import token_logprobs
from jaxrl_group.losses._logprobs import token_logprobs_chunked
from jaxrl_group.losses._objectives import DYPO_EASY
from jaxrl_group.losses._objectives import DYPO_EMPTY
from jaxrl_group.losses._objectives import DYPO_HARD
from jaxrl_group.losses._objectives import DYPO_MIXED
from jaxrl_group.losses._objectives import HptCoefs
from jaxrl_group.losses._objectives import bvpo_loss
from jaxrl_group.losses._objectives import bvpo_optimal_alpha
from jaxrl_group.losses._objectives import dpo_loss
from jaxrl_group.losses._objectives import dypo_loss
from jaxrl_group.losses._objectives import dypo_route
from jaxrl_group.losses._objectives import group_alignment_loss
from jaxrl_group.losses._objectives import hpt_switch
from jaxrl_group.losses._objectives import sft_loss
from jaxrl_group.losses._surrogates import CISPO_CONVENTIONS
from jaxrl_group.losses._surrogates import FIXED_AGGREGATION
from jaxrl_group.losses._surrogates import HAPO_NEG_SCALES
from jaxrl_group.losses._surrogates import HapoEntropyStats
from jaxrl_group.losses._surrogates import SURROGATES
from jaxrl_group.losses._surrogates import clip_cov
from jaxrl_group.losses._surrogates import cispo
from jaxrl_group.losses._surrogates import gmpo
from jaxrl_group.losses._surrogates import gspo
from jaxrl_group.losses._surrogates import gspo_token
from jaxrl_group.losses._surrogates import hapo_clip
from jaxrl_group.losses._surrogates import hapo_entropy_scale
from jaxrl_group.losses._surrogates import kl_cov
from jaxrl_group.losses._surrogates import luspo
from jaxrl_group.losses._surrogates import ppo_clip
from jaxrl_group.losses._surrogates import reinforce
from jaxrl_group.losses._surrogates import sapo
from jaxrl_group.losses._surrogates import vespo

__all__ = (
    "adaptive_entropy_coef",
    "adaptive_kl_controller",
    "AdaptiveEntropyCoef",
    "AdaptiveEntropyCoefState",
    "aggregate",
    "AGGREGATIONS",
    "bvpo_loss",
    "bvpo_optimal_alpha",
    "cispo",
    "CISPO_CONVENTIONS",
    "clip_cov",
    "combine",
    "DEFAULTS",
    "Deferred",
    "dpo_loss",
    "DYPO_EASY",
    "DYPO_EMPTY",
    "DYPO_HARD",
    "dypo_loss",
    "DYPO_MIXED",
    "dypo_route",
    "entropy_bonus",
    "entropy_from_logits",
    "entropy_from_logits_chunked",
    "FIXED_AGGREGATION",
    "fixed_kl_controller",
    "gmpo",
    "group_alignment_loss",
    "gspo",
    "gspo_token",
    "hapo_clip",
    "hapo_entropy_scale",
    "HAPO_NEG_SCALES",
    "HapoEntropyStats",
    "hpt_switch",
    "HptCoefs",
    "importance_weights",
    "IS_LEVELS",
    "IS_MODES",
    "is_truncated",
    "KL_ALIASES",
    "kl_cov",
    "kl_estimate",
    "KL_ESTIMATORS",
    "kl_in_reward",
    "kl_penalty",
    "KLController",
    "KLControllerState",
    "KLInReward",
    "LossInputs",
    "luspo",
    "make_objective",
    "mask_truncated_completions",
    "opsm_mask",
    "overlong_filter_mask",
    "overlong_reward_shaping",
    "ppo_clip",
    "reinforce",
    "rejection_mask",
    "REJECTION_MODES",
    "sapo",
    "sft_loss",
    "SHAPING_FORMS",
    "SURROGATES",
    "targeted_entropy",
    "token_logprobs",
    "token_logprobs_chunked",
    "token_mean",
    "top_entropy_mask",
    "vespo",
)

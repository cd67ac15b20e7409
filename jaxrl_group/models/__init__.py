"""Decoder-only transformers of the Qwen2 / Llama family, in Flax NNX."""

from jaxrl_group.models._config import CONFIGS
from jaxrl_group.models._config import get_model_config
from jaxrl_group.models._config import ModelConfig
from jaxrl_group.models._layers import apply_rope
from jaxrl_group.models._layers import attention
from jaxrl_group.models._layers import rms_norm
from jaxrl_group.models._layers import rope_inv_freq
from jaxrl_group.models._transformer import decode_step
from jaxrl_group.models._transformer import DecodeCache
from jaxrl_group.models._transformer import extend
from jaxrl_group.models._transformer import forward
from jaxrl_group.models._transformer import init_decode_cache
from jaxrl_group.models._transformer import init_params
from jaxrl_group.models._transformer import param_axes
from jaxrl_group.models._transformer import param_shapes
from jaxrl_group.models._transformer import param_table
from jaxrl_group.models._transformer import Params
from jaxrl_group.models._transformer import prefill
from jaxrl_group.models._transformer import prompt_layout
from jaxrl_group.models._transformer import PromptCache
from jaxrl_group.models._transformer import Transformer
from jaxrl_group.models._transformer import unembed
from jaxrl_group.models.hf import config_from_hf
from jaxrl_group.models.hf import config_to_hf
from jaxrl_group.models.hf import load_hf_checkpoint
from jaxrl_group.models.hf import save_hf_checkpoint

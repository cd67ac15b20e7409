"""A jittable sampler that prefills each prompt once per group."""

from jaxrl_group.sampling._sampler import filter_logits
from jaxrl_group.sampling._sampler import make_sampler
from jaxrl_group.sampling._sampler import Rollout
from jaxrl_group.sampling._sampler import sample

"""Device meshes and shardings from logical axis names.

``make_mesh`` builds a mesh from named axis sizes; ``DEFAULT_RULES`` maps the
model's logical axes to mesh axes; ``tree_shardings`` turns a tree of logical
names into ``NamedSharding`` leaves for ``jax.jit``'s ``in_shardings`` and
``out_shardings``.
"""

from jaxrl_group.parallel._mesh import make_mesh
from jaxrl_group.parallel._sharding import BATCH_AXES
from jaxrl_group.parallel._sharding import DEFAULT_RULES
from jaxrl_group.parallel._sharding import LOGICAL_AXES
from jaxrl_group.parallel._sharding import batch_sharding
from jaxrl_group.parallel._sharding import logical_to_spec
from jaxrl_group.parallel._sharding import replicated
from jaxrl_group.parallel._sharding import tree_shardings
from jaxrl_group.parallel._sharding import with_shardings

__all__ = (
    "BATCH_AXES",
    "DEFAULT_RULES",
    "LOGICAL_AXES",
    "batch_sharding",
    "logical_to_spec",
    "make_mesh",
    "replicated",
    "tree_shardings",
    "with_shardings",
)

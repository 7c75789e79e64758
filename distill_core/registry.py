"""Registries of the search-space primitives, keyed by the names used in ``search_space.yaml``.

``TRANSFORMS.build(dict(type='catt', temperature=0.5))`` gives an ``nn.Module`` applied as ``op(x)``;
``DISTANCES.build(dict(type='l1'))(student, teacher)`` gives a scalar. ``locations`` makes mmengine import the
op modules on first use. Models (distillers, losses) live in MMDetection's ``MODELS`` so that MMDetection
configs can name them.
"""
from mmengine.registry import Registry

TRANSFORMS = Registry('distill transform', scope='distill_core',
                      locations=['distill_core.transforms', 'distill_core.method_ops'])
DISTANCES = Registry('distill distance', scope='distill_core', locations=['distill_core.distances'])

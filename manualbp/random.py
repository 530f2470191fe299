"""The one source of randomness in manualbp.

Every initialiser and every shuffled batch draws from a single NumPy
``Generator``.  ``manual_seed(s)`` replaces it with a freshly seeded one, so a
seeded run is reproducible bit for bit, the same promise ``torch.manual_seed``
makes.
"""
import numpy as np

_generator = np.random.default_rng()


def manual_seed(seed):
    """Seed manualbp's generator (a ``numpy.random.Generator``) and return it."""
    global _generator
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"manual_seed expected an int seed, got {type(seed).__name__}")
    if seed < 0:
        raise ValueError(f"manual_seed expected a non-negative seed, got {seed}")
    _generator = np.random.default_rng(int(seed))
    return _generator


def get_generator():
    """The generator that initialisers and data loaders draw from."""
    return _generator

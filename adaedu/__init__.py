"""adaedu: the helper package of the Adaptive Computation course.

The layout mirrors the course: ``adaedu.precursors`` (part 1), ``adaedu.moe`` (part 2, sparse
mixtures of experts), plus the shared tools every notebook uses:

- :mod:`adaedu.profiles`  smoke / cpu / gpu sizes;      - :mod:`adaedu.device`   device and seeding;
- :mod:`adaedu.data`      shipped data, sha256-checked; - :mod:`adaedu.train`    the training loop;
- :mod:`adaedu.compute`   FLOPs and active parameters;  - :mod:`adaedu.claims`   paper vs. notebook;
- :mod:`adaedu.exercises` check / hint / solution;      - :mod:`adaedu.show`     display real source;
- :mod:`adaedu.plotting`  one readable style.
"""

from adaedu.device import get_device, seed_everything
from adaedu.profiles import current_profile, sizes
from adaedu.show import show

__all__ = ["current_profile", "get_device", "seed_everything", "show", "sizes"]
__version__ = "0.1.0"

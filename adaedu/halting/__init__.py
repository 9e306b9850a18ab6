"""Part 4 of the course: early exit and halting. Import from the modules:

- :mod:`adaedu.halting.tasks`       the parity task (Graves 2016);
- :mod:`adaedu.halting.act`         Adaptive Computation Time around a recurrent cell (4.1);
- :mod:`adaedu.halting.baselines`   plain and fixed-k repeated RNNs, the honest controls;
- :mod:`adaedu.halting.ponder`      PonderNet's halting distribution and loss (4.4);
- :mod:`adaedu.halting.skipnet`     SkipNet-style gated residual blocks (4.4);
- :mod:`adaedu.halting.universal`   the Universal Transformer with per-position ACT (4.2);
- :mod:`adaedu.halting.multi_exit`  multi-exit networks and exit policies, PaBEE (4.3);
- :mod:`adaedu.halting.experiments` shared training and evaluation (steps and FLOPs per example).
"""

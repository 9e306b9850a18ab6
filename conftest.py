"""Test-wide settings, for both `tests/` and the nbval run over `notebooks/`.

Notebooks run in the smoke profile, without progress bars, writing their claim records to a
temporary folder (never over the committed results/cpu records).
"""

import os
import tempfile

# `make test` runs two pytest workers on two cores: one thread each (kernels inherit this).
os.environ.setdefault("OMP_NUM_THREADS", "1")

os.environ.setdefault("ADAEDU_PROFILE", "smoke")
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("MPLBACKEND", "agg")
os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("ADAEDU_RESULTS_DIR", tempfile.mkdtemp(prefix="adaedu-results-"))

import torch  # noqa: E402  (after OMP_NUM_THREADS)

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

"""Part 3 of the course: other modular architectures.

- :mod:`adaedu.modular.vit`        a tiny vision transformer with a pluggable feed-forward slot;
- :mod:`adaedu.modular.digits_moe` sparse vs. soft mixtures of experts in that ViT on sklearn's
  8x8 digits (Puigcerver et al., 2023; notebook 3.2).
"""

from adaedu.modular.vit import TinyViT, ViTConfig, ViTOutput, patch_grid, patchify

__all__ = ["TinyViT", "ViTConfig", "ViTOutput", "patch_grid", "patchify"]

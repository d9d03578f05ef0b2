"""Ready-made hooks into trainers: :mod:`fastclip.integrations.megatron` (Megatron-core's clipping
functions and an in-place patch) and :mod:`fastclip.integrations.lightning` (a callback; needs
Lightning). Each is imported on its own, so neither framework is a dependency of fastclip."""

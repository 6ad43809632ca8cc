"""OmegaConf resolvers used by batteryct's configs (registered on import)."""

from __future__ import annotations

from omegaconf import OmegaConf

OmegaConf.register_new_resolver("len", lambda items: len(items), replace=True)

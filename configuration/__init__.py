"""Named configurations (the four architectures at named sizes) and training recipes (YAML files here)."""

from .presets import ARCHITECTURES, SIZES, get_config, preset_names

__all__ = ["ARCHITECTURES", "SIZES", "get_config", "preset_names"]

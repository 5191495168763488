"""Configuration: one typed settings tree, model presets, hardware profiles, load-time validation."""

from serving.config.hardware import GPU_PROFILES, GpuProfile, GpuType
from serving.config.loader import load_settings, parse_overrides, settings_from_wire, settings_to_wire
from serving.config.presets import PRESETS, ModelPreset, get_preset
from serving.config.settings import EngineKind, RoutingPolicy, Settings
from serving.config.validation import ConfigError, Problem, resolved_max_running, validate

__all__ = [
    "GPU_PROFILES",
    "PRESETS",
    "ConfigError",
    "EngineKind",
    "GpuProfile",
    "GpuType",
    "ModelPreset",
    "Problem",
    "RoutingPolicy",
    "Settings",
    "get_preset",
    "load_settings",
    "parse_overrides",
    "resolved_max_running",
    "settings_from_wire",
    "settings_to_wire",
    "validate",
]

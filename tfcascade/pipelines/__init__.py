"""Beam preprocessing and TFX pipelines for tfcascade (import Beam / TFX)."""

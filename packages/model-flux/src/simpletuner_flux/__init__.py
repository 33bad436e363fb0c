"""Flux and Flux Kontext for simpletuner-core."""

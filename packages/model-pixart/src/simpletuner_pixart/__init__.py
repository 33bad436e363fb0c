"""PixArt Sigma for simpletuner-core."""

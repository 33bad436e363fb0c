"""The generic training engine. Imports torch lazily: importing this package is cheap."""

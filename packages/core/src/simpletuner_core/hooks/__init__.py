"""User hooks around training: scripts run at checkpoints, validation and uploads; publishers. Torch-free."""

"""Training: validate/start/stop, status in SimpleTuner's shape, job policy for non-admins, event streams."""

"""Trainer, freezing, schedules, checkpoints."""

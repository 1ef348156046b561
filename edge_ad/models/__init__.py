"""Trainable/deployable networks (torch). Not imported by the runtime path."""

"""Kaito's reconcilers (workspace, machine), built on kaito.runtime."""

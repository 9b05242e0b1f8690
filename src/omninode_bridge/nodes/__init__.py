"""ONEX nodes shipped with the package."""

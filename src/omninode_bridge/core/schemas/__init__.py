"""JSON Schemas shipped with the package (ONEX v2.0 contract)."""

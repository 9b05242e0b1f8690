"""The peers benchmark's parts: one adapter module per system, the scenarios, scale curves and reports."""

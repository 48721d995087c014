"""Revision scripts. Each domain may keep its own branch (``branch_labels``) off the base
revision; ``edgefleet fleet migrate`` upgrades every head."""

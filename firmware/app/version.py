# Firmware version, reported in input registers 2-4. Bumped by `edgefleet release`.
VERSION = (0, 1, 0)

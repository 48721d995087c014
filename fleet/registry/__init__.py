"""The device registry: an area tree of any depth, sites, gateways, devices and their state."""

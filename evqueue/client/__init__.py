"""client layer (see README, Architecture)."""

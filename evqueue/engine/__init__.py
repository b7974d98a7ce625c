"""engine layer (see README, Architecture)."""

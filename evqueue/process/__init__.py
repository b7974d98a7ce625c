"""process layer (see README, Architecture)."""

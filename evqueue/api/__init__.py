"""api layer (see README, Architecture)."""

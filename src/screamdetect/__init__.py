"""screamdetect."""

"""python -m screamdetect: the same command line as `screamdetect`."""

from .cli import main

main()

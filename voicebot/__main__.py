"""`python -m voicebot` runs the command line."""

from .cli import main

main()

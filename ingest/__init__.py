"""Data in: reading a shop's files (or the shared research datasets), validating them, splitting them.

This is the first stage of the flow ingest → towers → training → export → serving; nothing here imports
from a later stage.
"""

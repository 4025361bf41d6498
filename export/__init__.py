"""Export: a trained run → a TF Serving SavedModel version (raw strings in, top-K item ids out) with a ScaNN or
brute-force index, its model card, and the tools to inspect it.

Fourth stage of the flow ingest → towers → training → export → serving.
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

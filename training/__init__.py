"""Training: config, examples, the retrieval model, the fit/evaluate loop.

Third stage of the flow ingest → towers → training → export → serving.
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

"""The two towers: text encoder, feature tables, item tower, user tower.

Second stage of the flow ingest → towers → training → export → serving. transformers picks its Keras when it is
first imported, so the legacy-Keras switch is set here, before anything below imports TensorFlow.
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

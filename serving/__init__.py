"""Serving: a TF-Serving-compatible model server (gRPC PredictionService/ModelService and the REST API) that can
load ScaNN ops, and its client.

Last stage of the flow ingest → towers → training → export → serving. It imports none of the earlier stages: a
serving process needs only tensorflow, tensorflow_text, scann, grpcio and the official serving protos. What it
shares with export, the on-disk layout of a base path, lives in the leaf module twotower/layout.py.
"""

# TensorFlow's kDefaultServingSignatureDefKey: the signature a request without a signature name runs. Defined here
# once for the server, its REST and gRPC front-ends, the warm-up replay and the client.
DEFAULT_SIGNATURE = "serving_default"

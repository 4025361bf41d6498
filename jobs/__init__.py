"""Training jobs beyond one process: a job file, and launchers for an engine people already run.

``twotower submit JOB.yaml`` reads a job file (``jobs.spec``) and hands the same job to local worker processes
(``jobs.local``), a Ray cluster (``jobs.ray_target``) or Kubernetes' training operator (``jobs.kubernetes``).
Every target runs ``jobs.worker`` in each worker, which trains under ``MultiWorkerMirroredStrategy`` from the
``TF_CONFIG`` the engine sets. It sits after ``training`` in the flow and imports nothing from export/serving.
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

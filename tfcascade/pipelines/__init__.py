"""The TFX pipeline of a cascade (the ``tfx`` extra): ``cascade_pipeline.create_pipeline``, run
locally (``local_runner``) or compiled for Kubeflow Pipelines / Vertex AI (``kubeflow_runner``)."""

from tfcascade._extras import require_extra

require_extra("tfx", "tfx", "tfcascade.pipelines")

"""Stage models (DSSM, MLP pre-ranker, DIN, TARQ), the CascadeSpec and the CascadeModel (TFRS; Keras 2 only)."""

from tfcascade._backend import require_tf_keras

require_tf_keras("tfcascade.models (CascadeModel and the stage models)")

from tfcascade.models.cascade import CascadeModel, build_cascade  # noqa: E402
from tfcascade.models.din import DIN  # noqa: E402
from tfcascade.models.dssm import DSSM  # noqa: E402
from tfcascade.models.mlp import MLPPreranker  # noqa: E402
from tfcascade.models.spec import CascadeSpec  # noqa: E402
from tfcascade.models.stage import StageModel  # noqa: E402
from tfcascade.models.tarq import TARQ  # noqa: E402

__all__ = ["DIN", "DSSM", "TARQ", "CascadeModel", "CascadeSpec", "MLPPreranker", "StageModel", "build_cascade"]

"""The documented public API: each package's ``__all__`` (pinned here, so a rename or removal
is a deliberate change), every name resolves to a function or class, and the packages import
one way: ops ← layers ← losses/metrics ← models ← training ← beam/serving ← components ←
pipelines ← cli (checked on the source, lazy imports included)."""

from __future__ import annotations

import ast
import importlib
import inspect
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

PUBLIC = {
    "tfcascade": ["__version__", "keras_version"],
    "tfcascade.ops": ["brute_force_top_k", "cascade_select", "dftopk", "dftopk_logits", "hard_topk_mask",
                      "iterative_softmax_topk", "kth_largest", "lapsum_topk", "neural_sort", "soft_sort",
                      "survivor_cascade", "topq_membership", "tournament_topk"],
    "tfcascade.layers": ["DFTopK", "FeatureEmbeddings", "LapSumTopK", "NeuralSortPermutation", "ResidualQuantizer",
                         "SoftmaxTargetAttention", "SoftSortPermutation", "TargetAttention", "TournamentTopK"],
    "tfcascade.losses": ["ARFLoss", "ARFv2Loss", "BCELoss", "CascadeLoss", "DFTopKCascadeLoss", "FSLambdaLoss",
                         "FSRankNetLoss", "ICCLoss", "LCRONLoss", "LapSumCascadeLoss", "RankFlowLoss",
                         "UncertaintyWeighting", "get", "names"],
    "tfcascade.metrics": ["NDCG", "JointRecall", "StageRecall", "expected_recall", "gauc", "ground_truth", "joint_recall", "ndcg",
                          "stage_recall"],
    "tfcascade.models": ["DIN", "DSSM", "TARQ", "CascadeModel", "CascadeSpec", "MLPPreranker", "StageModel",
                         "build_cascade"],
    "tfcascade.training": ["TrainConfig", "compare", "evaluate", "evaluate_model", "load_model", "require_data",
                           "train"],
    "tfcascade.data": ["PRESETS", "SimulatorConfig", "append_sampled_negatives", "dataset_from_records",
                       "list_days", "load_metadata", "load_vocabularies", "make_dataset", "read_requests",
                       "simulate"],
    "tfcascade.topkgat": ["COMBINES", "DEFAULT_KS", "VARIANTS", "AdamW", "EarlyStopping", "FullRankingEvaluator",
                          "NegativeSampler", "TopKGAT", "TrainConfig", "TrainResult", "aggregate", "band_pass",
                          "bpr_loss", "edge_weights", "make_train_step", "official_settings", "train_topkgat"],
}


@pytest.mark.parametrize("package", sorted(PUBLIC))
def test_all_is_the_documented_api_and_every_name_resolves(package):
    module = importlib.import_module(package)
    assert sorted(module.__all__) == sorted(PUBLIC[package])
    for name in module.__all__:
        value = getattr(module, name)
        assert not inspect.ismodule(value), f"{package}.{name} is a module, not the function or class"


def test_the_ops_facade_calls_the_operators():
    import numpy as np
    import tensorflow as tf

    from tfcascade import ops
    from tfcascade.ops.dftopk import dftopk

    x = tf.constant([[3.0, 1.0, 2.0, 0.0]])
    np.testing.assert_array_equal(ops.dftopk(x, 2).numpy(), dftopk(x, 2).numpy())
    assert ops.dftopk(x, 2).shape == (1, 4)


# Layers of the package, lowest first; a module may import its own layer or lower ones.
RANK = {"_backend": 0, "_keras": 0, "_extras": 0, "features": 0, "__init__": 0, "ops": 1, "layers": 2, "losses": 3,
        "metrics": 3, "data": 3, "models": 4, "topkgat": 4, "training": 5, "beam": 6, "serving": 6,
        "components": 7, "pipelines": 8, "cli": 9, "__main__": 9}


def _imports(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def _part(module: str) -> str | None:
    bits = module.split(".")
    return (bits[1] if len(bits) > 1 else "__init__") if bits[0] == "tfcascade" else None


def test_imports_point_one_way():
    wrong = []
    for path in sorted((ROOT / "tfcascade").rglob("*.py")):
        source = _part(".".join(path.relative_to(ROOT).with_suffix("").parts))
        assert source in RANK, f"{path}: a new package needs a place in RANK"
        for name in _imports(path):
            target = _part(name)
            if target is not None and RANK[target] > RANK[source]:
                wrong.append(f"{path.relative_to(ROOT)} imports {name}")
            if source == "ops" and (name.split(".")[0] in ("keras", "tf_keras") or name == "tfcascade._keras"):
                wrong.append(f"{path.relative_to(ROOT)}: ops must not import Keras ({name})")
    assert wrong == []


def test_the_rank_check_sees_an_import_back_up(tmp_path):
    bad = tmp_path / "tfcascade" / "components" / "x.py"
    bad.parent.mkdir(parents=True)
    bad.write_text("def f():\n    from tfcascade.pipelines.cascade_pipeline import create_pipeline\n")
    assert _imports(bad) == ["tfcascade.pipelines.cascade_pipeline"]
    assert RANK[_part(_imports(bad)[0])] > RANK["components"]


def test_no_generic_top_level_packages_are_installed():
    code = ("import importlib.util as u; "
            "print([n for n in ('pipelines', 'components', 'serving') if u.find_spec(n) is not None])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/", timeout=60)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr[-1000:]


def test_a_missing_extra_is_named_with_its_install_command():
    from tfcascade._extras import require_extra

    with pytest.raises(ImportError, match=r"needs no_such_package_x.*pip install 'tfcascade\[beam\]'"):
        require_extra("no_such_package_x", "beam", "tfcascade.beam")
    require_extra("numpy", "beam", "tfcascade.beam")  # present: no error

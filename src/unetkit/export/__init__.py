"""Export a checkpoint to ONNX or TorchScript, with its metadata, and prove the export right.

The exported file carries the model card of ``ModelCard.for_export`` (classes, palette,
preprocessing, task, model config, object post-processing) as JSON: ONNX in ``metadata_props``
(``unetkit.*`` keys), TorchScript in the extra file ``unetkit.json`` (``formats``). Nothing
about the training data travels (no image names, no data fingerprint, no training-only
preprocessing fields).

Beside the card, ``unetkit.input_contract`` (``contract``) states in plain data what any
runtime needs to feed the network without unetkit: channel order, value scaling, the
normalisation and its statistics, the legal input sizes, and what the output is (logits, the
activation, the output size). ONNX files repeat it as readable text in the graph's
``doc_string``.

Before the file is renamed into place, a parity check (``parity``) runs it against the PyTorch
model on random inputs of two sizes (a small legal one and the training size); a failed check
leaves no file behind.
"""

from .formats import export_model, read_onnx_metadata, read_torchscript_metadata
from .parity import check_parity

__all__ = ["check_parity", "export_model", "read_onnx_metadata", "read_torchscript_metadata"]

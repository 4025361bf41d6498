"""Classify, Regress and MultiInference on tf.Example input, with TF Serving's checks, results and messages.

Why it exists: Estimator-style exports (and any model with classification or regression SignatureDefs) are
served through these methods: the client sends tf.Examples (``Input.example_list`` or ``example_list_with_context``),
the server serializes them into the signature's single string input, runs it, and turns the outputs into
``ClassificationResult`` / ``RegressionResult``. This mirrors tensorflow_serving/servables/tensorflow/
classifier.cc, regressor.cc and multi_inference.cc; the gRPC service, the REST API and the warm-up replay all use
it, so the three judge a request the same way.

Method names: TF Serving checks a signature's ``method_name`` only with ``--enable_signature_method_name_check``
(off by default, because TF2 saves every signature as a predict one). Here, with the check off, a signature of
another method is still used when it has the right form (one input; ``classes``/``scores`` or ``outputs``); one
that has not is refused with the method-name message, which says more than "Expected one input Tensor.".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import grpc
import numpy as np
from tensorflow.core.example import example_pb2
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import classification_pb2, input_pb2, regression_pb2

from serving.errors import ServingError, invalid
from serving.signature import Signature, dtype_name, shape_text

CLASSIFY = "tensorflow/serving/classify"
REGRESS = "tensorflow/serving/regress"
KINDS = {CLASSIFY: "classification", REGRESS: "regression"}
CLASSES, SCORES, OUTPUTS = "classes", "scores", "outputs"


def serialized_examples(request_input: input_pb2.Input) -> np.ndarray:
    """The request's examples as a [N] array of serialized tf.Examples (each merged over the context, whose
    features it overrides, as TF Serving's InputToSerializedExampleTensor does)."""
    kind = request_input.WhichOneof("kind")
    if kind == "example_list":
        examples = [e.SerializeToString() for e in request_input.example_list.examples]
    elif kind == "example_list_with_context":
        listed = request_input.example_list_with_context
        examples = []
        for example in listed.examples:
            merged = example_pb2.Example()
            merged.CopyFrom(listed.context)
            merged.MergeFrom(example)
            examples.append(merged.SerializeToString())
    else:
        examples = []
    if not examples:
        raise invalid("Input is empty.")
    array = np.empty(len(examples), dtype=object)
    array[:] = examples
    return array


@dataclass(frozen=True)
class ExampleSignature:
    """A classification or regression signature, checked, with the one input the examples go to."""

    signature: Signature
    method: str
    input_alias: str

    @property
    def input_tensor(self) -> str:
        return self.signature.inputs[self.input_alias].name


def example_signature(signature: Signature, method: str, check_method_name: bool = False) -> ExampleSignature:
    """Checks ``signature`` can serve ``method`` (PreProcessClassification / PreProcessRegression)."""
    kind = KINDS[method]
    wrong_method = signature.method_name != method
    method_error = invalid(f"Expected {kind} signature method_name to be {method}. Was: {signature.method_name}")
    if wrong_method and check_method_name:
        raise method_error
    outputs = signature.outputs
    if method == CLASSIFY:
        form_ok = len(signature.inputs) == 1 and 1 <= len(outputs) <= 2 and bool({CLASSES, SCORES} & set(outputs))
    else:
        form_ok = len(signature.inputs) == 1 and len(outputs) == 1 and OUTPUTS in outputs
    if wrong_method and not form_ok:
        raise method_error
    if len(signature.inputs) != 1:
        raise invalid("Expected one input Tensor.")
    if method == CLASSIFY:
        if len(outputs) not in (1, 2):
            raise invalid(f"Expected one or two output Tensors, found {len(outputs)}")
        if not {CLASSES, SCORES} & set(outputs):
            raise invalid(f'Expected classification signature outputs to contain at least one of "{CLASSES}" or '
                          f'"{SCORES}". Signature was: {signature.name}')
    else:
        if len(outputs) != 1:
            raise invalid("Expected one output Tensor.")
        if OUTPUTS not in outputs:
            raise invalid(f'No regression outputs found in signature. Expected output "{OUTPUTS}". Signature was: '
                          f"{signature.name}")
    (alias, info), = signature.inputs.items()
    if info.dtype != types_pb2.DT_STRING:
        raise invalid(f"Expected the input Tensor of signature {signature.name} to be DT_STRING (serialized "
                      f"tf.Examples) but it is {dtype_name(info.dtype)}")
    return ExampleSignature(signature, method, alias)


def _check_rows(name: str, kind: str, array: np.ndarray, examples: int) -> None:
    if array.ndim != 2:
        raise invalid(f"Expected Tensor shape: [batch_size num_classes] but got {shape_text(array.shape)}")
    if array.shape[0] != examples:
        raise invalid(f"Expected {name} output batch size of {examples}. Got: {array.shape[0]}")
    if kind == "float" and array.dtype != np.float32:
        raise invalid(f"Expected {name} Tensor of DT_FLOAT.  Got: {array.dtype}")
    if kind == "string" and array.dtype != object:
        raise invalid(f"Expected {name} Tensor of DT_STRING.  Got: {array.dtype}")


def classification_result(outputs: dict[str, np.ndarray], examples: int
                          ) -> classification_pb2.ClassificationResult:
    """PostProcessClassificationResult: [N, K] classes and/or scores → N classifications of K classes."""
    classes, scores = outputs.get(CLASSES), outputs.get(SCORES)
    if scores is not None:
        _check_rows(SCORES, "float", scores, examples)
    if classes is not None:
        _check_rows(CLASSES, "string", classes, examples)
    if classes is not None and scores is not None and classes.shape[1] != scores.shape[1]:
        raise invalid(f"Tensors class and score should match in dim_size(1). Got {classes.shape[1]} vs. "
                      f"{scores.shape[1]}")
    width = (classes if classes is not None else scores).shape[1]
    result = classification_pb2.ClassificationResult()
    for row in range(examples):
        classification = result.classifications.add()
        for column in range(width):
            entry = classification.classes.add()
            if classes is not None:
                label = classes[row, column]
                entry.label = label.decode("utf-8", "replace") if isinstance(label, bytes) else str(label)
            if scores is not None:
                entry.score = float(scores[row, column])
    return result


def regression_result(outputs: dict[str, np.ndarray], examples: int) -> regression_pb2.RegressionResult:
    """PostProcessRegressionResult: an [N] or [N, 1] float output → N regressions."""
    values = outputs[OUTPUTS]
    if not (values.ndim == 1 or (values.ndim == 2 and values.shape[1] == 1)):
        raise invalid("Expected output Tensor shape to be either [batch_size] or [batch_size, 1] but got "
                      f"{shape_text(values.shape)}")
    if values.dtype != np.float32:
        raise invalid(f"Expected output Tensor of DT_FLOAT.  Got: {values.dtype}")
    if values.shape[0] != examples:
        raise invalid(f"Expected output batch size of {examples}. Got: {values.shape[0]}")
    result = regression_pb2.RegressionResult()
    for value in values.reshape(-1):
        result.regressions.add().value = float(value)
    return result


def run(checked: ExampleSignature, examples: np.ndarray) -> classification_pb2.ClassificationResult | \
        regression_pb2.RegressionResult:
    """Runs one classification or regression signature on serialized examples."""
    outputs = checked.signature.run({checked.input_alias: examples})
    if checked.method == CLASSIFY:
        return classification_result(outputs, len(examples))
    return regression_result(outputs, len(examples))


def check_tasks(model_names: Sequence[str], signature_names: Sequence[str], method_names: Sequence[str]) -> None:
    """The request-level checks of MultiInference (before any signature is looked up)."""
    if not model_names:
        raise invalid("Expected at least one task")
    if len(set(model_names)) > 1:
        raise invalid("All ModelSpecs in a MultiInferenceRequest must access the same model name.")
    seen: set[str] = set()
    for name in signature_names:
        if name in seen:
            raise invalid(f"Duplicate evaluation of signature: {name}")
        seen.add(name)
    for method in method_names:
        if method not in KINDS:
            raise ServingError(grpc.StatusCode.UNIMPLEMENTED, f"Unsupported signature method_name: {method}")

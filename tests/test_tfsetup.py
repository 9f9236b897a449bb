"""Importing TensorFlow the pipeline's way: no Keras at import, tf.keras still there on demand."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

WORKFLOW = Path(__file__).resolve().parents[1] / "workflow"


def test_tensorflow_imports_without_keras_and_tf_keras_still_loads() -> None:
    code = """
import sys
from dynsparse.tfsetup import KERAS_EAGER_MODULE, import_tensorflow
tf = import_tensorflow()
print(sorted(name for name in sys.modules if name.split(".")[0] == "keras"))
print(KERAS_EAGER_MODULE in sys.modules)
print(float(tf.reduce_sum(tf.ones([3]))))
print(tf.keras.layers.Dense(2)(tf.ones([1, 3])).shape)
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=WORKFLOW
    )
    keras_modules, entry_left, total, dense_shape = out.stdout.strip().splitlines()
    assert keras_modules == "[]"
    assert entry_left == "False"
    assert total == "3.0"
    assert dense_shape == "(1, 2)"

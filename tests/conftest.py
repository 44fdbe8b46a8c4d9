# TensorFlow Probability's NumPy substrate, the reference implementation in
# the detector tests, refuses to import (it asks for tf-keras) once
# TensorFlow itself is loaded. conftest.py runs before any test module, so
# import it here, before the Keras tests load TensorFlow.
import tensorflow_probability.substrates.numpy  # noqa: F401

"""Two-tower training, evaluation, export and the champion gate.

TensorFlow Recommenders needs Keras 2 (tf-keras): the switch must be set before TensorFlow is
first imported, so it lives here, ahead of every training module.
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

MIN_INTERACTIONS = 1000  # a window with fewer training interactions is skipped, not trained on

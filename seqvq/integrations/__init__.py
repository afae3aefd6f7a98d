"""Adapters that put seqvq's bottleneck into the models of ASR toolkits, one module per toolkit.

None of the toolkits has a plugin registry, so each adapter follows its toolkit's own extension point:

* :mod:`seqvq.integrations.speechbrain` — ``VQBottleneck`` takes SpeechBrain's relative lengths (HyperPyYAML
  ``!new:`` builds it; the quantizer's state rides on SpeechBrain's ``Checkpointer``).
* :mod:`seqvq.integrations.espnet` — ``VQPostEncoder`` (an ``AbsPostEncoder``), ``VQESPnetASRModel`` (adds the
  VQ loss to the loss and ``stats``) and ``register()`` (adds both to ``ASRTask``'s choices).
* :mod:`seqvq.integrations.espnet_kmeans` — the k-means scripts of ESPnet's ``asr2`` recipes (``learn_kmeans.py``,
  ``dump_km_label.py``) on seqvq's streaming k-means, with their command lines; ``KMeansUnits`` in
  :mod:`seqvq.integrations.speechbrain` is SpeechBrain's ``MiniBatchKMeansSklearn`` / ``DiscreteSSL`` k-means.
* :mod:`seqvq.integrations.icefall` — ``VQEncoder`` wraps any ``EncoderInterface`` encoder.
* :mod:`seqvq.integrations.nemo` — ``VQEncoder`` wraps a NeMo encoder; NeMo's ASR training steps add its loss.

Each module imports its toolkit (where it needs one) only when it is imported itself; ``import seqvq`` never
imports a toolkit.
"""

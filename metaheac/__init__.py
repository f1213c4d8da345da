"""MetaHeac's model library: feature schema and data store, the meta-training
step, per-campaign adaptation, routing by the seeds and scoring.

It imports paddle, numpy, scipy, pandas / pyarrow (to read files) and
itself, never `tools`, so the model folder also runs under PaddleRec's own
tools/trainer.py, where `tools` is PaddleRec's.
"""

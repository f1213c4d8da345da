"""PaddleRec's name for the inference reader (runner.infer_reader_path: "reader_infer"
in PaddleRec MetaHeac configs); the reader itself is reader_test.py."""
from reader_test import RecDataset  # noqa: F401

"""Convert a pickled split, seed file or pool to Parquet.

    python tools/convert.py data/train/train_stage1.pkl data/train/train_stage1.parquet

Id-list columns (numpy arrays in the pickle) become Parquet lists; every
other column keeps its type. The output is written in row groups of
--rows-per-group rows, so Parquet readers (and tools/expand.py) can stream it,
under a temporary name renamed into place when complete. Parquet loads
without running code, unlike a pickle: convert files you trust, share the
Parquet.
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from metaheac.errors import DataError  # noqa: E402
from metaheac.files import atomic_write  # noqa: E402
from metaheac.store import read_dataframe  # noqa: E402
from tools.utils.yaml_config import HelpFormatter  # noqa: E402


def _arrow_column(values):
    """A pandas column as an arrow array: cells holding id arrays become a list array."""
    import numpy as np
    import pyarrow as pa

    if values.dtype == object and len(values) and isinstance(values.iloc[0], (np.ndarray, list)):
        cells = [np.asarray(c) for c in values]
        offsets = np.concatenate([[0], np.cumsum([c.size for c in cells])]).astype(np.int32)
        return pa.ListArray.from_arrays(pa.array(offsets), pa.array(np.concatenate(cells)))
    return pa.array(values.to_numpy())


def convert(src, dst, rows_per_group=65536):
    """Write the DataFrame in `src` (.pkl) to Parquet `dst`; returns (rows, row groups)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    frame = read_dataframe(src, warn_pickle=False)  # converting it is what the warning advises
    if frame.columns.duplicated().any():
        raise DataError(f"{src}: duplicate column names; Parquet needs unique ones")
    names = [str(c) for c in frame.columns]
    groups = 0

    def write(tmp):
        nonlocal groups
        writer = None
        for start in range(0, max(len(frame), 1), rows_per_group):
            part = frame.iloc[start:start + rows_per_group]
            table = pa.table([_arrow_column(part[c]) for c in frame.columns], names=names)
            writer = writer or pq.ParquetWriter(tmp, table.schema)
            writer.write_table(table)
            groups += 1
        writer.close()
    atomic_write(dst, write)
    return len(frame), groups


def parser():
    ap = argparse.ArgumentParser(description="Convert a pickled split, seed file or pool to Parquet.",
                                 formatter_class=HelpFormatter,
                                 epilog="example:\n  python tools/convert.py pool.pkl pool.parquet")
    ap.add_argument("src", help="a pickled pandas DataFrame (.pkl)")
    ap.add_argument("dst", help="the Parquet file to write (.parquet)")
    ap.add_argument("--rows-per-group", type=int, default=65536, help="rows per Parquet row group")
    return ap


def main(argv=None):
    ap = parser()
    args = ap.parse_args(argv)
    if not args.dst.endswith(".parquet"):
        ap.error(f"{args.dst}: the output name must end in .parquet (that is how the readers tell the format)")
    t0 = time.time()
    try:
        rows, groups = convert(args.src, args.dst, args.rows_per_group)
    except DataError as exc:
        sys.exit(f"error: {exc}")
    print(f"wrote {args.dst}: {rows:,} rows in {groups} row group(s), {time.time() - t0:.1f}s")


if __name__ == "__main__":
    main()

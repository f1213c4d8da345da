"""Candidate pools: users nobody labelled, read chunk by chunk and ranked.

A pool holds the user id column and the user feature columns (static,
sequence and their *_length columns); label, campaign and ad columns are
ignored if present. Parquet pools are read one batch of row groups at a time,
so memory is bounded by the chunk and the kept top k, not by the pool.
Pickles cannot be read in parts: the frame is loaded whole, then converted
chunk by chunk. User ids travel as given (int64, uint64 or strings); a user
in several rows of the pool is ranked once, by its best-scoring row.
"""
import logging

import numpy as np

from metaheac.errors import DataError
from metaheac.store import check_columns, is_parquet, parquet_file, read_dataframe, user_arrays, user_columns, \
    user_id_values

logger = logging.getLogger(__name__)


class Pool:
    """A pool file opened once: its size up front, then its users chunk by chunk."""

    def __init__(self, path, schema):
        self.path, self.schema = path, schema
        self.needed = [schema.user_id_col] + user_columns(schema)
        if is_parquet(path):
            self.parquet = parquet_file(path)
            check_columns(self.parquet.schema_arrow.names, self.needed, path)
            self.size = self.parquet.metadata.num_rows
        else:
            self.frame = read_dataframe(path)
            check_columns(self.frame.columns, self.needed, path)
            self.size = len(self.frame.index)
        if self.size == 0:
            raise DataError(f"{path}: no rows. Fix: give a pool with at least one user")

    def _frames(self, chunk_rows):
        """(first pool position, DataFrame of at most chunk_rows users, {id-list
        column: [n, width] array} for the lists read straight from Arrow)."""
        if not is_parquet(self.path):
            for start in range(0, self.size, chunk_rows):
                yield start, self.frame.iloc[start:start + chunk_rows], {}
            return
        import pyarrow as pa

        start = 0
        for batch in self.parquet.iter_batches(batch_size=chunk_rows, columns=self.needed):
            lists = {}
            for name, column in zip(batch.schema.names, batch.columns):
                if pa.types.is_list(column.type) and column.null_count == 0:
                    widths = np.diff(column.offsets.to_numpy())
                    if widths.size and (widths == widths[0]).all():
                        # one flat copy instead of one numpy object per cell (pandas' way)
                        lists[name] = column.flatten().to_numpy().reshape(len(column), int(widths[0]))
            frame = batch.drop_columns(list(lists)).to_pandas()
            frame.index += start  # error messages name the pool's row
            yield start, frame, lists
            start += len(frame)

    def chunks(self, chunk_rows):
        """Yield (positions [n] int64, user ids [n] (int64, uint64 or str, as
        the pool gives them), user feature ids [n, Fs + W] int32, lengths
        [n, Fq] int32), validated like any split. Once every chunk is read, a
        warning counts the user ids found in more than one row."""
        seen = []
        for start, frame, lists in self._frames(chunk_rows):
            ids, lengths = user_arrays(frame, self.schema, self.path, lists)
            users = user_id_values(frame, self.schema.user_id_col, self.path)
            seen.append(users)
            yield np.arange(start, start + len(frame), dtype=np.int64), users, ids, lengths
        uniq, counts = np.unique(np.concatenate(seen), return_counts=True)
        repeated = uniq[counts > 1]
        if repeated.size:
            logger.warning("%s: column %r: %d user id(s) are in more than one row (e.g. %s); each user is ranked "
                           "once, by its best-scoring row. Fix: drop the duplicate rows", self.path,
                           self.schema.user_id_col, repeated.size, repeated[0])


class TopK:
    """The k best users seen so far, ties to the earlier pool position, so
    the ranking does not depend on how the pool was chunked. A user id seen
    in several rows counts once, with its best row (the earliest of equal
    scores); user ids keep their dtype (int64, uint64 or str)."""

    def __init__(self, k):
        self.k = k
        self.scores = np.zeros(0, np.float32)
        self.positions = np.zeros(0, np.int64)
        self.user_ids = None  # the pool's ids, in the dtype of its first chunk

    def add(self, scores, positions, user_ids):
        self.scores = np.concatenate([self.scores, scores])
        self.positions = np.concatenate([self.positions, positions])
        user_ids = np.asarray(user_ids)
        self.user_ids = user_ids if self.user_ids is None else np.concatenate([self.user_ids, user_ids])
        if self.scores.size > 2 * self.k:  # prune now and then: sorting costs more than the copies
            self._keep(self.k)

    def _keep(self, k):
        order = np.lexsort((self.positions, -self.scores))
        _, first = np.unique(self.user_ids[order], return_index=True)  # each user's best row
        order = order[np.sort(first)][:k]
        self.scores, self.positions, self.user_ids = self.scores[order], self.positions[order], self.user_ids[order]

    def ranked(self):
        """(scores, user ids) of the top k users, best first."""
        if self.user_ids is None:
            return self.scores, np.zeros(0, np.int64)
        self._keep(self.k)
        return self.scores, self.user_ids

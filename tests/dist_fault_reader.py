"""A training reader that fails on rank 1 only, as METAHEAC_TEST_FAULT says:
'setup' raises a data error while loading, 'kill' dies (SIGKILL) after two
meta-batches."""
import os
import signal

from reader_train import RecDataset as Base
from metaheac.errors import DataError

FAULT = os.environ.get("METAHEAC_TEST_FAULT")
RANK = int(os.environ.get("PADDLE_TRAINER_ID", 0))


class RecDataset(Base):
    def __init__(self, file_list, config):
        if FAULT == "setup" and RANK == 1:
            raise DataError("shard-1.pkl: column 'age': 3 id(s) outside [0, 5]")
        super().__init__(file_list, config)

    def __iter__(self):
        for i, batch in enumerate(super().__iter__()):
            if FAULT == "kill" and RANK == 1 and i == 2:
                os.kill(os.getpid(), signal.SIGKILL)
            yield batch

"""What meta-training leaves for adapting a campaign."""
from typing import NamedTuple


class Learned(NamedTuple):
    net: object                     # net.MetaHeacNet
    groups: object = None           # groups.GroupRegressions; None: not fitted
    trained_ad_rows: frozenset = None  # table rows of the training campaigns' ad ids; None: unknown (any row)

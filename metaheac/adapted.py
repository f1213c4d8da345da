"""AdaptedCampaign: what adapting the meta-learned model to a campaign's seeds
returns (metaheac/adapt.py), one implementation per way of adapting:
fine-tuning (metaheac/finetune.py) and the seeds' mixture of past
campaigns (metaheac/mixture.py)."""
import logging

import numpy as np

from metaheac.errors import ConfigError

logger = logging.getLogger(__name__)


def both_classes(seeds):
    """Whether a campaign's seeds (a dict with labels [n], aid) hold positives
    and negatives; warns naming the campaign when not. Seeds of one class
    favour whichever routing scores them most extreme and leave nothing to
    rank by, so such a campaign keeps its own ids and is not corrected."""
    labels = seeds["labels"]
    if labels.size and labels.min() != labels.max():
        return True
    logger.warning("campaign %s: its %d seeds are all of one class, so it keeps its own ids and no correction "
                   "(adapting needs positive and negative seeds)", seeds.get("aid", "?"), labels.size)
    return False


class AdaptedCampaign:
    """A campaign adapted to its seeds: scores users as that campaign would.

    method: the runner.adaptation value that made it; ad_rows [Fa + crosses]:
    the campaign's ad columns as table rows (its seeds'), which the users of
    a pool are scored with."""

    method = ""
    ad_rows = None

    def score(self, rows, lengths, pad=False):
        """Click scores [n] of rows [n, C] (table rows, the campaign's ad
        columns included) with sequence lengths [n, Fq]. pad: every network
        batch of one shape (rows.padded_batches), so a user's score does not
        depend on how a pool was chunked."""
        raise NotImplementedError

    def describe(self):
        """One line for logs and campaigns.csv: how the seeds adapted it."""
        raise NotImplementedError

    def state_dict(self):
        """The network's state dict with the campaign's adaptation in it, for a
        served graph (tools/export.py); only an adaptation that is a network
        has one."""
        raise ConfigError(f"runner.adaptation={self.method} adapts a campaign outside the network (a mixture of "
                          f"past campaigns and a correction on user ids), which a served graph cannot hold: rank "
                          f"pools with tools/expand.py, export the meta-learned model without --seeds, or export "
                          f"a fine-tuned one with -o runner.adaptation=finetune")

    def rows_for(self, users):
        """Table rows [n, C] of users [n, Fs + W] (table rows) seen by this campaign."""
        return np.concatenate([users, np.broadcast_to(self.ad_rows, (users.shape[0], self.ad_rows.size))], axis=1)

    @classmethod
    def score_together(cls, campaigns, users, lengths, pad=False):
        """Scores [n] for each of `campaigns` (all of this class) of the same
        users [n, Fs + W] (table rows). An implementation that can share work
        across campaigns overrides this."""
        return [c.score(c.rows_for(users), lengths, pad) for c in campaigns]


def score_users(campaigns, users, lengths, pad=False):
    """Scores [n] of users [n, Fs + W] (table rows) for each campaign, each
    class of campaign scoring its own together."""
    out = [None] * len(campaigns)
    for kind in dict.fromkeys(type(c) for c in campaigns):
        mine = [i for i, c in enumerate(campaigns) if type(c) is kind]
        for i, scores in zip(mine, kind.score_together([campaigns[i] for i in mine], users, lengths, pad)):
            out[i] = scores
    return out

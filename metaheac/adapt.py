"""The one way to adapt the meta-learned model to a campaign's seeds:

    campaign = adapt(learned, seeds, config)      # an AdaptedCampaign
    scores = campaign.score(rows, lengths)
    campaign.describe()

runner.adaptation picks the implementation: mixture (the seeds weigh past
campaigns, then correct the result on their own ids: metaheac/mixture.py),
finetune (Adam epochs on the seeds: metaheac/finetune.py) or routed (the
seeds weigh the network's routings only: what meta-validation reads).
Infer, expand, export and meta-validation all come through here.
"""
import numpy as np

from metaheac.finetune import FineTunedCampaign
from metaheac.mixture import MixtureCampaign

METHODS = {
    "mixture": lambda learned, seeds, config, rng: MixtureCampaign.fit(learned, seeds, config, rng, "mixture"),
    "routed": lambda learned, seeds, config, rng: MixtureCampaign.fit(learned, seeds, config, rng, "routed"),
    "finetune": FineTunedCampaign.fit,
}


def campaign_rng(seed, aid):
    """The random generator of one campaign's adaptation. Seeded from (seed,
    aid) alone: a campaign's result does not depend on which other campaigns
    are adapted, in which order or on which rank. A negative id (SeedSequence
    takes none) draws from 2^64 + |aid|, beyond every non-negative 64-bit id."""
    aid = int(aid)
    return np.random.default_rng([seed, aid if aid >= 0 else 2**64 - aid])


def adapt(learned, seeds, config, rng=None):
    """The campaign adapted to its seeds (rows [n, C] table rows, lengths
    [n, Fq], labels [n], aid) as runner.adaptation says; learned: a
    learned.Learned, not modified. rng: default campaign_rng(runner.seed, aid)."""
    if rng is None:
        rng = campaign_rng(config["runner.seed"], seeds["aid"])
    return METHODS[config["runner.adaptation"]](learned, seeds, config, rng)

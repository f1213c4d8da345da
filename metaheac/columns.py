"""Columns of the processed Tencent Look-alike layout (the authors' and
PaddleRec's), in PaddleRec's order: the schema's `max_idxs` form, the sample
data generator and the raw-data preprocessor all use these."""

LABEL, TASK, USER_ID = "label", "aid", "uid"
COLUMNS = {"label": LABEL, "task": TASK, "user_id": USER_ID}  # hyper_parameters.columns
TENCENT_STATIC = ["carrier", "consumptionAbility", "LBS", "age", "education", "gender", "house"]
TENCENT_SEQUENCE = ["interest1", "interest2", "interest3", "kw1", "kw2", "topic1", "topic2"]
TENCENT_WIDTHS = [10, 10, 10, 5, 5, 5, 5]  # padded list width of each sequence column
TENCENT_AD = ["advertiserId", "campaignId", "creativeSize", "adCategoryId", "productId", "productType"]


def length_col(name):
    """The column counting the real ids of sequence column `name`."""
    return name + "_length"

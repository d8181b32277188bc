"""Names of the ``trials`` columns that code outside this package reads, as constants.

The columns themselves (type, meaning) are defined in :mod:`results_schema.tables`; these
names let a reader say ``MU_VAR_U`` instead of retyping ``"val_mu_var_u"``, so a misspelt
column is an import error rather than a silently empty plot. A test checks every name here is
a column of the trials schema.
"""

from __future__ import annotations

STAGE = "stage"
TRIAL_ID = "trial_id"
STATUS = "status"
CHECKPOINT = "checkpoint"
REUSED_FROM = "reused_from"
MODEL_CLASS = "model_class"
N_UNSUPERVISED = "n_unsupervised"
MEAN_ABS_CORR_U = "train_mean_abs_corr_u"  # the beta and seeds rules' statistic
MU_VAR_U = "val_mu_var_u"  # list: per z_u dimension
N_ACTIVE_U = "n_active_u"
LABEL_LEAKAGE_U = "label_leakage_u"
VAL_PIXEL_MSE = "val_pixel_mse"
VAL_LABEL_R2 = "val_label_r2"

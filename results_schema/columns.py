"""The name of every column of the trials and epochs tables, once. The columns themselves
(type, meaning) are defined in :mod:`results_schema.tables` from these names; every module that
builds or reads a row says ``VAL_MU_VAR_U`` instead of retyping ``"val_mu_var_u"``, so a
misspelt column is an import error rather than a silently empty plot (a fast test greps
``search/`` for spelled names). A column's name is the name of the trainer's metric it holds
(``psvae.trainer``: ``FitSummary.metrics``, ``EpochResult.flat()``).

The epochs table's ``train_<term>`` and ``val_<term>`` columns are spelled by
:func:`epoch_metric` from ``EPOCH_METRICS`` (the loss terms of ``psvae.losses.TERMS`` and the
reconstruction metrics); those that are trials columns too (``val_loss``, ...) have a constant.
"""

from __future__ import annotations

# -- both tables ---------------------------------------------------------------------------------
RUN_ID = "run_id"
STAGE = "stage"
TRIAL_ID = "trial_id"
STATUS = "status"

# -- trials ----------------------------------------------------------------------------------------
ERROR = "error"
MODEL_CLASS = "model_class"
ALPHA = "alpha"
BETA = "beta"
DELTA = "delta"
MSP_ALPHA = "msp_alpha"
N_UNSUPERVISED = "n_unsupervised"
N_BACKGROUND = "n_background"
SEED_MODEL = "seed_model"
EPOCHS_RUN = "epochs_run"
BEST_EPOCH = "best_epoch"
PRECISION = "precision"
WALL_SECONDS = "wall_seconds"
VAL_LOSS = "val_loss"
VAL_PIXEL_MSE = "val_pixel_mse"
VAL_LABEL_MSE = "val_label_mse"
VAL_LABEL_R2 = "val_label_r2"
VAL_MI = "val_mi"
VAL_TC = "val_tc"
VAL_DWKL = "val_dwkl"
TEST_LOSS = "test_loss"
TEST_PIXEL_MSE = "test_pixel_mse"
TEST_LABEL_MSE = "test_label_mse"
TEST_LABEL_R2 = "test_label_r2"
TRAIN_MEAN_ABS_CORR_U = "train_mean_abs_corr_u"
TEST_ABS_CORR_U01 = "test_abs_corr_u01"
VAL_SESSION_ACC = "val_session_acc"
SESSION_CHANCE = "session_chance"
SIGMA_X = "sigma_x"
VAL_MU_VAR_U = "val_mu_var_u"
VAL_KL_U_PER_DIM = "val_kl_u_per_dim"
N_ACTIVE_U = "n_active_u"
LABEL_LEAKAGE_U = "label_leakage_u"
VAL_MI_NET = "val_mi_net"
VAL_TC_NET = "val_tc_net"
VAL_DWKL_NET = "val_dwkl_net"
LABEL_NAMES = "label_names"
VAL_LABEL_R2_PER_LABEL = "val_label_r2_per_label"
TEST_LABEL_R2_PER_LABEL = "test_label_r2_per_label"
CONFIG_JSON = "config_json"
CHECKPOINT = "checkpoint"
NOTE = "note"
REUSED_FROM = "reused_from"

# -- epochs (beside their train_/val_ metrics) --------------------------------------------------
EPOCH = "epoch"
BETA_E = "beta_e"
K_E = "k_e"
IS_BEST = "is_best"
SECONDS = "seconds"


def epoch_metric(split: str, name: str) -> str:
    """The epochs column of metric ``name`` (one of ``EPOCH_METRICS``) on ``split`` (train, val)."""
    return f"{split}_{name}"

import dagster as dg

from assets.partitions import dataset_versions
from assets.system import storage_usage

storage_usage_job = dg.define_asset_job("storage_usage_job", selection=[storage_usage])

# A stored dataset version: statistics + its data.yaml row.
dataset_assets_job = dg.define_asset_job(
    "dataset_assets_job", selection=["dataset_version", "data_yaml"], partitions_def=dataset_versions
)
# Train and evaluate against the champion; deploying stays a person's decision (API / UI).
train_model_job = dg.define_asset_job(
    "train_model_job", selection=["trained_model", "model_evaluation"], partitions_def=dataset_versions,
    tags={"aidoor/heavy": "true"},
)
# Train, evaluate and deploy if the challenger passes the gate (automatic retraining, bootstrap).
train_and_deploy_job = dg.define_asset_job(
    "train_and_deploy_job", selection=["trained_model", "model_evaluation", "deployed_model"],
    partitions_def=dataset_versions, tags={"aidoor/heavy": "true"},
)
# A new dataset version end to end: statistics, data.yaml, model, gate, deploy.
dataset_to_model_job = dg.define_asset_job(
    "dataset_to_model_job",
    selection=["dataset_version", "data_yaml", "trained_model", "model_evaluation", "deployed_model"],
    partitions_def=dataset_versions, tags={"aidoor/heavy": "true"},
)

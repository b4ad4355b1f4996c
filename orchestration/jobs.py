import dagster as dg

from assets.system import storage_usage

storage_usage_job = dg.define_asset_job("storage_usage_job", selection=[storage_usage])

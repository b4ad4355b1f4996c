import dagster as dg

# One partition per stored dataset version, keyed "<dataset_id>@<version>" (e.g. "doorbell@v1").
dataset_versions = dg.DynamicPartitionsDefinition(name="dataset_versions")


def partition_key(dataset_id: str, version: str) -> str:
    return f"{dataset_id}@{version}"


def split_partition_key(key: str) -> tuple[str, str]:
    dataset_id, _, version = key.rpartition("@")
    if not dataset_id or not version:
        raise ValueError(f"bad dataset version partition key {key!r}; expected <dataset_id>@<version>")
    return dataset_id, version

"""Apache Airflow integration of crmflow: :class:`CrmflowOperator` runs a
pipeline as a task (absolute paths, exit 2 not retried, the run summary as a
dict in XCom, sinks as Assets); :func:`sink_asset` names a sink as an Asset
for DAGs scheduled on it."""

from crmflow_airflow.operator import CrmflowOperator, asset_uri, sink_asset

__all__ = ["CrmflowOperator", "asset_uri", "sink_asset"]
__version__ = "0.1.0"

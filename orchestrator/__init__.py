"""drs-teardown: tear down Huawei Cloud DRS tasks safely and provably."""

__version__ = "0.1.0"

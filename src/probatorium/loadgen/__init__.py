"""probatorium's load generator: raw asyncio protocols on uvloop, one process per client core,
HdrHistogram latencies merged exactly, closed and open (coordinated-omission corrected) loops."""

from probatorium.loadgen.config import LoadConfig
from probatorium.loadgen.runner import LoadResult, NoConnectionError, run_load

__all__ = ["LoadConfig", "LoadResult", "NoConnectionError", "run_load"]

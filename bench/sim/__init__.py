"""The simulated endpoint (``bench sim``): OpenAI- and Anthropic-compatible, with controlled timing and faults."""
from .config import FAULT_KINDS, FaultRule, SimConfig
from .process import SimProcess, SimThread
from .server import SimServer

__all__ = ["FAULT_KINDS", "FaultRule", "SimConfig", "SimProcess", "SimServer", "SimThread"]

"""`python -m orchestrator.simulator serve ...`: the simulator without the main CLI."""

from .command import simulator_group

if __name__ == "__main__":
    simulator_group(prog_name="python -m orchestrator.simulator")

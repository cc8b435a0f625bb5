"""Where splitting pays off: latency and device energy of local, offloaded and split inference."""

from entroguard.plan.costs import OptionCost, PlanParameters, crossovers, plan_rows

__all__ = ["OptionCost", "PlanParameters", "crossovers", "plan_rows"]

"""Memory, measured and planned, with no torch anywhere in it.

- `edgeag.memory.readings`: the kernel's readings of a process (RSS split into
  anonymous and file-backed pages: budgets count the anonymous part), its high-water
  mark, the floor a run starts from, glibc's mmap threshold;
- `edgeag.memory.plan`: the itemised plan of a run against its budget;
- `edgeag.memory.guard`: the thread that holds a run to its budget while it runs;
- `edgeag.memory.hardcap`: the kernel's own limit (a cgroup, or RLIMIT_DATA).

The names most code needs are importable from here.
"""

from edgeag.memory.guard import SAMPLE_INTERVAL, BudgetGuard
from edgeag.memory.plan import (
                                DYNAMO_IMPORT_BYTES,
                                RUNTIME_BYTES,
                                MemoryPlan,
                                PlanItem,
                                largest_fitting,
)
from edgeag.memory.readings import (
                                BUDGET_COUNTS,
                                MMAP_THRESHOLD,
                                Floor,
                                MiB,
                                Reading,
                                fix_mmap_threshold,
                                measure_floor,
                                peak_rss_bytes,
                                proc_status,
                                read_memory,
)

__all__ = ["BUDGET_COUNTS", "DYNAMO_IMPORT_BYTES", "MMAP_THRESHOLD", "RUNTIME_BYTES",
           "SAMPLE_INTERVAL", "BudgetGuard", "Floor", "MemoryPlan", "MiB", "PlanItem",
           "Reading", "fix_mmap_threshold", "largest_fitting", "measure_floor",
           "peak_rss_bytes", "proc_status", "read_memory"]

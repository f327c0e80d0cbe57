"""Where torch is not installed (edgeag without extras), the tests that need it
are skipped with the reason, and everything else runs: whole modules in `NEEDS_TORCH`
are not even imported (their top-level ``import torch`` would fail), single tests are
marked skipped. Tests that only compare against torch inside an otherwise torch-free
module use `optional_torch.needs_torch` instead."""

from __future__ import annotations

import pytest

from edgeag.errors import torch_available

NEEDS_TORCH = {
    "test_bad_input.py": "its table runs DQN and export cases",
    "test_checkpoint.py": "round-trips torch tensors and torch-engine runs",
    "test_cli_train.py": "trains on the torch engine and checks --help against edgeag.optim",
    "test_compare.py": "compares torch-engine rows",
    "test_export.py": "trains DQN and TD3, exports .pte through torch.export and compares "
                      "with the torch networks",
    "test_memory.py": "plans and measures torch optimizers",
    "test_offpolicy.py": "DQN and TD3 train on the torch engine",
    "test_optim.py": "edgeag.optim is a torch library",
    "test_ppo_engines.py": "compares the numpy engine with the torch engine",
    "test_train.py::test_refusal_names_settings_that_fit": "plans a torch-engine run",
    "test_train.py::test_budget_crossed_while_running_stops_with_checkpoint_then_resumes":
        "its allocating child uses torch",
    "test_train.py::test_hard_cap_turns_an_allocation_past_the_budget_into_a_clean_budget_stop":
        "its allocating child uses torch",
    "test_train.py::test_hard_cap_cgroup_kernel_kill_is_a_budget_stop_and_the_run_resumes":
        "its allocating child uses torch",
}
"""Test modules (``file``) and tests (``file::name``) that need torch, and why."""

TORCH = torch_available()


def _reason(why: str) -> str:
    return f"needs torch, which is not installed ({why}; pip install 'edgeag[torch]')"


class _SkippedModule(pytest.Module):
    """A test module collected as one skip, without importing it."""

    def collect(self):
        pytest.skip(f"{self.path.name}: {_reason(NEEDS_TORCH[self.path.name])}")


def pytest_pycollect_makemodule(module_path, parent):
    if not TORCH and module_path.name in NEEDS_TORCH:
        return _SkippedModule.from_parent(parent, path=module_path)
    return None


def pytest_collection_modifyitems(config, items):
    if TORCH:
        return
    for item in items:
        why = NEEDS_TORCH.get(f"{item.path.name}::{item.originalname}")
        if why:
            item.add_marker(pytest.mark.skip(reason=_reason(why)))

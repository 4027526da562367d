"""`genqa.sft` with accelerate's FSDP allowed on CPU processes: test scaffolding for tests/test_fsdp.py, not a feature.

accelerate (1.15) turns `distributed_type: FSDP` into FSDP only when the processes run on GPUs or other accelerators
(`AcceleratorState.__init__` checks for MULTI_GPU, MULTI_XPU, ...); CPU processes (MULTI_CPU, gloo) get plain DDP.
PyTorch's FSDP2 (`fully_shard`) itself runs on CPU with gloo. This script lifts that one check, doing for MULTI_CPU
what accelerate does for GPUs, so that everything after it runs as on GPUs: accelerate's FSDP2 preparation and
checkpointing, TRL, PEFT, genqa's saving and generation-based evaluation on sharded weights.

    accelerate launch --config_file accelerate_configs/fsdp.yaml tests/fsdp_on_cpu.py RECIPE [--key value ...]
"""

from __future__ import annotations

import runpy

from accelerate.state import AcceleratorState, PartialState
from accelerate.utils import DistributedType

_accelerate_init = AcceleratorState.__init__


def _init_allowing_cpu_fsdp(self, *args, fsdp_plugin=None, **kwargs) -> None:
    _accelerate_init(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
    if fsdp_plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:
        # what AcceleratorState.__init__ does for MULTI_GPU when given an FSDP plugin
        self.distributed_type = DistributedType.FSDP
        if self._mixed_precision != "no":
            fsdp_plugin.set_mixed_precision(self._mixed_precision)
        self.fsdp_plugin = fsdp_plugin
        PartialState._shared_state["distributed_type"] = self.distributed_type


AcceleratorState.__init__ = _init_allowing_cpu_fsdp
runpy.run_module("genqa.sft", run_name="__main__", alter_sys=True)

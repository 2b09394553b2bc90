"""LoRA adapters on one loaded transformers model, each row of a batch under its own adapter.

PEFT loads the adapters: `PeftModel.from_pretrained`, then `load_adapter`, inject LoRA layers into the
model in place. The forward of a batch whose rows run under different adapters is Blaze's own, not
PEFT's mixed-adapter batches (`adapter_names`): PEFT registers and removes a hook on every LoRA layer
for each forward, and each layer gathers, computes and scatters back every adapter's rows apart, some
twenty small operations per layer; on the 2-core CPU, 8 rows over 4 adapters decoded at 0.55-0.6 of
the base alone's tokens/s (docs/decisions.md). Here PEFT's own LoRA paths stay disabled, and a hook
registered once on each LoRA layer adds the batch's deltas in two matrix products: the rows against
the A of every adapter in the batch at once, masked to each row's own adapter, then against the Bs.
PEFT's `adapter_names` forward is the reference the tests compare it with.
"""

from typing import Any

import torch
from torch import nn

from core.errors import InvalidInput


class LoraRows:
    """The LoRA adapters loaded onto `model` (name → (path, bytes) in `adapters`), and the adapter of each
    row of the batch it runs next (`rows`, set before each forward by the thread that runs the model)."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.peft: Any = None  # the PeftModel that loaded the adapters into `model`
        self.adapters: dict[str, tuple[str, int]] = {}
        self.rows: list[str] = []
        self._hooked: set[int] = set()
        self._stacks: dict[int, tuple[tuple[str, ...], torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        self._masks: dict[tuple[Any, ...], torch.Tensor] = {}

    def load(self, name: str, path: str) -> None:
        """Load the adapter at `path` as `name` (again, if it was loaded from another path). InvalidInput
        naming `model` when PEFT cannot load it, or it is not a plain LoRA on linear layers."""
        from peft import PeftModel
        from peft.tuners.lora import LoraLayer

        try:
            if self.peft is None:
                self.peft = PeftModel.from_pretrained(self.model, path, adapter_name=name, is_trainable=False)
            else:
                if name in self.adapters:
                    self.peft.delete_adapter(name)
                self.peft.load_adapter(path, adapter_name=name, is_trainable=False)
        except Exception as exc:  # noqa: BLE001 - a bad adapter refuses its requests, not the model's others
            self.adapters.pop(name, None)
            raise InvalidInput(f"The adapter {name} cannot be loaded from {path}: {exc}", field="model") from exc
        self.peft.eval()
        self.peft.base_model.disable_adapter_layers()  # the deltas are added by `_add`, row by row
        layers = [module for module in self.model.modules() if isinstance(module, LoraLayer)]
        unfit = next((module for module in layers if name in module.lora_variant or name in module.lora_embedding_A
                      or (name in module.lora_A and not _plain(module, name))), None)
        if unfit is not None:
            self.peft.delete_adapter(name)
            raise InvalidInput(f"The adapter {name} at {path} is not a plain LoRA of linear layers (a DoRA or other "
                               f"variant, an embedding or a biased LoRA: {type(unfit).__name__}); Blaze serves plain "
                               "LoRA adapters.", field="model")
        for module in layers:
            if id(module) not in self._hooked:
                module.register_forward_hook(self._add)
                self._hooked.add(id(module))
        self._stacks.clear()
        self.adapters[name] = (path, sum(tensor.numel() * tensor.element_size()
                                         for key, tensor in self.peft.named_parameters() if f".{name}." in key))

    def run(self, rows: list[str]) -> None:
        """The next forward's batch: the adapter of each of its rows (decoding.BASE_ADAPTER: none)."""
        self.rows, self._masks = rows, {}

    def _add(self, module: Any, args: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor:
        """A LoRA layer's forward hook: its base output plus each row's adapter's delta."""
        names = tuple(sorted({row for row in self.rows if row in module.lora_A}))
        if not names:
            return output
        stack = self._stacks.get(id(module))
        if stack is None or stack[0] != names:
            stack = self._stacks[id(module)] = _stacked(module, names)
        _, a, b, columns = stack
        mask = self._masks.get((names, columns.shape[0]))
        if mask is None:  # one per forward for all the layers of the same adapters and ranks
            owner = torch.tensor([names.index(row) if row in names else -1 for row in self.rows], device=a.device)
            mask = self._masks[(names, columns.shape[0])] = (owner[:, None] == columns).to(a.dtype)[:, None, :]
        x = args[0]
        return output + (((x.to(a.dtype) @ a) * mask) @ b).to(output.dtype)


def _plain(module: Any, name: str) -> bool:
    return isinstance(module.lora_A[name], nn.Linear) and module.lora_B[name].bias is None


def _stacked(module: Any, names: tuple[str, ...]) -> tuple[tuple[str, ...], torch.Tensor, torch.Tensor, torch.Tensor]:
    """(names, every adapter's A side by side [in, Σr], their scaled Bs stacked [Σr, out], the adapter
    index of each of the Σr columns)."""
    a = torch.cat([module.lora_A[name].weight for name in names]).T.contiguous()
    b = torch.cat([module.lora_B[name].weight * module.scaling[name] for name in names], dim=1).T.contiguous()
    ranks = torch.tensor([module.lora_A[name].weight.shape[0] for name in names], device=a.device)
    return names, a, b, torch.repeat_interleave(torch.arange(len(names), device=a.device), ranks)

"""GPU check (runbook call 7): does compiling the backward outside autocast fix the NaN
gradients of torch.compile + bf16 autocast (pytorch#153044)?

torch 2.11 traces a compiled module's backward under the autocast that wraps its forward
(``torch._functorch.config.backward_pass_autocast = "same_as_forward"``). If the gradients
are finite with ``"off"`` and not with the default, set ``"off"`` when compiling in
``prepare_for_training`` and drop the refusal in ``make_train_step``.

    PYTHONPATH=src python3 benchmarks/compile_bf16_check.py
"""

import torch
import torch._functorch.config as functorch_config

from robustlab.nn.models import create_model


def gradients_are_finite(model_name: str, mode: str) -> bool:
    functorch_config.backward_pass_autocast = mode
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = create_model(model_name, (3, 32, 32), 10, width=16).cuda().train()
    compiled = torch.compile(model)
    images = torch.rand(64, 3, 32, 32, device="cuda")
    labels = torch.randint(0, 10, (64,), device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        logits = compiled(images)
    torch.nn.functional.cross_entropy(logits.float(), labels).backward()
    return all(torch.isfinite(p.grad).all().item() for p in model.parameters() if p.grad is not None)


def main() -> None:
    if not hasattr(functorch_config, "backward_pass_autocast"):
        print(f"torch {torch.__version__} has no backward_pass_autocast setting")
        return
    for model_name in ("simpleconvnet", "lipconvnet-cpl"):
        for mode in ("same_as_forward", "off"):
            print(
                f"{model_name:16s} backward_pass_autocast={mode:16s} finite gradients: "
                f"{gradients_are_finite(model_name, mode)}",
                flush=True,
            )


if __name__ == "__main__":
    main()

"""The generation family: each generator's own loss (or, adversarial, the two losses of a GAN
stepped in turn); judged by FID and KID of drawn images to real ones (``val_fid`` monitored and
pruned on), in the features of the data set's own feature network (``archselect.data.generation``).

A model's outputs are images in [0, 1] (one per seed); predictions and scores are the same images
as 0-255 floats, targets the real uint8 images, so predictions of a split concatenate like any
other family's: the test draws one image per test image.
"""

from __future__ import annotations

from typing import Any

import torch

from archselect.data.base import DataSpec
from archselect.tasks.base import FamilyModule, families

#: the generated images an epoch's grid shows (a trial's MLflow run, step = epoch)
GRID = 64


@families.register("generation")
class GenerationModule(FamilyModule):
    """Any registered generator (see ``archselect.architectures.generation`` for the contract)
    (see FamilyModule for the args)."""

    target_kind = "images"
    test_metric = "fid"
    test_direction = "minimize"
    #: images do not average across models: the final model is one trial
    ensembles = False

    def __init__(self, arch: str, arch_kwargs: dict[str, Any], optim: dict[str, Any],
                 spec: dict[str, Any], max_epochs: int,
                 data: dict[str, Any] | None = None) -> None:
        super().__init__(arch, arch_kwargs, optim, spec, max_epochs, data)
        self.adversarial = bool(getattr(self.model, "adversarial", False))
        self.automatic_optimization = not self.adversarial
        self.drawn: list[torch.Tensor] = []
        self.real: list[torch.Tensor] = []
        #: the last validation's grid of generated images (uint8, H x W x C), for the epoch logger
        self.epoch_grid: Any = None

    def configure_optimizers(self) -> Any:
        if not self.adversarial:
            return super().configure_optimizers()
        lr = float(self.hparams["optim"]["lr"])
        model: Any = self.model
        critic = [*model.discriminator.parameters(),
                  *(model.project.parameters() if model.project is not None else [])]
        return [torch.optim.Adam(critic, lr=lr, betas=(0.5, 0.999)),
                torch.optim.Adam(model.generator.parameters(), lr=lr, betas=(0.5, 0.999))]

    def _real(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor | None]:
        x = batch["target"].float() / 127.5 - 1.0
        model: Any = self.model
        return x, model.labels(batch["inputs"]["label"], len(x), x.device)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor | None:
        x, label = self._real(batch)
        model: Any = self.model
        n = len(x)
        if self.adversarial:
            opt_d, opt_g = self.optimizers()  # type: ignore[attr-defined]
            d_loss = model.discriminator_loss(x, label)
            opt_d.zero_grad()
            self.manual_backward(d_loss)
            opt_d.step()
            g_loss = model.generator_loss(n, label)
            opt_g.zero_grad()
            self.manual_backward(g_loss)
            opt_g.step()
            self.check_loss(d_loss + g_loss)
            self.add_means(n, train_d_loss=d_loss, train_g_loss=g_loss)
            return None
        losses = model.loss(x, label)
        self.check_loss(losses["loss"])
        self.add_means(n, **{f"train_{k}": v for k, v in losses.items()})
        return losses["loss"]

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self.drawn.append((self(**batch["inputs"]).float() * 255.0).cpu())
        self.real.append(batch["target"].cpu())

    def on_validation_epoch_end(self) -> None:
        from archselect.data.generation import distances, image_grid

        super().on_validation_epoch_end()
        if not self.drawn:
            return
        drawn, real = torch.cat(self.drawn), torch.cat(self.real)
        self.drawn, self.real = [], []
        found = distances(drawn, real, str(self.spec.profile["feature_net"]))
        self.log("val_fid", found["fid"])
        self.log("val_kid", found["kid"])
        self.epoch_grid = image_grid(drawn[:GRID])

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, torch.Tensor]:
        drawn = self(**batch["inputs"]).float() * 255.0
        return {"preds": drawn, "targets": batch["target"], "scores": drawn}

    @staticmethod
    def decode(outputs: torch.Tensor) -> torch.Tensor:
        return outputs

    @staticmethod
    def evaluate(preds: torch.Tensor, targets: torch.Tensor, spec: DataSpec) -> dict[str, float]:
        from archselect.data.generation import distances

        return distances(preds, targets, str(spec.profile["feature_net"]))

    @staticmethod
    def monitor_value(scores: torch.Tensor, targets: torch.Tensor, spec: DataSpec,
                      monitor: str) -> float:
        from archselect.data.generation import distances

        if monitor not in ("val_fid", "val_kid"):
            raise ValueError(f"task.monitor: {monitor!r} is not a generation metric "
                             "(val_fid, val_kid)")
        return distances(scores, targets, str(spec.profile["feature_net"]))[monitor[4:]]

    @staticmethod
    def trivial(train_targets: torch.Tensor, n: int, spec: DataSpec) -> tuple[str, torch.Tensor]:
        shape = (n, *(int(d) for d in spec.input_shape))
        noise = torch.randint(0, 256, shape, generator=torch.Generator().manual_seed(0))
        return "uniform noise", noise.float()

    @staticmethod
    def figures(preds: torch.Tensor, targets: torch.Tensor, spec: DataSpec) -> dict[str, Any]:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from archselect.data.generation import image_grid

        grid = image_grid(preds[:GRID])
        fig, ax = plt.subplots(figsize=(6, 6 * grid.shape[0] / max(grid.shape[1], 1)))
        ax.imshow(grid.squeeze(-1) if grid.shape[-1] == 1 else grid, cmap="gray", vmin=0,
                  vmax=255)
        ax.axis("off")
        ax.set_title(f"Generated images (the first {min(len(preds), GRID)} test seeds)")
        fig.tight_layout()
        return {"plots/samples.png": fig}

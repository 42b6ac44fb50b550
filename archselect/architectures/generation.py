"""Image generators. The contract (input kind ``generation``):

- ``forward(seed, label)``: one image per seed (``[B]`` int64; the same seed, the same image),
  of the class ``label`` where the model is conditional (``spec.profile["conditional"]``;
  ignored otherwise), as floats in [0, 1], ``[B, C, H, W]``;
- ``loss(x, label)``: a dict of training losses (``"loss"`` is minimised) of real images ``x``
  scaled to [-1, 1]; or, for an adversarial model (``adversarial = True``), ``generator_loss``
  and ``discriminator_loss`` (the family runs the two optimisers).

A model samples images in [-1, 1] by ``sample(noise, label)`` from standard normal noise of
``noise_shape``, drawn per seed (``seeded_noise``), so a served request is reproducible.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from archselect.architectures.base import architectures
from archselect.config.errors import ConfigError
from archselect.data.base import DataSpec

#: why a generator is not exported to ONNX (the registry's ``no_onnx``)
NO_ONNX = ("generators are not exported: their input is a seed, whose noise is drawn in Python, and "
           "a diffusion model's sampling is a loop of scheduler steps")


def seeded_noise(seed: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Standard normal noise ``[B, *shape]``, row i drawn from a generator seeded by ``seed[i]``
    (on the CPU, so every machine draws the same), on ``seed``'s device."""
    rows = [torch.randn(shape, generator=torch.Generator().manual_seed(int(s)))
            for s in seed.tolist()]
    out = torch.stack(rows) if rows else torch.zeros(0, *shape)
    return out.to(seed.device)


class Generator(nn.Module):
    """What every generator shares: the image shape, the classes, seeded sampling."""

    adversarial = False

    def __init__(self, spec: DataSpec, noise_shape: tuple[int, ...]) -> None:
        super().__init__()
        c, h, w = (int(d) for d in spec.input_shape)
        self.shape = (c, h, w)
        self.conditional = bool(spec.profile.get("conditional", False))
        self.num_classes = max(int(spec.num_classes), 1)
        self.noise_shape = noise_shape

    def sample(self, noise: torch.Tensor, label: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, seed: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        noise = seeded_noise(seed, self.noise_shape).to(next(self.parameters()).dtype)
        labels = self.labels(label, len(seed), seed.device)
        return ((self.sample(noise, labels) + 1.0) / 2.0).clamp(0.0, 1.0)

    def labels(self, label: torch.Tensor | None, n: int, device: torch.device
               ) -> torch.Tensor | None:
        """The class of each sample where the model is conditional (None: not conditional)."""
        if not self.conditional:
            return None
        if label is None:
            return torch.zeros(n, dtype=torch.long, device=device)
        return label.long().clamp(0, self.num_classes - 1)


def _side(n: int) -> int:
    """The feature map side before two doublings reach ``n`` (rounded up)."""
    return max(1, math.ceil(n / 4))


class _Up(nn.Sequential):
    def __init__(self, cin: int, cout: int, norm: bool = True) -> None:
        layers: list[nn.Module] = [nn.Upsample(scale_factor=2, mode="nearest"),
                                   nn.Conv2d(cin, cout, 3, padding=1)]
        if norm:
            layers.append(nn.BatchNorm2d(cout))
        layers.append(nn.ReLU())
        super().__init__(*layers)


class _Decoder(nn.Module):
    """A latent vector (and a class embedding) -> an image in [-1, 1]: a linear layer to a
    quarter-size map, two nearest-upsampling convolutions, a 3x3 convolution to the channels."""

    def __init__(self, latent: int, width: int, shape: tuple[int, int, int], classes: int,
                 norm: bool) -> None:
        super().__init__()
        c, h, w = shape
        self.shape = shape
        self.h0, self.w0, self.width = _side(h), _side(w), width
        self.embed = nn.Embedding(classes, latent) if classes else None
        self.fc = nn.Linear(latent, 2 * width * self.h0 * self.w0)
        self.up = nn.Sequential(_Up(2 * width, width, norm), _Up(width, width, norm))
        self.out = nn.Conv2d(width, c, 3, padding=1)

    def forward(self, z: torch.Tensor, label: torch.Tensor | None) -> torch.Tensor:
        if self.embed is not None and label is not None:
            z = z + self.embed(label)
        x = F.relu(self.fc(z)).view(-1, 2 * self.width, self.h0, self.w0)
        x = self.out(self.up(x))
        if x.shape[-2:] != self.shape[1:]:
            x = F.interpolate(x, size=self.shape[1:], mode="bilinear", align_corners=False)
        return torch.tanh(x)


class _Encoder(nn.Module):
    """An image -> a feature vector: two stride-2 convolutions, then a linear layer."""

    def __init__(self, width: int, shape: tuple[int, int, int], out: int, spectral: bool) -> None:
        super().__init__()
        c, h, w = shape

        def sn(m: nn.Module) -> nn.Module:
            return nn.utils.parametrizations.spectral_norm(m) if spectral else m

        self.body = nn.Sequential(
            sn(nn.Conv2d(c, width, 3, stride=2, padding=1)), nn.LeakyReLU(0.2),
            sn(nn.Conv2d(width, 2 * width, 3, stride=2, padding=1)), nn.LeakyReLU(0.2),
            nn.Flatten())
        n = 2 * width * _side(h) * _side(w)
        self.fc = sn(nn.Linear(n, out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x))


class VAE(Generator):
    """A small convolutional variational autoencoder (Kingma and Welling 2014): Gaussian
    latent, a fixed-variance Gaussian likelihood on pixels in [-1, 1]; samples are decoded from
    the prior. The start-simple neural baseline (its samples are smooth)."""

    def __init__(self, spec: DataSpec, *, latent_dim: int, width: int, kl_weight: float) -> None:
        super().__init__(spec, (latent_dim,))
        classes = self.num_classes if self.conditional else 0
        self.encoder = _Encoder(width, self.shape, 2 * latent_dim, spectral=False)
        self.embed = nn.Embedding(classes, 2 * latent_dim) if classes else None
        self.decoder = _Decoder(latent_dim, width, self.shape, classes, norm=True)
        self.kl_weight = kl_weight

    def sample(self, noise: torch.Tensor, label: torch.Tensor | None) -> torch.Tensor:
        return self.decoder(noise, label)

    def loss(self, x: torch.Tensor, label: torch.Tensor | None) -> dict[str, torch.Tensor]:
        h = self.encoder(x)
        if self.embed is not None and label is not None:
            h = h + self.embed(label)
        mu, logvar = h.chunk(2, dim=-1)
        logvar = logvar.clamp(-8.0, 8.0)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        recon = self.decoder(z, label)
        # -log N(x; recon, 0.1^2) per image, up to a constant; KL to the standard normal prior
        rec = ((recon - x) ** 2).flatten(1).sum(1).mean() / (2 * 0.1 ** 2)
        kl = (-0.5 * (1 + logvar - mu ** 2 - logvar.exp()).sum(1)).mean()
        n = float(x[0].numel())
        return {"loss": (rec + self.kl_weight * kl) / n, "recon": rec / n, "kl": kl / n}


class DCGAN(Generator):
    """A DCGAN-style generator and discriminator (Radford et al. 2016): upsampling convolutions
    with batch norm; a strided-convolution discriminator, spectral norm optional (Miyato et al.
    2018); a projection discriminator for classes (Miyato and Koyama 2018). Non-saturating
    loss; the family steps the two optimisers in turn."""

    adversarial = True

    def __init__(self, spec: DataSpec, *, latent_dim: int, width: int,
                 spectral_norm: bool) -> None:
        super().__init__(spec, (latent_dim,))
        classes = self.num_classes if self.conditional else 0
        self.generator = _Decoder(latent_dim, width, self.shape, classes, norm=True)
        self.discriminator = _Encoder(width, self.shape, 1 + 2 * width, spectral_norm)
        self.project = nn.Embedding(classes, 2 * width) if classes else None

    def sample(self, noise: torch.Tensor, label: torch.Tensor | None) -> torch.Tensor:
        return self.generator(noise, label)

    def critic(self, x: torch.Tensor, label: torch.Tensor | None) -> torch.Tensor:
        """The discriminator's logit that ``x`` is real (of class ``label``)."""
        h = self.discriminator(x)
        logit, feat = h[:, 0], h[:, 1:]
        if self.project is not None and label is not None:
            logit = logit + (self.project(label) * feat).sum(1)
        return logit

    def generator_loss(self, n: int, label: torch.Tensor | None) -> torch.Tensor:
        z = torch.randn(n, *self.noise_shape, device=next(self.parameters()).device)
        return F.softplus(-self.critic(self.sample(z, label), label)).mean()

    def discriminator_loss(self, x: torch.Tensor, label: torch.Tensor | None) -> torch.Tensor:
        z = torch.randn(len(x), *self.noise_shape, device=x.device)
        with torch.no_grad():
            fake = self.sample(z, label)
        return (F.softplus(-self.critic(x, label)).mean()
                + F.softplus(self.critic(fake, label)).mean())


class DDPM(Generator):
    """A denoising diffusion model (Ho et al. 2020): diffusers' ``UNet2DModel`` predicts the
    noise added by a ``DDPMScheduler`` (``train_steps`` steps, linear betas); images are
    sampled with DDIM (Song et al. 2021, deterministic) in ``sample_steps`` steps. Classes
    enter the UNet as a class embedding."""

    def __init__(self, spec: DataSpec, *, width: int, layers_per_block: int, train_steps: int,
                 sample_steps: int) -> None:
        super().__init__(spec, tuple(int(d) for d in spec.input_shape))
        from diffusers import DDIMScheduler, DDPMScheduler, UNet2DModel

        c, h, w = self.shape
        if h % 2 or w % 2:
            raise ConfigError("arch.ddpm", "the UNet halves the image once: images need an even "
                              "height and width", given=f"{h}x{w}",
                              fix="set data.image_size to an even number (image_folder)")
        self.unet: Any = UNet2DModel(
            sample_size=(h, w), in_channels=c, out_channels=c, layers_per_block=layers_per_block,
            block_out_channels=(width, 2 * width), norm_num_groups=min(8, width),
            down_block_types=("DownBlock2D", "AttnDownBlock2D"),
            up_block_types=("AttnUpBlock2D", "UpBlock2D"),
            num_class_embeds=self.num_classes if self.conditional else None)
        self.noise: Any = DDPMScheduler(num_train_timesteps=train_steps)
        self.sampler: Any = DDIMScheduler(num_train_timesteps=train_steps)
        self.sample_steps = sample_steps

    def loss(self, x: torch.Tensor, label: torch.Tensor | None) -> dict[str, torch.Tensor]:
        noise = torch.randn_like(x)
        t = torch.randint(0, self.noise.config.num_train_timesteps, (len(x),), device=x.device)
        noisy = self.noise.add_noise(x, noise, t)
        pred = self.unet(noisy, t, class_labels=label).sample
        return {"loss": F.mse_loss(pred, noise)}

    def sample(self, noise: torch.Tensor, label: torch.Tensor | None) -> torch.Tensor:
        self.sampler.set_timesteps(self.sample_steps, device=noise.device)
        x = noise
        for t in self.sampler.timesteps:
            eps = self.unet(x, t.expand(len(x)).to(noise.device), class_labels=label).sample
            x = self.sampler.step(eps, t, x, eta=0.0).prev_sample
        return x.clamp(-1.0, 1.0)


def _check_positive(key: str, **values: Any) -> None:
    for name, v in values.items():
        if v < 1:
            raise ConfigError(f"{key}.{name}", "must be at least 1", given=v)


@architectures.register("vae", input="generation", no_onnx=NO_ONNX)
def vae(spec: DataSpec, *, latent_dim: int, width: int, kl_weight: float) -> nn.Module:
    _check_positive("arch.vae.model", latent_dim=latent_dim, width=width)
    return VAE(spec, latent_dim=latent_dim, width=width, kl_weight=kl_weight)


@architectures.register("dcgan", input="generation", no_onnx=NO_ONNX)
def dcgan(spec: DataSpec, *, latent_dim: int, width: int, spectral_norm: bool) -> nn.Module:
    _check_positive("arch.dcgan.model", latent_dim=latent_dim, width=width)
    return DCGAN(spec, latent_dim=latent_dim, width=width, spectral_norm=spectral_norm)


@architectures.register("ddpm", input="generation", no_onnx=NO_ONNX)
def ddpm(spec: DataSpec, *, width: int, layers_per_block: int, train_steps: int,
         sample_steps: int) -> nn.Module:
    _check_positive("arch.ddpm.model", width=width, layers_per_block=layers_per_block,
                    train_steps=train_steps, sample_steps=sample_steps)
    if sample_steps > train_steps:
        raise ConfigError("arch.ddpm.model.sample_steps", "must not exceed train_steps",
                          given=sample_steps, allowed=f"1 to {train_steps}")
    return DDPM(spec, width=width, layers_per_block=layers_per_block, train_steps=train_steps,
                sample_steps=sample_steps)

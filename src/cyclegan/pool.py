"""The image pool of CycleGAN: discriminators see a history of generated images, not only the
latest, which damps oscillation between generator and discriminator (Shrivastava et al. 2017)."""

from __future__ import annotations

import torch


class ImagePool:
    """Up to ``size`` past fakes; ``query`` returns what the discriminator trains on.

    While the pool fills, each new image is stored and returned. Once full, each image is, with
    probability 0.5, swapped with a random stored one (the stored one is returned and the new
    one takes its place), else returned as it is. ``size`` 0 turns the pool off. Stored images
    are detached copies, so the pool never holds a graph. Draws use torch's global RNG, so a
    seeded run is reproducible; ``state_dict`` lets a resumed run continue with the same pool.
    """

    def __init__(self, size: int = 50) -> None:
        if size < 0:
            raise ValueError(f"pool size must be >= 0, got {size}")
        self.size = size
        self.images: list[torch.Tensor] = []

    def __len__(self) -> int:
        return len(self.images)

    def query(self, images: torch.Tensor) -> torch.Tensor:
        """A batch like ``images`` (N x C x H x W), mixing new images and stored ones."""
        if self.size == 0:
            return images.detach()
        if self.images and self.images[0].device != images.device:
            self.images = [stored.to(images.device) for stored in self.images]
        returned = []
        for image in images.detach():
            image = image.unsqueeze(0)
            if len(self.images) < self.size:
                self.images.append(image.clone())
                returned.append(image)
            elif torch.rand(()) < 0.5:
                index = int(torch.randint(self.size, ()))
                returned.append(self.images[index].clone())
                self.images[index] = image.clone()
            else:
                returned.append(image)
        return torch.cat(returned, dim=0)

    def state_dict(self) -> dict[str, torch.Tensor | int]:
        """The stored images (one tensor) and the pool size, for checkpoints."""
        stored = torch.cat(self.images) if self.images else torch.empty(0)
        return {"size": self.size, "images": stored.cpu()}

    def load_state_dict(self, state: dict[str, torch.Tensor | int]) -> None:
        """Restore what ``state_dict`` saved (moved to the fakes' device on the next query)."""
        stored = state["images"]
        assert isinstance(stored, torch.Tensor)
        self.size = int(state["size"])
        self.images = [image.unsqueeze(0) for image in stored]

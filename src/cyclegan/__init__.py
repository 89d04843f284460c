"""CycleGAN (ResNet or U-Net generators) and a dataset builder that samples frames from videos."""

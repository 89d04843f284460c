"""Constructor arguments of a tiny StyleGAN3 generator and discriminator, shared by tests that
need real networks but not their size (every official kwarg spelled out, as in a pickle)."""

G_KWARGS = {
    "z_dim": 16,
    "c_dim": 0,
    "w_dim": 16,
    "img_resolution": 16,
    "img_channels": 3,
    "mapping_kwargs": {"num_layers": 2},
    "channel_base": 512,
    "channel_max": 32,
    "num_layers": 3,
    "num_critical": 1,
    "margin_size": 2,
    "magnitude_ema_beta": 0.99,
    "num_fp16_res": 4,
    "conv_clamp": 256,
}
D_KWARGS = {
    "c_dim": 0,
    "img_resolution": 8,
    "img_channels": 3,
    "channel_base": 256,
    "channel_max": 32,
    "num_fp16_res": 4,
    "conv_clamp": 256,
    "block_kwargs": {"freeze_layers": 0},
    "mapping_kwargs": {},
    "epilogue_kwargs": {"mbstd_group_size": 2},
}

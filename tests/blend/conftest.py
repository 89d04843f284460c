"""The StyleGAN3 tests' fixture for writing official-format pickles, shared with these tests."""

from tests.stylegan3.conftest import official_stubs  # noqa: F401 (a pytest fixture)

"""``python -m src.cartoonize``: the same as ``python -m src.serve.cartoonize``."""

from src.serve.cartoonize import main

if __name__ == "__main__":
    main()

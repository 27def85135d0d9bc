"""t2i: reproducible text-to-image GAN pipeline."""

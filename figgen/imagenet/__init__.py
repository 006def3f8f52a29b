"""A pretrained ImageNet classifier of images in [0, 1], shipped photos, class names, panels."""

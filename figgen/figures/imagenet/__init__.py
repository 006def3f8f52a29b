"""The article's ImageNet figures (10-12): real attacks on a real pretrained classifier."""

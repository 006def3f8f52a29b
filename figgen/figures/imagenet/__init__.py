"""The article's ImageNet figures: a pretrained classifier's probabilities, and attacks."""

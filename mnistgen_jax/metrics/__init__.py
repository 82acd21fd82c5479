"""Evaluation: a LeNet feature network, Frechet distance, KID, precision/recall, classifier score, IWAE."""

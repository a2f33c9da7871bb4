"""Analyses of a trained FMN beyond Table 1: where the Mixing Network's mask looks (``mask_grounding``)."""

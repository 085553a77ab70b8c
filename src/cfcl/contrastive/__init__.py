"""Contrastive pretraining: encoders, projection heads, augmentations, pairing, NT-Xent, the pretrain stage."""

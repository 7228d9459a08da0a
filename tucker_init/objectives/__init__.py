"""What a template is trained with (DESIGN.md 1.3, 1.5b).

mae.py         masked image modeling: MaskedAutoencoder (ViTs), MaskedConvAutoencoder (CNNs, Swin)
distill.py     distillation of a frozen teacher (token features and / or logits)
subnet.py      real sub-network scaling: smaller models built from the live template, each step
stochastic.py  width-wise stochastic scaling of the Tucker scalers (prefix masks, rank dropout)

The public names are exported by :mod:`tucker_init`.
"""

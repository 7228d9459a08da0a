"""Templates: how a model becomes one and back (DESIGN.md 1.1-1.5).

layout.py      block groups and their d x d slices (ModelLayout, build_layout)
tucker.py      Tucker maths on tensors (HOSVD, reconstruction as GEMMs)
kronecker.py   Kronecker maths on tensors (Van Loan SVD)
kinds/         template kinds registered by name (tucker, kronecker; register_kind adds one)
template.py    TemplateConfig, WeightTemplate, template keys, reconstruct_group
factorized.py  factorize() and FactorizedModel (a backbone run on reconstructed weights)
io.py          template files (safetensors + metadata), model cards

The public names are exported by :mod:`tucker_init`.
"""

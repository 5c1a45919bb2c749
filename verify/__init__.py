"""verify: the theory measured — PyTorch networks at initialisation, Monte Carlo and autograd.

Modules (torch is imported by each, not by this package):

- :mod:`verify.torch_view` — ``build(spec_or_name, d, seeds=..., params=..., depth=...)``:
  the spec's blocks as an ``nn.Module`` batched over independent seeds;
  ``tokens(...)``: inputs with q0 and ρ0; ``resolve_device``: cpu / cuda / auto,
  ``$SIGPROP_DEVICE``, no silent fallback.
- :mod:`verify.montecarlo` — measurements with standard errors: ``profile``
  (q, p, ρ per block), ``attention_moments`` and ``gaussian_moments`` (E Y2,
  E Y3, E (Y2)², pair term), ``attention_overlaps`` (q_S, p_S), ``score_statistics``,
  ``query_gradient`` (autograd ||∂L/∂W_Q||² and the chain-rule value).
- :mod:`verify.theory` — numeric's values plus the derived finite-d and
  finite-T terms the checks declare.
- :mod:`verify.stats` — the suite's one false-alarm rate, critical values and
  ``assert_agrees``.
- :mod:`verify.figures` — ``figure_3`` and ``measure_profiles`` (Fig. 2's dots).

Run the checks with ``pytest verify`` (``--device cuda`` or ``SIGPROP_DEVICE``;
``HYPOTHESIS_PROFILE=thorough`` on a GPU machine).
"""

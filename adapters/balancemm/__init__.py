"""BalanceMM: the spec (:mod:`.spec`), its SimAM² fusion classes and decoupling-free trainer
(:mod:`.layers`), the config seam and its log (:mod:`.seam`), synthetic CREMA-D (:mod:`.synth`) and
the comparison table (:mod:`.table`)."""

"""OGM-GE: the spec (:mod:`.spec`), its SimAM² layers (:mod:`.layers`), input checks (:mod:`.checks`),
synthetic CREMA-D / VGGSound (:mod:`.synth`) and Table 1 (:mod:`.table`)."""
